"""Triton kernels (prefill with a mode table, training pair forward and backward, decode) through the interpreter
(TRITON_INTERPRET=1, set by conftest) against the slow obvious references; odd lengths, GQA 1/4/8, all-dense,
all-sparse and mixed tables, varlen and padded batches, outputs poisoned with NaN, inputs drawn from
(fixed seeds, ``tests/kernels/conftest.py``)."""

import functools

import pytest
import torch

from verl_ext.kernels.elastic_attention import modes as M
from verl_ext.kernels.elastic_attention import ops, utils
from verl_ext.kernels.elastic_attention.naive import decode_reference, mixed_pair_reference, prefill_reference
from verl_ext.kernels.elastic_attention.utils import sequences

# The kernels themselves: backend="triton" (the interpreter here), unless a call asks for another back end.
elastic_prefill = functools.partial(ops.elastic_prefill, backend="triton")
elastic_attention_pair = functools.partial(ops.elastic_attention_pair, backend="triton")
elastic_decode = functools.partial(ops.elastic_decode, backend="triton")

TOL = {torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 3e-2}


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every kernel output starts as NaN: an element a kernel forgets to write fails the comparison."""
    def nan_alloc(shape, like, dtype=None):
        return torch.full(shape, float("nan"), dtype=dtype or like.dtype, device=like.device)

    monkeypatch.setattr(utils, "_alloc", nan_alloc)  # every kernel allocates through utils._alloc


@pytest.fixture
def gen(gen_seed):
    return torch.Generator().manual_seed(gen_seed)


def _rand(gen, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=gen).to(dtype)


def _table(kind, n_seqs, hq, gen):
    if kind == "dense":
        return torch.full((n_seqs, hq), M.FULL)
    if kind == "sparse":
        return torch.full((n_seqs, hq), M.STREAMING)
    return torch.randint(0, 4, (n_seqs, hq), generator=gen)


def _block_mask(n_seqs, hq, t, mask_block, gen):
    nb = -(-t // mask_block)
    mask = torch.rand(n_seqs, hq, nb, nb, generator=gen) < 0.4
    return mask | torch.eye(nb, dtype=torch.bool)  # XAttention always keeps the diagonal block


def _compare_prefill(q, k, v, table, starts, lens, block_mask, sink, window, **layout):
    out, lse = elastic_prefill(q, k, v, table, block_mask=block_mask, mask_block=32, return_lse=True, sink=sink,
                               window=window, round_block=16, **layout)
    qp, kp, vp = (x.double().reshape(-1, x.shape[-2], x.shape[-1]) for x in (q, k, v))
    ref, ref_lse = prefill_reference(qp, kp, vp, table, starts, lens, sink, window, 16, block_mask, 32)
    tol = TOL[q.dtype]
    torch.testing.assert_close(out.double().reshape(ref.shape), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(lse.double(), ref_lse.double(), rtol=tol, atol=tol)


@pytest.mark.parametrize("t,groups,kind", [(63, 1, "mixed"), (100, 4, "mixed"), (100, 8, "dense"), (100, 4, "sparse"),
                                           (1031, 4, "mixed")])
def test_prefill_varlen_matches_reference(t, groups, kind, gen):
    hk, d = (1, 32) if t > 1000 else (2, 32)
    hq = hk * groups
    cut = int(torch.randint(1, t, (1,), generator=gen))
    cu = torch.tensor([0, cut, t])
    q, k, v = _rand(gen, t, hq, d), _rand(gen, t, hk, d), _rand(gen, t, hk, d)
    table = _table(kind, 2, hq, gen)
    starts, lens = sequences(q, cu)
    _compare_prefill(q, k, v, table, starts, lens, _block_mask(2, hq, t, 32, gen), 5, 24, cu_seqlens=cu)


@pytest.mark.parametrize("dtype,d", [(torch.float16, 64), (torch.bfloat16, 64), (torch.float32, 128)])
@pytest.mark.parametrize("left", [False, True])
def test_prefill_padded_batches_dtypes_and_head_dims(dtype, d, left, gen):
    b, t, hq, hk = 2, 70, 4, 1
    q, k, v = _rand(gen, b, t, hq, d, dtype=dtype), _rand(gen, b, t, hk, d, dtype=dtype), _rand(gen, b, t, hk, d, dtype=dtype)
    lengths = torch.tensor([t, 41])
    table = _table("mixed", b, hq, gen)
    starts, lens = sequences(q, lengths=lengths, left_padded=left)
    _compare_prefill(q, k, v, table, starts, lens, _block_mask(b, hq, t, 32, gen), 5, 24, lengths=lengths,
                     left_padded=left)
    out = elastic_prefill(q, k, v, table, lengths=lengths, left_padded=left, sink=5, window=24,
                          block_mask=_block_mask(b, hq, t, 32, gen), mask_block=32)
    pad = out[1, :t - 41] if left else out[1, 41:]
    assert bool((pad == 0).all())  # padding rows come back as zeros, not NaN


@pytest.mark.parametrize("layout", ["varlen", "left_padded"])
def test_prefill_dense_from_matches_reference(layout, gen):
    """Streaming heads attend densely from each sequence's dense_from on (the response after its prompt), in one
    pass: Triton, the CPU back end and the slow reference agree; rows before it are the plain streaming ones."""
    hq, hk, d = 4, 2, 32
    modes = torch.tensor([[M.FULL, M.STREAMING, M.STREAMING_BLOCKS, M.STREAMING],
                          [M.STREAMING, M.STREAMING_BLOCKS, M.FULL, M.STREAMING]])
    if layout == "varlen":
        cu = torch.tensor([0, 77, 77 + 130])
        q, k, v = _rand(gen, 207, hq, d), _rand(gen, 207, hk, d), _rand(gen, 207, hk, d)
        layout_args = {"cu_seqlens": cu}
    else:
        lengths = torch.tensor([77, 130])
        q, k, v = _rand(gen, 2, 130, hq, d), _rand(gen, 2, 130, hk, d), _rand(gen, 2, 130, hk, d)
        layout_args = {"lengths": lengths, "left_padded": True}
    dense_from = torch.tensor([int(torch.randint(1, 77, (1,), generator=gen)), 45])  # one inside a 32-row tile
    starts, lens = sequences(q, layout_args.get("cu_seqlens"), layout_args.get("lengths"), layout == "left_padded")
    common = dict(sink=5, window=24, round_block=16, **layout_args)
    out, lse = elastic_prefill(q, k, v, modes, dense_from=dense_from, return_lse=True, **common)
    qp, kp, vp = (x.double().reshape(-1, x.shape[-2], x.shape[-1]) for x in (q, k, v))
    ref, ref_lse = prefill_reference(qp, kp, vp, modes, starts, lens, 5, 24, 16, dense_from=dense_from)
    torch.testing.assert_close(out.double().reshape(ref.shape), ref, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(lse.double(), ref_lse.double(), rtol=2e-5, atol=2e-5)
    cpu = elastic_prefill(q, k, v, modes, dense_from=dense_from, backend="reference", **common)
    torch.testing.assert_close(cpu.double().reshape(ref.shape), ref, rtol=2e-5, atol=2e-5)
    plain = elastic_prefill(q, k, v, modes, **common).reshape(ref.shape)
    dense = elastic_prefill(q, k, v, torch.full_like(modes, M.FULL), **common).reshape(ref.shape)
    for s, (a, p) in enumerate(zip(starts.tolist(), dense_from.tolist())):
        n = int(lens[s])
        torch.testing.assert_close(out.reshape(ref.shape)[a:a + p], plain[a:a + p])  # before: streaming as usual
        torch.testing.assert_close(out.reshape(ref.shape)[a + p:a + n], dense[a + p:a + n], rtol=2e-5, atol=2e-5)
    with pytest.raises(ValueError, match="dense_from applies to streaming heads"):
        elastic_prefill(q, k, v, torch.full_like(modes, M.BLOCK_SPARSE), dense_from=dense_from, mask_block=32,
                        block_mask=_block_mask(2, hq, 130, 32, gen), **common)
    with pytest.raises(ValueError, match="dense_from must be \\(sequences,\\)"):
        elastic_prefill(q, k, v, modes, dense_from=torch.tensor([3]), **common)


def test_prefill_block_rounded_streaming_differs_from_token_exact(gen):
    """The two streaming variants must not silently coincide on a case where they differ."""
    q, k, v = _rand(gen, 1, 90, 2, 32), _rand(gen, 1, 90, 2, 32), _rand(gen, 1, 90, 2, 32)
    exact = elastic_prefill(q, k, v, torch.full((1, 2), M.STREAMING), sink=5, window=20, round_block=16)
    rounded = elastic_prefill(q, k, v, torch.full((1, 2), M.STREAMING_BLOCKS), sink=5, window=20, round_block=16)
    assert (exact - rounded).abs().max() > 1e-3


def test_auto_backend_is_the_kernels_on_cuda_and_the_reference_elsewhere(monkeypatch, gen):
    q, k, v = _rand(gen, 1, 50, 4, 32), _rand(gen, 1, 50, 2, 32), _rand(gen, 1, 50, 2, 32)
    table = torch.tensor([[0, 1, 2, 0]])
    triton_out = elastic_prefill(q, k, v, table, sink=3, window=9, round_block=16)
    assert utils.resolve_backend("auto", q.device) == "reference"  # the interpreter only when asked for
    assert utils.resolve_backend("auto", torch.device("cuda")) == ("triton" if utils.HAVE_TRITON else "reference")
    torch.testing.assert_close(ops.elastic_prefill(q, k, v, table, sink=3, window=9, round_block=16), triton_out,
                               rtol=2e-5, atol=2e-5)
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        ops.elastic_prefill(q, k, v, table, backend="triton")


@pytest.mark.parametrize("t,groups,round_block", [(63, 1, None), (100, 4, 16)])
def test_pair_forward_and_every_gradient(t, groups, round_block, gen):
    hk, d = 1, 32
    hq = hk * groups
    cut = int(torch.randint(1, t, (1,), generator=gen))
    cu = torch.tensor([0, cut, t])
    q, k, v = (_rand(gen, t, h, d).requires_grad_() for h in (hq, hk, hk))
    z = torch.rand(2, hq, generator=gen).requires_grad_()
    out = elastic_attention_pair(q, k, v, z, cu_seqlens=cu, sink=4, window=20, round_block=round_block)
    grad = _rand(gen, *out.shape)
    got = torch.autograd.grad(out, (q, k, v, z), grad)
    starts, lens = sequences(q, cu)
    ref = mixed_pair_reference(q.double(), k.double(), v.double(), z.double(), starts, lens, 4, 20, round_block)
    want = torch.autograd.grad(ref, (q, k, v, z), grad.double())
    torch.testing.assert_close(out.double(), ref, rtol=2e-5, atol=2e-5)
    for name, a, b in zip("q k v z".split(), got, want):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-4, msg=lambda m: f"d{name}: {m}")


def test_pair_router_gradient_is_the_branch_difference(gen):
    """dz = <dO, O_FA - O_SA> summed over the sequence (hand-derived, independent of autograd)."""
    q, k, v = _rand(gen, 1, 40, 2, 32), _rand(gen, 1, 40, 1, 32), _rand(gen, 1, 40, 1, 32)
    z = torch.tensor([[1.0, 0.0]], requires_grad=True)
    out = elastic_attention_pair(q, k, v, z, sink=2, window=8)
    grad = _rand(gen, *out.shape)
    (dz,) = torch.autograd.grad(out, (z,), grad)
    full = elastic_prefill(q, k, v, torch.full((1, 2), M.FULL))
    sparse = elastic_prefill(q, k, v, torch.full((1, 2), M.STREAMING), sink=2, window=8)
    torch.testing.assert_close(dz[0], (grad * (full - sparse)).sum(dim=(0, 1, 3)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[0, :, 0], full[0, :, 0])
    torch.testing.assert_close(out[0, :, 1], sparse[0, :, 1])


@pytest.mark.parametrize("groups", [1, 4])
def test_decode_matches_reference(groups, gen):
    b, tmax, hk, d = 3, 90, 2, 32
    hq = hk * groups
    q, kc, vc = _rand(gen, b, hq, d), _rand(gen, b, tmax, hk, d), _rand(gen, b, tmax, hk, d)
    lens = torch.tensor([90, 33, 5])
    for sparse in (torch.zeros(b, hq, dtype=torch.bool), torch.ones(b, hq, dtype=torch.bool),
                   torch.rand(b, hq, generator=gen) < 0.5):
        out = elastic_decode(q, kc, vc, lens, sparse, sink=4, window=10)
        ref = decode_reference(q.double(), kc.double(), vc.double(), lens, sparse, 4, 10)
        torch.testing.assert_close(out.double(), ref, rtol=2e-5, atol=2e-5)


def test_bad_inputs_name_the_argument(gen):
    q, k, v = _rand(gen, 1, 20, 4, 32), _rand(gen, 1, 20, 2, 32), _rand(gen, 1, 20, 2, 32)
    table = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="multiple of k's heads"):
        elastic_prefill(q, _rand(gen, 1, 20, 3, 32), _rand(gen, 1, 20, 3, 32), table)
    with pytest.raises(ValueError, match="k has dtype torch.int64"):
        elastic_prefill(q, k.long(), v, table)
    with pytest.raises(ValueError, match="modes must be"):
        elastic_prefill(q, k, v, table[:, :2])
    with pytest.raises(ValueError, match="codes outside"):
        elastic_prefill(q, k, v, table + 7)
    with pytest.raises(ValueError, match="pass block_mask"):
        elastic_prefill(q, k, v, table + M.BLOCK_SPARSE)
    with pytest.raises(ValueError, match="head_dim=24"):
        elastic_prefill(q[..., :24], k[..., :24], v[..., :24], table)
    with pytest.raises(ValueError, match="cu_seqlens must start at 0"):
        elastic_prefill(q[0], k[0], v[0], table, cu_seqlens=torch.tensor([0, 30]))
    with pytest.raises(ValueError, match="lengths must be"):
        elastic_prefill(q, k, v, table, lengths=torch.tensor([21]))
    with pytest.raises(ValueError, match="z must be"):
        elastic_attention_pair(q, k, v, torch.ones(1, 2))
    with pytest.raises(ValueError, match="cache_lens"):
        elastic_decode(q[:, 0], k, v, torch.tensor([0]), torch.zeros(1, 4, dtype=torch.bool))
