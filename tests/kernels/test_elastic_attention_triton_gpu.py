"""The compiled Triton kernels on a CUDA device against the references (skipped without CUDA): GPU tile sizes,
bf16 / fp16 / fp32, head_dim 64 and 128, GQA 4 and 8, varlen with odd lengths, poisoned outputs."""

import pytest
import torch

from verl_ext.kernels.elastic_attention import modes as M
from verl_ext.kernels.elastic_attention import utils
from verl_ext.kernels.elastic_attention.naive import decode_reference, mixed_pair_reference, prefill_reference
from verl_ext.kernels.elastic_attention.ops import elastic_attention_pair, elastic_decode, elastic_prefill
from verl_ext.kernels.elastic_attention.utils import sequences

pytestmark = pytest.mark.gpu
TOL = {torch.float32: 2e-4, torch.float16: 4e-3, torch.bfloat16: 3e-2}


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    def nan_alloc(shape, like, dtype=None):
        return torch.full(shape, float("nan"), dtype=dtype or like.dtype, device=like.device)

    monkeypatch.setattr(utils, "_alloc", nan_alloc)  # every kernel allocates through utils._alloc


@pytest.fixture
def gen(gen_seed):
    return torch.Generator(device="cuda").manual_seed(gen_seed)


def _rand(gen, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=gen, device="cuda").to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_prefill_dense_from(dtype, gen):
    """Streaming heads dense from each sequence's dense_from on (the actor's dense-decode recompute), with the
    autotuned GPU tiles: the boundary falls inside a query tile of one sequence and on a tile edge of the other."""
    hq, hk, d = 8, 2, 128
    cu = torch.tensor([0, 1031, 1031 + 700])
    n = int(cu[-1])
    q, k, v = _rand(gen, n, hq, d, dtype=dtype), _rand(gen, n, hk, d, dtype=dtype), _rand(gen, n, hk, d, dtype=dtype)
    table = torch.randint(0, 3, (2, hq), device="cuda", generator=gen)  # FULL / STREAMING / STREAMING_BLOCKS
    dense_from = torch.tensor([900, 512])
    out, lse = elastic_prefill(q, k, v, table, cu_seqlens=cu, sink=64, window=256, round_block=128,
                               dense_from=dense_from, return_lse=True)
    starts, lens = sequences(q, cu)
    ref, ref_lse = prefill_reference(q.float(), k.float(), v.float(), table.cpu(), starts, lens, 64, 256, 128,
                                     dense_from=dense_from)
    torch.testing.assert_close(out.float(), ref, rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(lse, ref_lse, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype,d,groups", [(torch.bfloat16, 128, 4), (torch.float16, 64, 8), (torch.float32, 128, 1)])
def test_prefill_varlen(dtype, d, groups, gen):
    hk = 2
    hq = hk * groups
    cu = torch.tensor([0, 1031, 1031 + 63, 1031 + 63 + 700])
    n = int(cu[-1])
    q, k, v = _rand(gen, n, hq, d, dtype=dtype), _rand(gen, n, hk, d, dtype=dtype), _rand(gen, n, hk, d, dtype=dtype)
    table = torch.randint(0, 4, (3, hq), device="cuda", generator=gen)
    table[0] = M.FULL
    nb = -(-1031 // 128)
    block_mask = (torch.rand(3, hq, nb, nb, device="cuda", generator=gen) < 0.4) | torch.eye(nb, dtype=torch.bool, device="cuda")
    out, lse = elastic_prefill(q, k, v, table, cu_seqlens=cu, sink=64, window=256, round_block=128,
                               block_mask=block_mask, mask_block=128, return_lse=True)
    starts, lens = sequences(q, cu)
    ref, ref_lse = prefill_reference(q.float(), k.float(), v.float(), table.cpu(), starts, lens, 64, 256, 128,
                                     block_mask, 128)
    torch.testing.assert_close(out.float(), ref, rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(lse, ref_lse, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pair_forward_backward(dtype, gen):
    t, hq, hk, d = 700, 8, 2, 128
    cu = torch.tensor([0, 301, t])
    q, k, v = (_rand(gen, t, h, d, dtype=dtype).requires_grad_() for h in (hq, hk, hk))
    z = torch.rand(2, hq, device="cuda", generator=gen).requires_grad_()
    out = elastic_attention_pair(q, k, v, z, cu_seqlens=cu, sink=64, window=200)
    grad = _rand(gen, *out.shape, dtype=dtype)
    got = torch.autograd.grad(out, (q, k, v, z), grad)
    starts, lens = sequences(q, cu)
    ref = mixed_pair_reference(q.double(), k.double(), v.double(), z.double(), starts, lens, 64, 200)
    want = torch.autograd.grad(ref, (q, k, v, z), grad.double())
    tol = TOL[dtype] * (1 if dtype == torch.float32 else 2)
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
    for name, a, b in zip("qkvz", got, want):
        scale = b.double().abs().max().item() if name == "z" else 1.0  # dz sums ~t*d products
        torch.testing.assert_close(a.double() / scale, b.double() / scale, rtol=tol, atol=tol,
                                   msg=lambda m: f"d{name}: {m}")


# fp32 at head_dim 128: the launch whose shared memory once exceeded an sm_90 block (scripts/compile_sm90.py)
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float32, 1e-4)])
def test_decode(gen, dtype, tol):
    b, tmax, hq, hk, d = 2, 5000, 32, 8, 128
    q, kc, vc = (_rand(gen, *s, dtype=dtype) for s in ((b, hq, d), (b, tmax, hk, d), (b, tmax, hk, d)))
    lens = torch.tensor([5000, 1777], device="cuda")
    sparse = torch.rand(b, hq, device="cuda", generator=gen) < 0.5
    out = elastic_decode(q, kc, vc, lens, sparse, sink=128, window=1024)
    ref = decode_reference(q.float(), kc.float(), vc.float(), lens, sparse, 128, 1024)
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)
