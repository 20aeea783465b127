"""The one mode-table builder (``mode_table``) against a slow, obvious float64 attention written from the patterns'
definitions, for every pattern, layout (left / right padded, packed), block rounding, dense response rows and back
end; and the router-training mix's gradients (q, k, v and z) against float64 autograd through that reference."""

import math

import pytest
import torch

from verl_ext.elastic_attention import mode_table
from verl_ext.elastic_attention.config import ElasticAttentionConfig
from verl_ext.kernels.elastic_attention import modes as M
from verl_ext.kernels.elastic_attention.xattention import xattention_block_mask

SINK, WINDOW = 3, 9
LENS = (40, 0, 27, 33)  # an empty sequence too


def _config(pattern: dict, block_size=None, backend="reference", decode="dense") -> ElasticAttentionConfig:
    return ElasticAttentionConfig(sink=SINK, window=WINDOW, block_size=block_size, backend=backend, decode=decode,
                                  **pattern)


def _slow(q, k, v, retrieval, config, dense_from=None):
    """One sequence: q (T, Hq, D), k / v (T, Hkv, D), retrieval (Hq,) bool -> (T, Hq, D) float64."""
    t, hq, d = q.shape
    out = torch.zeros(t, hq, d, dtype=torch.float64)
    if t == 0:
        return out
    groups = hq // k.shape[1]
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    causal = j <= i
    mask_of = {"full": lambda h: causal}
    if config.block_size is None:
        mask_of["streaming"] = lambda h: causal & ((j < SINK) | (i - j < WINDOW))
    else:
        b = config.block_size
        mask_of["streaming"] = lambda h: causal & ((j // b < math.ceil(SINK / b)) |
                                                   (i // b - j // b < math.ceil(WINDOW / b)))
    if config.uses_xattention:
        x = config.xattention
        blocks = xattention_block_mask(q[None], k[None], x.stride, x.block, x.threshold)[0]  # (Hq, nb, nb)
        mask_of["xattention"] = lambda h: causal & blocks[h][i // x.block, j // x.block]
    for h in range(hq):
        mode = config.retrieval_mode if retrieval[h] else config.sparse_mode
        mask = mask_of[mode](h)
        # the rows a decode step computed: XAttention heads decode densely, streaming heads under decode="dense"
        if dense_from is not None and (mode == "xattention" or (mode == "streaming" and config.decode == "dense")):
            mask = mask | (causal & (i >= dense_from))
        scores = (q[:, h].double() @ k[:, h // groups].double().T) / math.sqrt(d)
        out[:, h] = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v[:, h // groups].double()
    return out


def _inputs(seed=0, hq=4, hk=2, d=32):
    g = torch.Generator().manual_seed(seed)
    n = sum(LENS)
    q, k, v = (torch.randn(n, h, d, generator=g) for h in (hq, hk, hk))
    retrieval = torch.rand(len(LENS), hq, generator=g) < 0.5
    retrieval[0] = torch.tensor([True, False, True, False])  # both modes in one sequence, per query head
    return q, k, v, retrieval


def _padded(x, left: bool):
    t = max(LENS)
    out = torch.zeros(len(LENS), t, *x.shape[1:], dtype=x.dtype)
    start = 0
    for s, n in enumerate(LENS):
        if n:
            (out[s, t - n:] if left else out[s, :n]).copy_(x[start:start + n])
        start += n
    return out


def _unpad(x, left: bool):
    t = x.shape[1]
    return torch.cat([x[s, t - n:] if left else x[s, :n] for s, n in enumerate(LENS)])


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("block_size", [None, 4])
# dense response rows come with packed rows (the actor recomputing the rollout's log-probs)
@pytest.mark.parametrize("layout,with_dense_rows,decode", [
    ("packed", False, "dense"), ("packed", True, "dense"), ("packed", True, "sparse_kv"), ("left_padded", False, "dense"),
    ("right_padded", False, "dense")])
def test_attend_equals_the_slow_reference(pattern, backend, layout, block_size, with_dense_rows, decode):
    q, k, v, retrieval = _inputs()
    if decode == "sparse_kv" and pattern["pattern"] == "fa-xa":
        pytest.skip("sparse_kv decode keeps streaming heads' windows; fa-xa has no streaming heads")
    config = _config(pattern, block_size, backend, decode=decode)
    dense_from = torch.tensor([25, 0, 27, 14]) if with_dense_rows else None  # 27: a prompt with no response
    cu = torch.tensor([0, *LENS]).cumsum(0)
    want = torch.cat([_slow(q[a:e], k[a:e], v[a:e], retrieval[s], config,
                            None if dense_from is None else int(dense_from[s]))
                      for s, (a, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist()))])
    if layout == "packed":
        got = mode_table.attend(config, q, k, v, retrieval, cu_seqlens=cu, dense_from=dense_from)
    else:
        left = layout == "left_padded"
        got = _unpad(mode_table.attend(config, _padded(q, left), _padded(k, left), _padded(v, left), retrieval,
                                       lengths=torch.tensor(LENS), left_padded=left), left)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_tables_name_the_patterns_modes(pattern):
    config = _config(pattern)
    codes = mode_table.table(config, torch.tensor([[True, False]])).tolist()[0]
    expected = {"fa-ssa": [M.FULL, M.STREAMING], "fa-xa": [M.FULL, M.BLOCK_SPARSE],
                "xa-ssa": [M.BLOCK_SPARSE, M.STREAMING]}[config.pattern]
    assert codes == expected
    assert (mode_table.block_masks(config, *_inputs()[:2], cu_seqlens=torch.tensor([0, *LENS]).cumsum(0)) is None) \
        == (config.pattern == "fa-ssa")


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_training_mix_values_and_gradients(pattern, backend):
    """O = z * O_retrieval + (1 - z) * O_sparse per (sequence, query head); dO/dz, dq, dk, dv against float64
    autograd through the slow reference."""
    q, k, v, _ = _inputs(seed=1)
    g = torch.Generator().manual_seed(2)
    z = torch.rand(len(LENS), q.shape[1], generator=g)
    cu = torch.tensor([0, *LENS]).cumsum(0)
    config = _config(pattern, backend=backend)
    w = torch.randn(q.shape, generator=g)

    leaves = [x.clone().requires_grad_() for x in (q, k, v, z)]
    got = mode_table.attend_train(config, *leaves[:3], leaves[3], cu_seqlens=cu)
    got_grads = torch.autograd.grad((got * w).sum(), leaves)

    ref_leaves = [x.double().clone().requires_grad_() for x in (q, k, v, z)]
    parts = []
    for s, (a, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        args = [x[a:e] for x in ref_leaves[:3]]
        on, off = torch.ones(q.shape[1], dtype=torch.bool), torch.zeros(q.shape[1], dtype=torch.bool)
        o_r, o_s = _slow(*args, on, config), _slow(*args, off, config)
        mix = ref_leaves[3][s][None, :, None]
        parts.append(mix * o_r + (1 - mix) * o_s)
    want = torch.cat(parts)
    want_grads = torch.autograd.grad((want * w.double()).sum(), ref_leaves)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    for name, a, b in zip("qkvz", got_grads, want_grads):
        scale = float(b.abs().max()) + 1e-12
        torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-4 * scale, msg=lambda m: f"d{name}: {m}")
