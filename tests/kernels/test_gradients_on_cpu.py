"""Every differentiable Elastic Attention op on every back end against float64 autograd through the slow obvious
references: dq, dk, dv, the gate gradient dz, and the log-sum-exp's gradient where an op returns it.

Back ends: the PyTorch reference (the CPU flash path of ``streaming_attention``, merged by log-sum-exp), and the
Triton kernels through the interpreter. Lengths cross every internal boundary: the streaming chunk (min(256,
window)), the window, the sink, the interpreter's 32 x 16 tiles and the backward's 256-query chunks. Inputs are
drawn from fixed seeds; the loss weights each output element by a random value, so no gradient is trivially zero.
"""

import pytest
import torch

from verl_ext.kernels.elastic_attention import modes as M
from verl_ext.kernels.elastic_attention.cpu import block_sparse_attention, full_attention, streaming_attention
from verl_ext.kernels.elastic_attention.naive import dense_masked_streaming, mixed_pair_reference, prefill_reference
from verl_ext.kernels.elastic_attention.ops import elastic_attention_pair, elastic_prefill
from verl_ext.kernels.elastic_attention.utils import sequences
from verl_ext.kernels.elastic_attention.xattention import xattention_block_mask

RTOL = ATOL = 2e-4  # float32 against float64


def _inputs(seed, *shapes):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) for s in shapes]


