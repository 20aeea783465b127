"""Triton training pair for router training: full attention (FA) and streaming attention (SA) of every head from one
pass over shared Q/K tiles, and the fused backward of their per-(sequence, head) mix O = z * O_FA + (1 - z) * O_SA.

The SA key set is a subset of the causal one, so the forward computes each score tile once and feeds it to two
online softmaxes (SA only on the sink and window tiles). The backward recomputes the tile once as well: with
g = dO, dP = g V^T is shared and

    dV += (z P_FA + (1 - z) P_SA)^T g
    dS  = z P_FA (dP - D_FA) + (1 - z) P_SA (dP - D_SA),   D_X = rowsum(g * O_X)
    dK += dS^T Q * scale,  dQ += dS K * scale

so the pair costs about one dense forward and backward, plus the SA exponentials on the few window tiles. The router
gradient dz = <dO, O_FA - O_SA> per (sequence, head) is sum over tokens of D_FA - D_SA (done by the caller).

Layout as ``triton_prefill``: packed q (N, Hq, D), k and v (N, Hkv, D), sequences by ``starts`` / ``lens``; the
log-sum-exps travel in log2 units of the scaled scores, (Hq, N) float32. ``sa_rule`` is the tile rule of the
streaming mode (``triton_common.RULES``). ``len_bucket`` (the longest sequence rounded up to a power of two) is
unused by the code: it is the autotuner's key, so tiles are re-chosen per length scale rather than per batch.

Below the kernels: their launcher (autotuned on CUDA, fixed small tiles in the interpreter) and the autograd
Function that runs the forward kernel and the two backward kernels (dK/dV per key tile, dQ per query tile).
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
from .triton_common import key_tile_ranges, mma, tile_is_whole, tile_visibility

INTERPRETER_TILES = {"BLOCK_M": 32, "BLOCK_N": 16}
# (BLOCK_M, BLOCK_N, warps, stages) tried on CUDA per kernel.
CONFIGS = {
    "_pair_fwd": ((64, 64, 4, 2), (64, 64, 4, 3), (64, 64, 8, 2), (128, 64, 8, 2), (64, 128, 8, 2)),
    "_pair_bwd_dkdv": ((64, 64, 4, 2), (64, 64, 8, 2), (64, 128, 8, 2), (32, 128, 8, 2), (64, 64, 4, 3)),
    "_pair_bwd_dq": ((64, 64, 4, 2), (64, 64, 8, 2), (128, 64, 8, 2), (128, 32, 8, 2), (64, 64, 4, 3)),
}


@triton.jit
def _pair_fwd(
    Q, K, V, O_FA, O_SA, LSE_FA, LSE_SA, STARTS, LENS,
    sq_t, sq_h, sk_t, sk_h, sv_t, sv_h, so_t, so_h, slse_h,
    n_q_heads, groups, max_len, len_bucket, qk_scale, sink, window, round_block, sa_rule,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
):
    m_tile = tl.cdiv(max_len, BLOCK_M) - 1 - tl.program_id(0)
    seq = tl.program_id(1) // n_q_heads
    head = tl.program_id(1) % n_q_heads
    length = tl.load(LENS + seq)
    m0 = m_tile * BLOCK_M
    if m0 >= length:
        return
    start = tl.load(STARTS + seq).to(tl.int64)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + (start + offs_m[:, None]) * sq_t + head * sq_h + offs_d[None, :],
                mask=offs_m[:, None] < length, other=0.0)
    k_base = K + start * sk_t + (head // groups) * sk_h
    v_base = V + start * sv_t + (head // groups) * sv_h
    n_sink, lo, hi = key_tile_ranges(m0, length, sa_rule, sink, window, round_block, BLOCK_M, BLOCK_N)

    m_fa = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_fa = tl.zeros([BLOCK_M], tl.float32)
    acc_fa = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    m_sa = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_sa = tl.zeros([BLOCK_M], tl.float32)
    acc_sa = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for n_tile in range(0, hi):
        n0 = n_tile * BLOCK_N
        offs_n = n0 + tl.arange(0, BLOCK_N)
        key_ok = offs_n < length
        k = tl.load(k_base + offs_n[None, :] * sk_t + offs_d[:, None], mask=key_ok[None, :], other=0.0)
        v = tl.load(v_base + offs_n[:, None] * sv_t + offs_d[None, :], mask=key_ok[:, None], other=0.0)
        qk = mma(q, k, IEEE, UPCAST) * qk_scale
        qk_fa = qk
        if n0 + BLOCK_N - 1 > m0:  # the diagonal tile: causal (and sequence-end) mask
            qk_fa = tl.where((offs_n[None, :] <= offs_m[:, None]) & key_ok[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_fa, tl.max(qk_fa, 1))
        alpha = tl.exp2(m_fa - m_new)
        p = tl.exp2(qk_fa - m_new[:, None])
        l_fa = l_fa * alpha + tl.sum(p, 1)
        acc_fa = acc_fa * alpha[:, None] + mma(p.to(v.dtype), v, IEEE, UPCAST)
        m_fa = m_new
        if (n_tile < n_sink) | (n_tile >= lo):
            qk_sa = qk
            if not tile_is_whole(m0, n0, sa_rule, sink, window, round_block, BLOCK_M, BLOCK_N):
                vis = tile_visibility(offs_m, offs_n, sa_rule, sink, window, round_block) & key_ok[None, :]
                qk_sa = tl.where(vis, qk, float("-inf"))
            m_new = tl.maximum(m_sa, tl.max(qk_sa, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp2(m_sa - m_safe)
            p = tl.exp2(qk_sa - m_safe[:, None])
            l_sa = l_sa * alpha + tl.sum(p, 1)
            acc_sa = acc_sa * alpha[:, None] + mma(p.to(v.dtype), v, IEEE, UPCAST)
            m_sa = m_new
    row_ok = offs_m < length
    o_offs = (start + offs_m[:, None]) * so_t + head * so_h + offs_d[None, :]
    l_fa_safe = tl.where(l_fa > 0, l_fa, 1.0)  # rows past the sequence end only
    l_sa_safe = tl.where(l_sa > 0, l_sa, 1.0)
    tl.store(O_FA + o_offs, (acc_fa / l_fa_safe[:, None]).to(O_FA.dtype.element_ty), mask=row_ok[:, None])
    tl.store(O_SA + o_offs, (acc_sa / l_sa_safe[:, None]).to(O_SA.dtype.element_ty), mask=row_ok[:, None])
    tl.store(LSE_FA + head * slse_h + start + offs_m, m_fa + tl.log2(l_fa_safe), mask=row_ok)
    tl.store(LSE_SA + head * slse_h + start + offs_m, m_sa + tl.log2(l_sa_safe), mask=row_ok)


@triton.jit
def _pair_probs(q, k, offs_m, offs_n, length, lse_fa, lse_sa, m0, n0, n_tile, sa_rule, sink, window, round_block,
                qk_scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    """(P_FA, P_SA) (BM, BN) of one tile, recomputed from the saved log-sum-exps (P_SA = 0 off the SA tiles)."""
    qk = mma(q, k, IEEE, UPCAST) * qk_scale
    causal = (offs_n[None, :] <= offs_m[:, None]) & (offs_n[None, :] < length) & (offs_m[:, None] < length)
    p_fa = tl.where(causal, tl.exp2(qk - lse_fa[:, None]), 0.0)
    n_sink, lo, hi = key_tile_ranges(m0, length, sa_rule, sink, window, round_block, BLOCK_M, BLOCK_N)
    p_sa = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    if (n_tile < n_sink) | ((n_tile >= lo) & (n_tile < hi)):
        vis = tile_visibility(offs_m, offs_n, sa_rule, sink, window, round_block) & causal
        p_sa = tl.where(vis, tl.exp2(qk - lse_sa[:, None]), 0.0)
    return p_fa, p_sa


@triton.jit
def _query_rows(Q, DO, LSE_FA, LSE_SA, D_FA, D_SA, start, head, offs_m, offs_d, row_ok,
                sq_t, sq_h, sdo_t, sdo_h, slse_h):
    """A query tile's saved forward state: q, dO (BM, D) and the per-row LSEs and D = rowsum(dO * O) of both
    branches (BM,)."""
    q = tl.load(Q + (start + offs_m[:, None]) * sq_t + head * sq_h + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + (start + offs_m[:, None]) * sdo_t + head * sdo_h + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    row = head * slse_h + start + offs_m
    lse_fa = tl.load(LSE_FA + row, mask=row_ok, other=0.0)
    lse_sa = tl.load(LSE_SA + row, mask=row_ok, other=0.0)
    d_fa = tl.load(D_FA + row, mask=row_ok, other=0.0)
    d_sa = tl.load(D_SA + row, mask=row_ok, other=0.0)
    return q, do, lse_fa, lse_sa, d_fa, d_sa


@triton.jit
def _pair_bwd_dkdv(
    Q, K, V, DO, DK, DV, LSE_FA, LSE_SA, D_FA, D_SA, Z, STARTS, LENS,
    sq_t, sq_h, sk_t, sk_h, sv_t, sv_h, sdo_t, sdo_h, sdk_t, sdk_h, sdv_t, sdv_h, slse_h,
    n_q_heads, n_kv_heads, groups, max_len, len_bucket, qk_scale, scale, sink, window, round_block, sa_rule,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
):
    """One key tile of one KV head: dK and dV summed over the KV head's query heads (no atomics)."""
    n_tile = tl.program_id(0)
    seq = tl.program_id(1) // n_kv_heads
    kv_head = tl.program_id(1) % n_kv_heads
    length = tl.load(LENS + seq)
    n0 = n_tile * BLOCK_N
    if n0 >= length:
        return
    start = tl.load(STARTS + seq).to(tl.int64)
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    key_ok = offs_n < length
    k = tl.load(K + (start + offs_n[:, None]) * sk_t + kv_head * sk_h + offs_d[None, :], mask=key_ok[:, None], other=0.0)
    v = tl.load(V + (start + offs_n[:, None]) * sv_t + kv_head * sv_h + offs_d[None, :], mask=key_ok[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    n_m_tiles = tl.cdiv(length, BLOCK_M)
    for g in range(0, groups):
        head = kv_head * groups + g
        z = tl.load(Z + seq * n_q_heads + head)
        for m_tile in range(n0 // BLOCK_M, n_m_tiles):
            m0 = m_tile * BLOCK_M
            offs_m = m0 + tl.arange(0, BLOCK_M)
            row_ok = offs_m < length
            q, do, lse_fa, lse_sa, d_fa, d_sa = _query_rows(Q, DO, LSE_FA, LSE_SA, D_FA, D_SA, start, head, offs_m,
                                                            offs_d, row_ok, sq_t, sq_h, sdo_t, sdo_h, slse_h)
            p_fa, p_sa = _pair_probs(q, tl.trans(k), offs_m, offs_n, length, lse_fa, lse_sa, m0, n0, n_tile, sa_rule,
                                     sink, window, round_block, qk_scale, BLOCK_M, BLOCK_N, IEEE, UPCAST)
            p_mix = z * p_fa + (1.0 - z) * p_sa
            dv += mma(tl.trans(p_mix.to(do.dtype)), do, IEEE, UPCAST)
            dp = mma(do, tl.trans(v), IEEE, UPCAST)
            ds = z * p_fa * (dp - d_fa[:, None]) + (1.0 - z) * p_sa * (dp - d_sa[:, None])
            dk += mma(tl.trans(ds.to(q.dtype)), q, IEEE, UPCAST)
    out_offs = (start + offs_n[:, None])
    tl.store(DK + out_offs * sdk_t + kv_head * sdk_h + offs_d[None, :], (dk * scale).to(DK.dtype.element_ty), mask=key_ok[:, None])
    tl.store(DV + out_offs * sdv_t + kv_head * sdv_h + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=key_ok[:, None])


@triton.jit
def _pair_bwd_dq(
    Q, K, V, DO, DQ, LSE_FA, LSE_SA, D_FA, D_SA, Z, STARTS, LENS,
    sq_t, sq_h, sk_t, sk_h, sv_t, sv_h, sdo_t, sdo_h, sdq_t, sdq_h, slse_h,
    n_q_heads, groups, max_len, len_bucket, qk_scale, scale, sink, window, round_block, sa_rule,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
):
    """One query tile of one query head: dQ over its causal key tiles."""
    m_tile = tl.cdiv(max_len, BLOCK_M) - 1 - tl.program_id(0)
    seq = tl.program_id(1) // n_q_heads
    head = tl.program_id(1) % n_q_heads
    length = tl.load(LENS + seq)
    m0 = m_tile * BLOCK_M
    if m0 >= length:
        return
    start = tl.load(STARTS + seq).to(tl.int64)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < length
    q, do, lse_fa, lse_sa, d_fa, d_sa = _query_rows(Q, DO, LSE_FA, LSE_SA, D_FA, D_SA, start, head, offs_m, offs_d,
                                                    row_ok, sq_t, sq_h, sdo_t, sdo_h, slse_h)
    z = tl.load(Z + seq * n_q_heads + head)
    k_base = K + start * sk_t + (head // groups) * sk_h
    v_base = V + start * sv_t + (head // groups) * sv_h
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    hi = tl.cdiv(tl.minimum(length, m0 + BLOCK_M), BLOCK_N)
    for n_tile in range(0, hi):
        n0 = n_tile * BLOCK_N
        offs_n = n0 + tl.arange(0, BLOCK_N)
        key_ok = offs_n < length
        k = tl.load(k_base + offs_n[:, None] * sk_t + offs_d[None, :], mask=key_ok[:, None], other=0.0)
        v = tl.load(v_base + offs_n[:, None] * sv_t + offs_d[None, :], mask=key_ok[:, None], other=0.0)
        p_fa, p_sa = _pair_probs(q, tl.trans(k), offs_m, offs_n, length, lse_fa, lse_sa, m0, n0, n_tile, sa_rule,
                                 sink, window, round_block, qk_scale, BLOCK_M, BLOCK_N, IEEE, UPCAST)
        dp = mma(do, tl.trans(v), IEEE, UPCAST)
        ds = z * p_fa * (dp - d_fa[:, None]) + (1.0 - z) * p_sa * (dp - d_sa[:, None])
        dq += mma(ds.to(k.dtype), k, IEEE, UPCAST)
    tl.store(DQ + (start + offs_m[:, None]) * sdq_t + head * sdq_h + offs_d[None, :], (dq * scale).to(DQ.dtype.element_ty),
             mask=row_ok[:, None])


def _launch(name: str, device, grid_of, *args, **kwargs):
    """Launch one of the pair's kernels: autotuned over tile shapes, warps and stages on CUDA (once per head_dim,
    precision and power-of-two length bucket); fixed small tiles in the interpreter. ``grid_of(BLOCK_M, BLOCK_N)``."""
    kernel = globals()[name]
    if device.type != "cuda":
        kernel[grid_of(INTERPRETER_TILES["BLOCK_M"], INTERPRETER_TILES["BLOCK_N"])](*args, **kwargs, **INTERPRETER_TILES)
        return
    configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in CONFIGS[name]]
    tc.tuned(name, kernel, configs, ["HEAD_DIM", "IEEE", "UPCAST", "len_bucket"])[
        lambda meta: grid_of(meta["BLOCK_M"], meta["BLOCK_N"])](*args, **kwargs)


class _TritonPair(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, z, starts, lens, sink, window, round_block, scale):
        hq, d = q.shape[1], q.shape[2]
        max_len = int(lens.max())
        bucket = triton.next_power_of_2(max_len)
        o_fa, o_sa = utils._alloc(q.shape, q), utils._alloc(q.shape, q)
        lse_fa = utils._alloc((hq, q.shape[0]), q, torch.float32)
        lse_sa = utils._alloc((hq, q.shape[0]), q, torch.float32)
        sa_rule = tc.rule_id(M.streaming(round_block))
        dev = q.device
        st, ln = starts.to(dev), lens.to(dev)
        _launch("_pair_fwd", dev, lambda bm, bn: (math.ceil(max_len / bm), len(starts) * hq),
                q, k, v, o_fa, o_sa, lse_fa, lse_sa, st, ln,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), o_fa.stride(0),
                o_fa.stride(1), lse_fa.stride(0),
                hq, hq // k.shape[1], max_len, bucket, scale * tc.LOG2E, sink, window, round_block or 128, sa_rule,
                HEAD_DIM=d, **tc.dot_flags(q))
        owner = utils.token_owner(starts, lens, q.shape[0], dev)  # computed once, reused by the backward
        utils.fill_outside(o_fa, owner)
        utils.fill_outside(o_sa, owner)
        mix = torch.where(owner[:, None] >= 0, z[owner.clamp(min=0)], torch.zeros((), dtype=z.dtype, device=dev))
        out = (mix[..., None] * o_fa.float() + (1 - mix[..., None]) * o_sa.float()).to(q.dtype)
        ctx.save_for_backward(q, k, v, z, o_fa, o_sa, lse_fa, lse_sa, st, ln, owner)
        ctx.meta = (sink, window, round_block, scale, sa_rule, len(starts), max_len, bucket)
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, z, o_fa, o_sa, lse_fa, lse_sa, st, ln, owner = ctx.saved_tensors
        sink, window, round_block, scale, sa_rule, n_seqs, max_len, bucket = ctx.meta
        d_out = d_out.contiguous()
        hq, hk, d = q.shape[1], k.shape[1], q.shape[2]
        d_fa = (d_out.float() * o_fa.float()).sum(-1).T.contiguous()  # (Hq, N)
        d_sa = (d_out.float() * o_sa.float()).sum(-1).T.contiguous()
        inside = owner >= 0
        dz = torch.zeros(n_seqs, hq, dtype=torch.float32, device=q.device)
        dz.index_add_(0, owner[inside], (d_fa - d_sa).T[inside])
        zf = z.float().contiguous()
        dq, dk, dv = utils._alloc(q.shape, q), utils._alloc(k.shape, k), utils._alloc(v.shape, v)
        common = (sink, window, round_block or 128, sa_rule)
        _launch("_pair_bwd_dkdv", q.device, lambda bm, bn: (math.ceil(max_len / bn), n_seqs * hk),
                q, k, v, d_out, dk, dv, lse_fa, lse_sa, d_fa, d_sa, zf, st, ln,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), d_out.stride(0),
                d_out.stride(1), dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1), lse_fa.stride(0),
                hq, hk, hq // hk, max_len, bucket, scale * tc.LOG2E, scale, *common,
                HEAD_DIM=d, **tc.dot_flags(q))
        _launch("_pair_bwd_dq", q.device, lambda bm, bn: (math.ceil(max_len / bm), n_seqs * hq),
                q, k, v, d_out, dq, lse_fa, lse_sa, d_fa, d_sa, zf, st, ln,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), d_out.stride(0),
                d_out.stride(1), dq.stride(0), dq.stride(1), lse_fa.stride(0),
                hq, hq // hk, max_len, bucket, scale * tc.LOG2E, scale, *common,
                HEAD_DIM=d, **tc.dot_flags(q))
        for grad in (dq, dk, dv):
            utils.fill_outside(grad, owner)
        return dq, dk, dv, dz.to(z.dtype), None, None, None, None, None, None


def pair(q, k, v, z, starts, lens, sink: int, window: int, round_block: Optional[int] = None,
         scale: Optional[float] = None) -> torch.Tensor:
    """The training pair O = z * O_FA + (1 - z) * O_SA on the Triton kernels (arguments of
    ``naive.mixed_pair_reference``; contiguous packed inputs, at least one token), differentiable in q, k, v, z."""
    scale = q.shape[-1]**-0.5 if scale is None else scale
    return _TritonPair.apply(q, k, v, z, starts, lens, sink, window, round_block, scale)
