"""Triton prefill for Elastic Attention: every (sequence, query head) in its own mode, one launch.

Layout: packed tokens, q (N, Hq, D), k and v (N, Hkv, D); sequence s owns rows [start[s], start[s] + len[s]) and
is causal inside itself, so varlen (``cu_seqlens``) and padded batches (start = row * T, either padding side) are
the same launch. ``modes`` (S, Hq) int32 picks each head's key set (constants in ``modes.py``):

- FULL: every earlier key;
- STREAMING: keys j < sink or i - j < window (token-exact);
- STREAMING_BLOCKS: the official kernel's block-rounded pattern (sink and window rounded up to ``round_block``);
- BLOCK_SPARSE: the kernel key tiles listed for the head's query tile (``tile_idx`` / ``tile_cnt``; ``ops.py``
  turns a block mask into that list).

``dense_from`` (S,) int32: from that position of its sequence on, a streaming head's queries see every earlier key
(the paper's dense decode of the response, recomputed in one pass); a large value turns it off. Query tiles that
hold such rows visit every key tile up to the diagonal.

A program owns one query tile of one head and visits only its key tiles: ``0..diagonal`` (FULL), the sink tiles then
the window tiles (STREAMING*), or the list (BLOCK_SPARSE). That is what makes sparse heads cheap: a streaming head
costs O(T * (sink + window)), whatever T. Only tiles cut by a boundary (diagonal, window edge, partial sink, the end
of the sequence) pay for the element mask. Query tiles run longest first (reversed program id) to even out the tail.

``len_bucket`` (the longest sequence rounded up to a power of two) is unused by the code: it keys the autotuner, so
tiles are re-chosen per length scale, not per batch. Returns O (N, Hq, D) in the input dtype and the log-sum-exp (Hq, N) in float32, natural log (-inf where a row sees
no key, whose output is then 0: only a block list without the diagonal tile can do that).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_common import BLOCK_SPARSE, FULL, key_tile_ranges, mma, tile_is_whole, tile_visibility

LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _prefill_fwd(
    Q, K, V, O, LSE, STARTS, LENS, MODES, DENSE_FROM, TILE_IDX, TILE_CNT,
    sq_t, sq_h, sk_t, sk_h, sv_t, sv_h, so_t, so_h, slse_h,
    n_q_heads, groups, max_len, max_tiles, len_bucket, qk_scale, sink, window, round_block,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
):
    n_m_tiles = tl.cdiv(max_len, BLOCK_M)
    m_tile = n_m_tiles - 1 - tl.program_id(0)
    seq = tl.program_id(1) // n_q_heads
    head = tl.program_id(1) % n_q_heads
    kv_head = head // groups
    length = tl.load(LENS + seq)
    m0 = m_tile * BLOCK_M
    if m0 >= length:
        return
    start = tl.load(STARTS + seq).to(tl.int64)
    mode = tl.load(MODES + seq * n_q_heads + head)
    dense_from = tl.load(DENSE_FROM + seq)
    # The key tiles to visit: the head's own, or all of them when the query tile holds dense rows (rows of the
    # sequence: a tile reaching past its end holds no row there); whole tiles: the head's mode, or FULL when every
    # row is dense (a tile whole in a sparse mode is whole for dense rows too).
    range_mode = tl.where(tl.minimum(m0 + BLOCK_M, length) - 1 >= dense_from, FULL, mode)
    whole_mode = tl.where(m0 >= dense_from, FULL, mode)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + (start + offs_m[:, None]) * sq_t + head * sq_h + offs_d[None, :],
                mask=offs_m[:, None] < length, other=0.0)
    k_base = K + start * sk_t + kv_head * sk_h
    v_base = V + start * sv_t + kv_head * sv_h

    n_sink, lo, hi = key_tile_ranges(m0, length, range_mode, sink, window, round_block, BLOCK_M, BLOCK_N)
    is_list = range_mode == BLOCK_SPARSE
    list_base = (seq * n_q_heads + head) * n_m_tiles + m_tile
    n_iter = tl.where(is_list, tl.load(TILE_CNT + list_base, mask=is_list, other=0), n_sink + hi - lo)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for it in range(0, n_iter):
        listed = tl.load(TILE_IDX + list_base * max_tiles + it, mask=is_list, other=0)
        n_tile = tl.where(is_list, listed, tl.where(it < n_sink, it, lo + it - n_sink))
        n0 = n_tile * BLOCK_N
        offs_n = n0 + tl.arange(0, BLOCK_N)
        key_ok = offs_n < length
        k = tl.load(k_base + offs_n[None, :] * sk_t + offs_d[:, None], mask=key_ok[None, :], other=0.0)
        qk = mma(q, k, IEEE, UPCAST) * qk_scale
        if not tile_is_whole(m0, n0, whole_mode, sink, window, round_block, BLOCK_M, BLOCK_N):
            dense_rows = (offs_m[:, None] >= dense_from) & (offs_n[None, :] <= offs_m[:, None])
            vis = (tile_visibility(offs_m, offs_n, mode, sink, window, round_block) | dense_rows) & key_ok[None, :]
            qk = tl.where(vis, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that have seen nothing yet stay at zero
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(qk - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + offs_n[:, None] * sv_t + offs_d[None, :], mask=key_ok[:, None], other=0.0)
        acc = acc * alpha[:, None] + mma(p.to(v.dtype), v, IEEE, UPCAST)
        m_i = m_new
    seen = l_i > 0
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    row_ok = offs_m < length
    tl.store(O + (start + offs_m[:, None]) * so_t + head * so_h + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=row_ok[:, None])
    lse = tl.where(seen, (m_i + tl.log2(tl.where(seen, l_i, 1.0))) * LN2, float("-inf"))
    tl.store(LSE + head * slse_h + start + offs_m, lse, mask=row_ok)