def _grads(fn, inputs, weight):
    """Gradients of sum(fn(*inputs) * weight) with respect to every input, and the output."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    weights = weight if isinstance(weight, tuple) else (weight,)
    loss = sum((o.to(w.dtype) * w).sum() for o, w in zip(outs, weights))
    return outs, torch.autograd.grad(loss, leaves)


def _check(got, want, names):
    for name, a, b in zip(names, got, want):
        torch.testing.assert_close(a.double(), b.double(), rtol=RTOL, atol=ATOL, msg=lambda m: f"d{name}: {m}")


def _as64(xs):
    return [x.double() for x in xs]


# (T, sink, window, block_size, groups): T crossing the chunk, the window and the sink; T below the sink; blocks.
STREAMING_CASES = [
    (70, 4, 16, None, 2),      # chunk 16: the window's-edge flash path
    (600, 8, 300, None, 1),    # chunk 256: T crosses 256 and 512, the window inside a chunk
    (300, 3, 40, None, 4),     # GQA 4, masked edge and shared sets
    (10, 16, 32, None, 1),     # every query inside the sink
    (70, 4, 20, 16, 2),        # block-rounded, T not a multiple of the block
    (200, 5, 64, 32, 1),       # block-rounded, several window blocks
]


@pytest.mark.parametrize("t,sink,window,block,groups", STREAMING_CASES)
def test_streaming_attention_cpu_flash_path(t, sink, window, block, groups):
    hq, d = 4, 16
    q, k, v, w = _inputs(0, (2, t, hq, d), (2, t, hq // groups, d), (2, t, hq // groups, d), (2, t, hq, d))
    (out,), got = _grads(lambda *x: streaming_attention(*x, sink, window, block), (q, k, v), w)
    (ref,), want = _grads(lambda *x: dense_masked_streaming(*x, sink, window, block), _as64((q, k, v)), w.double())
    torch.testing.assert_close(out.double(), ref, rtol=RTOL, atol=ATOL)
    _check(got, want, "qkv")


@pytest.mark.parametrize("sparse_code", [M.STREAMING, M.STREAMING_BLOCKS, M.BLOCK_SPARSE])
def test_reference_prefill_every_head_in_its_mode(sparse_code):
    """The reference back end of the mode-table prefill (the CPU fast paths per mode) on a padded batch."""
    t, hq, hk, d = 300, 4, 2, 16
    q, k, v, w = _inputs(1, (2, t, hq, d), (2, t, hk, d), (2, t, hk, d), (2, t, hq, d))
    full_heads = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]])
    table = torch.where(full_heads.bool(), M.FULL, sparse_code)
    block_mask = xattention_block_mask(q, k, 4, 32, 0.6)
    (out,), got = _grads(lambda *x: elastic_prefill(*x, table, sink=5, window=40, round_block=128,
                                                    block_mask=block_mask, mask_block=32, backend="reference"),
                         (q, k, v), w)
    starts, lens = sequences(q)

    def oracle(q, k, v):
        flat = [x.reshape(-1, x.shape[2], x.shape[3]) for x in (q, k, v)]
        return prefill_reference(*flat, table, starts, lens, 5, 40, 128, block_mask, 32)[0].reshape(q.shape)

    (ref,), want = _grads(oracle, _as64((q, k, v)), w.double())
    torch.testing.assert_close(out.double(), ref, rtol=RTOL, atol=ATOL)
    _check(got, want, "qkv")


def test_full_and_block_sparse_attention():
    t, hq, hk, d = 130, 4, 1, 16
    q, k, v, w = _inputs(2, (1, t, hq, d), (1, t, hk, d), (1, t, hk, d), (1, t, hq, d))
    block_mask = xattention_block_mask(q, k, 4, 32, 0.5)
    starts, lens = sequences(q)
    for mode, fn, mask in ((M.FULL, lambda *x: full_attention(*x), None),
                           (M.BLOCK_SPARSE, lambda *x: block_sparse_attention(*x, block_mask, 32), block_mask)):
        table = torch.full((1, hq), mode)
        (out,), got = _grads(fn, (q, k, v), w)

        def oracle(q, k, v, table=table, mask=mask):
            flat = [x.reshape(-1, x.shape[2], x.shape[3]) for x in (q, k, v)]
            return prefill_reference(*flat, table, starts, lens, 1, 1, 128, mask, 32)[0].reshape(q.shape)

        (ref,), want = _grads(oracle, _as64((q, k, v)), w.double())
        torch.testing.assert_close(out.double(), ref, rtol=RTOL, atol=ATOL)
        _check(got, want, "qkv")


def _layout(kind, t, hq, hk, d, seed):
    """(q, k, v, layout kwargs): packed varlen, right-padded or left-padded batches of two sequences."""
    if kind == "varlen":
        q, k, v = _inputs(seed, (2 * t, hq, d), (2 * t, hk, d), (2 * t, hk, d))
        return q, k, v, {"cu_seqlens": torch.tensor([0, t - 17, 2 * t])}
    q, k, v = _inputs(seed, (2, t, hq, d), (2, t, hk, d), (2, t, hk, d))
    return q, k, v, {"lengths": torch.tensor([t, t - 23]), "left_padded": kind == "left_padded"}


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("kind,t", [("varlen", 75), ("padded", 75), ("left_padded", 300)])
def test_prefill_every_mode_with_dense_from_and_lse(backend, kind, t):
    """dq, dk, dv of the mode-table prefill (FULL, both streaming variants, block-sparse heads in one table, dense
    response rows), including the gradient that reaches q and k through the returned log-sum-exp."""
    hq, hk, d = 4, 2, 32
    q, k, v, layout = _layout(kind, t, hq, hk, d, seed=3)
    modes = torch.tensor([[M.FULL, M.STREAMING, M.STREAMING_BLOCKS, M.BLOCK_SPARSE],
                          [M.STREAMING, M.STREAMING_BLOCKS, M.FULL, M.STREAMING]])
    starts, lens = sequences(q, layout.get("cu_seqlens"), layout.get("lengths"), layout.get("left_padded", False))
    nb = -(-t // 32)
    g = torch.Generator().manual_seed(4)
    block_mask = (torch.rand(2, hq, nb, nb, generator=g) < 0.5) | torch.eye(nb, dtype=torch.bool)
    dense_from = torch.tensor([int(lens[0]), int(lens[1]) - 30])  # sequence 1's last 30 rows attend densely
    common = dict(sink=5, window=24, round_block=16, block_mask=block_mask, mask_block=32, dense_from=dense_from)
    w_out, w_lse = _inputs(5, q.shape, (hq, q.reshape(-1, hq, d).shape[0]))
    rows = torch.zeros(q.reshape(-1, hq, d).shape[0], dtype=torch.bool)
    for a, n in zip(starts.tolist(), lens.tolist()):
        rows[a:a + n] = True
    w_lse = w_lse * rows  # padding rows carry lse = -inf on both sides

    def tested(q, k, v):
        o, l_ = elastic_prefill(q, k, v, modes, return_lse=True, backend=backend, **layout, **common)
        return o, torch.where(rows, l_, torch.zeros_like(l_))

    (out, lse), got = _grads(tested, (q, k, v), (w_out, w_lse))

    def oracle(q, k, v):
        flat = [x.reshape(-1, hq if i == 0 else hk, d) for i, x in enumerate((q, k, v))]
        o, l_ = prefill_reference(*flat, modes, starts, lens, 5, 24, 16, block_mask, 32, dense_from=dense_from)
        return o.reshape(q.shape), torch.where(rows, l_, torch.zeros_like(l_))

    (ref, ref_lse), want = _grads(oracle, _as64((q, k, v)), (w_out.double(), w_lse.double()))
    torch.testing.assert_close(out.double(), ref, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(lse.double()[:, rows], ref_lse.double()[:, rows], rtol=RTOL, atol=ATOL)
    _check(got, want, "qkv")


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("kind,t,round_block,window", [("varlen", 75, None, 20), ("padded", 75, 16, 20),
                                                         ("left_padded", 300, None, 40),
                                                         ("varlen", 290, None, 270)])
def test_pair_every_gradient_including_the_gate(backend, kind, t, round_block, window):
    """The training pair O = z O_FA + (1 - z) O_SA: dq, dk, dv and dz against float64 autograd."""
    if backend == "triton" and t > 100:
        pytest.skip("the 256-query chunks are the PyTorch paths'; the interpreter's tiles are crossed at T=75")
    hq, hk, d = 4, 2, 32
    q, k, v, layout = _layout(kind, t, hq, hk, d, seed=6)
    z = torch.tensor([[1.0, 0.0, 0.3, 0.0], [0.0, 1.0, 1.0, 0.6]])
    (w,) = _inputs(7, q.shape)
    starts, lens = sequences(q, layout.get("cu_seqlens"), layout.get("lengths"), layout.get("left_padded", False))
    (out,), got = _grads(lambda q, k, v, z: elastic_attention_pair(q, k, v, z, sink=4, window=window,
                                                                   round_block=round_block, backend=backend,
                                                                   **layout), (q, k, v, z), w)

    def oracle(q, k, v, z):
        flat = [x.reshape(-1, hq if i == 0 else hk, d) for i, x in enumerate((q, k, v))]
        return mixed_pair_reference(*flat, z, starts, lens, 4, window, round_block).reshape(q.shape)

    (ref,), want = _grads(oracle, _as64((q, k, v, z)), w.double())
    torch.testing.assert_close(out.double(), ref, rtol=RTOL, atol=ATOL)
    _check(got, want, ["q", "k", "v", "z"])
