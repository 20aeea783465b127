"""Triton decode for Elastic Attention: one new query token per sequence against its KV cache, each head with its
own visible range (the whole cache, or sink + window for sparse-KV decode), split over the keys (flash decoding).

q (B, Hq, D); k_cache and v_cache (B, T_max, Hkv, D) with ``cache_lens`` (B,) valid positions, the new token's own
key at len - 1. A program serves one KV head and all its query heads (GQA: each key tile is read once, and the
group's queries make one tensor-core product). A sparse head sees [0, min(sink, lo)) and [lo, len) with
lo = max(len - window, 0); when every head of the group is sparse the program walks only that set, as one virtual
range, so its cost is O(sink + window) whatever the cache length. Split s of ``n_splits`` writes a partial (output,
log-sum-exp in log2 units) per query head; ``combine_splits`` merges them. A sparse head's set is the
``sink_window`` decode rule of ``modes.DECODE_RULES``. No backward: decoding runs under no_grad.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import triton_common as tc
from . import utils
from .triton_common import mma


@triton.jit
def _decode_split(
    Q, K, V, O_PART, LSE_PART, LENS, SPARSE,
    sq_b, sq_h, sk_b, sk_t, sk_h, sv_b, sv_t, sv_h,
    n_q_heads, n_kv_heads, groups, n_splits, split_len, qk_scale, sink, window,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
):
    pid = tl.program_id(0)
    split = tl.program_id(1)
    b = pid // n_kv_heads
    kv_head = pid % n_kv_heads
    length = tl.load(LENS + b)
    offs_g = tl.arange(0, BLOCK_G)
    g_ok = offs_g < groups
    heads = kv_head * groups + offs_g
    sparse = tl.load(SPARSE + b * n_q_heads + heads, mask=g_ok, other=1) != 0  # (G,)
    any_full = tl.max(tl.where(g_ok & (sparse == 0), 1, 0), 0) > 0
    lo = tl.where(any_full, 0, tl.maximum(length - window, 0))
    n_head = tl.where(any_full, 0, tl.minimum(sink, lo))  # the sink part, before the window part
    virtual_len = n_head + length - lo
    v_start = split * split_len
    v_end = tl.minimum(v_start + split_len, virtual_len)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + b * sq_b + heads[:, None] * sq_h + offs_d[None, :], mask=g_ok[:, None], other=0.0)
    k_base = K + b.to(tl.int64) * sk_b + kv_head * sk_h
    v_base = V + b.to(tl.int64) * sv_b + kv_head * sv_h
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, HEAD_DIM], tl.float32)
    for n0 in range(v_start, v_end, BLOCK_N):
        offs_v = n0 + tl.arange(0, BLOCK_N)
        ok = offs_v < v_end
        pos = tl.where(offs_v < n_head, offs_v, lo + offs_v - n_head)
        k = tl.load(k_base + pos[None, :] * sk_t + offs_d[:, None], mask=ok[None, :], other=0.0)
        s = mma(q, k, IEEE, UPCAST) * qk_scale  # (G, BLOCK_N)
        seen_by_sparse = (pos[None, :] < sink) | (length - 1 - pos[None, :] < window)
        vis = ok[None, :] & ((sparse[:, None] == 0) | seen_by_sparse)
        s = tl.where(vis, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a sparse head may see nothing in this tile
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        v = tl.load(v_base + pos[:, None] * sv_t + offs_d[None, :], mask=ok[:, None], other=0.0)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + mma(p.to(v.dtype), v, IEEE, UPCAST)
        m_i = m_new
    part = (b * n_q_heads + heads) * n_splits + split
    seen = l_i > 0
    tl.store(O_PART + part[:, None] * HEAD_DIM + offs_d[None, :], acc / tl.where(seen, l_i, 1.0)[:, None],
             mask=g_ok[:, None])
    tl.store(LSE_PART + part, tl.where(seen, m_i + tl.log2(tl.where(seen, l_i, 1.0)), float("-inf")), mask=g_ok)


def _n_splits(max_len: int, programs: int, device) -> int:
    """Enough key splits to fill the GPU (about 4 programs per SM) without splits shorter than 1024 keys."""
    if device.type != "cuda":
        return max(1, min(4, max_len // 64))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(-(-max_len // 1024), -(-4 * sms // programs)))


def cuda_launch(dtype: torch.dtype, head_dim: int) -> dict:
    """The decode kernel's tile and launch settings on CUDA. fp32 at head_dim 128 takes two pipeline stages: three
    need 278,528 B of shared memory, over sm_90's 232,448 B per block (``scripts/compile_sm90.py`` checks every
    launch against it)."""
    wide = torch.empty((), dtype=dtype).element_size() * head_dim >= 512
    return {"BLOCK_N": 128, "num_warps": 4, "num_stages": 2 if wide else 3}


def combine_splits(o_part: torch.Tensor, lse_part: torch.Tensor) -> torch.Tensor:
    """Merge partial attentions over disjoint key sets: o_part (P, S, D), lse_part (P, S) (log2 units; -inf for
    an empty split) -> (P, D)."""
    top = lse_part.max(dim=1, keepdim=True).values
    weights = torch.exp2(lse_part - top)  # empty splits weigh 0; every row has a non-empty split
    return (o_part * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)


def decode(q, k_cache, v_cache, cache_lens, sparse_heads, sink: int, window: int, scale=None) -> torch.Tensor:
    """(B, Hq, D) on the Triton kernel (arguments of ``naive.decode_reference``; rows of D contiguous elements)."""
    b, hq, d = q.shape
    scale = d**-0.5 if scale is None else scale
    lens = cache_lens.to(device=q.device, dtype=torch.int32)
    sparse = sparse_heads.to(device=q.device, dtype=torch.int32).contiguous()
    max_len = int(cache_lens.max())
    hk = k_cache.shape[2]
    splits = _n_splits(max_len, b * hk, q.device)
    split_len = -(-max_len // splits)
    launch = cuda_launch(q.dtype, d) if q.device.type == "cuda" else {"BLOCK_N": 16}
    block_n = launch["BLOCK_N"]
    split_len = -(-split_len // block_n) * block_n
    o_part = utils._alloc((b * hq, splits, d), q, torch.float32)
    lse_part = utils._alloc((b * hq, splits), q, torch.float32)
    _decode_split[(b * hk, splits)](
        q, k_cache, v_cache, o_part, lse_part, lens, sparse,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        hq, hk, hq // hk, splits, split_len, scale * tc.LOG2E, sink, window,
        HEAD_DIM=d, BLOCK_G=max(16, triton.next_power_of_2(hq // hk)), **tc.dot_flags(q), **launch,
    )
    return combine_splits(o_part, lse_part).reshape(b, hq, d).to(q.dtype)
