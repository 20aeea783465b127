"""Triton prefill for Elastic Attention: every (sequence, query head) in its own mode, one launch; its launcher and
its autograd (an exact backward recomputed from the log-sum-exp).

Layout: packed tokens, q (N, Hq, D), k and v (N, Hkv, D); sequence s owns rows [start[s], start[s] + len[s]) and
is causal inside itself, so varlen (``cu_seqlens``) and padded batches (start = row * T, either padding side) are
the same launch. ``rules`` (S, Hq) int32 holds each head's tile rule (``triton_common.RULES``; the launcher maps the
mode table onto it through the registry):

- causal: every earlier key;
- sink_window: keys j < sink or i - j < window (token-exact);
- sink_window_blocks: the official kernel's block-rounded pattern (sink and window rounded up to ``round_block``);
- block_list: the kernel key tiles listed for the head's query tile (``tile_idx`` / ``tile_cnt``;
  ``block_mask_tiles`` turns a block mask into that list).

``dense_from`` (S,) int32: from that position of its sequence on, a head's queries see every earlier key (the
paper's dense decode of the response, recomputed in one pass); a large value turns it off. Query tiles that hold
such rows visit every key tile up to the diagonal.

A program owns one query tile of one head and visits only its key tiles: ``0..diagonal`` (causal), the sink tiles
then the window tiles (sink_window*), or the list (block_list). That is what makes sparse heads cheap: a streaming
head costs O(T * (sink + window)), whatever T. Only tiles cut by a boundary (diagonal, window edge, partial sink, the
end of the sequence) pay for the element mask. Query tiles run longest first (reversed program id) to even out the
tail.

``len_bucket`` (the longest sequence rounded up to a power of two) is unused by the code: it keys the autotuner, so
tiles are re-chosen per length scale, not per batch. Returns O (N, Hq, D) in the input dtype and the log-sum-exp
(Hq, N) in float32, natural log (-inf where a row sees no key, whose output is then 0: only a block list without the
diagonal tile can do that).

Why a backward: a policy update through an elastic actor (``actor_rollout_ref.model.override_config``) runs the
prefill with gradients on; without it the kernel's output carried no gradient, so the attention path of the policy
gradient was silently zero on CUDA. The backward is PyTorch (``backward.attention_backward``, O(chunk x visible keys)
memory per step), one sequence and one mode's heads at a time; a fused backward kernel is a speed item, not a
correctness one.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from . import modes as M
from . import triton_common as tc
from . import utils
from .backward import attention_backward
from .triton_common import BLOCK_LIST, CAUSAL, key_tile_ranges, mma, tile_is_whole, tile_visibility

LN2 = tl.constexpr(0.6931471805599453)
# Warps and pipeline stages of the fixed-tile (block-list) launch on CUDA.
BLOCK_SPARSE_CUDA_LAUNCH = {"num_warps": 8, "num_stages": 3}
# (BLOCK_M, BLOCK_N, warps, stages) the launch without tile lists autotunes over on CUDA.
PREFILL_CONFIGS = ((128, 64, 8, 3), (128, 128, 8, 2), (128, 128, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3))


@triton.jit
def _prefill_fwd(
    Q, K, V, O, LSE, STARTS, LENS, RULES, DENSE_FROM, TILE_IDX, TILE_CNT,
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
    rule = tl.load(RULES + seq * n_q_heads + head)
    dense_from = tl.load(DENSE_FROM + seq)
    # The key tiles to visit: the head's own, or all of them when the query tile holds dense rows (rows of the
    # sequence: a tile reaching past its end holds no row there); whole tiles: the head's rule, or CAUSAL when every
    # row is dense (a tile whole in a sparse rule is whole for dense rows too).
    range_rule = tl.where(tl.minimum(m0 + BLOCK_M, length) - 1 >= dense_from, CAUSAL, rule)
    whole_rule = tl.where(m0 >= dense_from, CAUSAL, rule)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + (start + offs_m[:, None]) * sq_t + head * sq_h + offs_d[None, :],
                mask=offs_m[:, None] < length, other=0.0)
    k_base = K + start * sk_t + kv_head * sk_h
    v_base = V + start * sv_t + kv_head * sv_h

    n_sink, lo, hi = key_tile_ranges(m0, length, range_rule, sink, window, round_block, BLOCK_M, BLOCK_N)
    is_list = range_rule == BLOCK_LIST
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
        if not tile_is_whole(m0, n0, whole_rule, sink, window, round_block, BLOCK_M, BLOCK_N):
            dense_rows = (offs_m[:, None] >= dense_from) & (offs_n[None, :] <= offs_m[:, None])
            vis = (tile_visibility(offs_m, offs_n, rule, sink, window, round_block) | dense_rows) & key_ok[None, :]
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


def _tiles(device: torch.device, mask_block: Optional[int]):
    """(BLOCK_M, BLOCK_N): 128 x 64 on GPU; small tiles in the interpreter so short tests cross tile edges."""
    bm, bn = (128, 64) if device.type == "cuda" else (32, 16)
    if mask_block is not None:
        bm, bn = min(bm, mask_block), min(bn, mask_block)
        if mask_block % bm or mask_block % bn or bn < 16:
            raise ValueError(f"mask_block={mask_block} must be a multiple of 16 (and of {bm} / {bn} here); "
                             "XAttention uses 64 (paper) or 128 (released evaluation).")
    return bm, bn


def block_mask_tiles(block_mask, mask_block: int, n_m_tiles: int, n_n_tiles: int, bm: int, bn: int):
    """Kernel key-tile lists from a block mask (S, Hq, nqb, nkb): (idx (S, Hq, n_m_tiles, max), cnt (S, Hq, n_m_tiles))
    int32; a key tile is listed, in increasing order, when its mask block is kept and it is not above the diagonal."""
    dev = block_mask.device
    qb = (torch.arange(n_m_tiles, device=dev) * bm) // mask_block
    kb = (torch.arange(n_n_tiles, device=dev) * bn) // mask_block
    qb, kb = qb.clamp(max=block_mask.shape[2] - 1), kb.clamp(max=block_mask.shape[3] - 1)
    keep = block_mask.bool()[:, :, qb][:, :, :, kb]
    below = (torch.arange(n_n_tiles, device=dev)[None, :] * bn) <= (torch.arange(n_m_tiles, device=dev)[:, None] * bm + bm - 1)
    keep = keep & below
    cnt = keep.sum(-1, dtype=torch.int32)
    width = max(int(cnt.max()) if cnt.numel() else 0, 1)
    idx = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True)[..., :width].to(torch.int32)
    return idx.contiguous(), cnt.contiguous()


def _prefill_kernel(kind: str):
    """The prefill kernel: "fixed" (tiles given by the caller), or "tuned" (CUDA, no tile lists): autotuned over
    tile shape, warps and pipeline stages once per head_dim, precision and power-of-two length bucket."""
    if kind == "fixed":
        return _prefill_fwd
    configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
               for bm, bn, w, s in PREFILL_CONFIGS]
    return tc.tuned("prefill", _prefill_fwd, configs, ["HEAD_DIM", "IEEE", "len_bucket"])


def _forward(q, k, v, rules, starts, lens, dense_from, block_mask, mask_block, sink, window, round_block, scale):
    """The kernel launch on packed (N, H, D) views, ``rules`` (S, Hq) tile-rule ids: (out (N, Hq, D), lse (Hq, N))."""
    hq, d = q.shape[1], q.shape[2]
    dev = q.device
    max_len = int(lens.max()) if len(lens) else 0
    if max_len == 0:
        return torch.zeros_like(q), torch.full((hq, q.shape[0]), float("-inf"), device=dev)
    has_list = bool((rules == tc.RULES["block_list"]).any())
    out = utils._alloc(q.shape, q)
    lse = utils._alloc((hq, q.shape[0]), q, torch.float32)
    args = [q, k, v, out, lse, starts.to(dev), lens.to(dev), rules.to(device=dev, dtype=torch.int32).contiguous(),
            dense_from.to(dev)]
    strides = (q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0),
               out.stride(1), lse.stride(0))
    scalars = (scale * tc.LOG2E, sink, window, round_block)
    if has_list or dev.type != "cuda":
        # Fixed tiles: the tile lists are built for them (and the interpreter needs no tuning).
        bm, bn = _tiles(dev, mask_block if has_list else None)
        n_m_tiles, n_n_tiles = max(math.ceil(max_len / bm), 1), max(math.ceil(max_len / bn), 1)
        if has_list:
            tile_idx, tile_cnt = block_mask_tiles(block_mask.to(dev), mask_block, n_m_tiles, n_n_tiles, bm, bn)
        else:
            tile_idx = tile_cnt = torch.zeros(1, dtype=torch.int32, device=dev)
        _prefill_kernel("fixed")[(n_m_tiles, len(starts) * hq)](
            *args, tile_idx, tile_cnt, *strides, hq, hq // k.shape[1], max_len, tile_idx.shape[-1],
            triton.next_power_of_2(max_len), *scalars,
            HEAD_DIM=d, BLOCK_M=bm, BLOCK_N=bn, **tc.dot_flags(q),
            **(BLOCK_SPARSE_CUDA_LAUNCH if dev.type == "cuda" else {}),
        )
    else:
        dummy = torch.zeros(1, dtype=torch.int32, device=dev)
        grid = lambda meta: (triton.cdiv(max_len, meta["BLOCK_M"]), len(starts) * hq)  # noqa: E731
        _prefill_kernel("tuned")[grid](*args, dummy, dummy, *strides, hq, hq // k.shape[1], max_len, 1,
                                       triton.next_power_of_2(max_len), *scalars, HEAD_DIM=d, **tc.dot_flags(q))
    owner = utils.token_owner(starts, lens, q.shape[0], dev)
    utils.fill_outside(out, owner)
    utils.fill_outside(lse, owner, float("-inf"), dim=1)
    return out, lse


def _keys_of(mode: M.Mode, settings: M.Settings, dense_from: int):
    """``attention_backward``'s ``keys_of`` for heads in ``mode``: the mode's key span while a chunk lies wholly
    before ``dense_from`` (O(visible keys)); otherwise every earlier key, through ``visible`` and the dense rows."""
    def keys_of(i0: int, i1: int):
        if mode.key_span is not None and i1 - 1 < dense_from:
            return mode.key_span(i0, i1, settings)
        rows, keys = torch.arange(i0, i1)[:, None], torch.arange(0, i1)
        seen = mode.visible(rows, keys[None, :], settings)
        return keys, seen | ((rows >= dense_from) & (keys[None, :] <= rows))
    return keys_of


class TritonPrefill(torch.autograd.Function):
    """(out (N, Hq, D), lse (Hq, N)) of the kernel, both differentiable in q, k and v."""

    @staticmethod
    def forward(ctx, q, k, v, codes, rules, starts, lens, dense_from, block_mask, mask_block, sink, window,
                round_block, scale):
        out, lse = _forward(q, k, v, rules, starts, lens, dense_from, block_mask, mask_block, sink, window,
                            round_block, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.meta = (codes.cpu(), starts, lens, dense_from, block_mask, mask_block, sink, window, round_block, scale)
        return out, lse

    @staticmethod
    def backward(ctx, d_out, d_lse):
        q, k, v, out, lse = ctx.saved_tensors
        codes, starts, lens, dense_from, block_mask, mask_block, sink, window, round_block, scale = ctx.meta
        groups = q.shape[1] // k.shape[1]
        dq = torch.zeros_like(q, dtype=torch.promote_types(q.dtype, torch.float32))
        dk = torch.zeros(k.shape, dtype=dq.dtype, device=k.device)
        dv = torch.zeros_like(dk)
        for s, (a, t) in enumerate(zip(starts.tolist(), lens.tolist())):
            for code in sorted(set(codes[s].tolist())):
                mode = M.get(code)
                heads = (codes[s] == code).nonzero().flatten().to(q.device)
                kv = heads // groups
                mask = block_mask[s, heads].cpu() if mode.needs_block_mask else None
                settings = M.Settings(sink, window, round_block, mask, mask_block)
                rows = slice(a, a + t)
                g_q, g_k, g_v = attention_backward(
                    q[rows][:, heads], k[rows][:, kv], v[rows][:, kv], out[rows][:, heads], lse[heads, rows].T,
                    d_out[rows][:, heads], scale, _keys_of(mode, settings, int(dense_from[s])),
                    d_lse=None if d_lse is None else d_lse[heads, rows].T)
                dq[rows, heads] = g_q
                dk[rows] = dk[rows].index_add(1, kv, g_k)
                dv[rows] = dv[rows].index_add(1, kv, g_v)
        return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)) + (None,) * 11


def prefill(q, k, v, modes, starts, lens, sink: int, window: int, round_block: int = 128,
            block_mask: Optional[torch.Tensor] = None, mask_block: Optional[int] = None,
            scale: Optional[float] = None, dense_from: Optional[torch.Tensor] = None):
    """(O (N, Hq, D), LSE (Hq, N)) of the mode-table prefill on the Triton kernel (arguments of
    ``naive.prefill_reference``; rows of D contiguous elements), differentiable in q, k, v when gradients are on.
    Refuses an unknown code or a mode without a tile rule before launching anything."""
    rules = tc.rule_table(modes)
    scale = q.shape[-1]**-0.5 if scale is None else scale
    if dense_from is None:
        dense_from = torch.full((len(starts),), utils.NEVER_DENSE, dtype=torch.int32)
    args = (starts, lens, dense_from, block_mask, mask_block, sink, window, round_block, scale)
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        return TritonPrefill.apply(q, k, v, modes, rules, *args)
    return _forward(q, k, v, rules, *args)
