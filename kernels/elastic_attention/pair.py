"""The differentiable training pair: O = z * FA(q, k, v) + (1 - z) * SA(q, k, v) per (sequence, query head).

``elastic_attention_pair`` is what router training runs in every layer: z is the straight-through routing decision
(hard in the forward, soft gradient), so the backward returns dq, dk, dv and dz = <dO, O_FA - O_SA> summed over the
sequence's tokens. The Triton path (``triton_pair.py``) computes both branches from one pass over Q/K tiles; the
reference path runs the two PyTorch references and lets autograd do the rest.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ._triton import triton
from .modes import STREAMING, STREAMING_BLOCKS
from .ops import (_alloc, _check_tensors, _check_triton, _packed, dot_flags, fill_outside, token_owner,
                  resolve_backend, sequences, tuned)
from .reference import SINK, WINDOW, full_attention, streaming_attention

LOG2E = 1.4426950408889634


INTERPRETER_TILES = {"BLOCK_M": 32, "BLOCK_N": 16}
# (BLOCK_M, BLOCK_N, warps, stages) tried on CUDA per kernel.
CONFIGS = {
    "_pair_fwd": ((64, 64, 4, 2), (64, 64, 4, 3), (64, 64, 8, 2), (128, 64, 8, 2), (64, 128, 8, 2)),
    "_pair_bwd_dkdv": ((64, 64, 4, 2), (64, 64, 8, 2), (64, 128, 8, 2), (32, 128, 8, 2), (64, 64, 4, 3)),
    "_pair_bwd_dq": ((64, 64, 4, 2), (64, 64, 8, 2), (128, 64, 8, 2), (128, 32, 8, 2), (64, 64, 4, 3)),
}


def _launch(name: str, device, grid_of, *args, **kwargs):
    """Launch one of the pair's kernels: autotuned over tile shapes, warps and stages on CUDA (once per head_dim,
    precision and power-of-two length bucket); fixed small tiles in the interpreter. ``grid_of(BLOCK_M, BLOCK_N)``."""
    from . import triton_pair

    kernel = getattr(triton_pair, name)
    if device.type != "cuda":
        kernel[grid_of(INTERPRETER_TILES["BLOCK_M"], INTERPRETER_TILES["BLOCK_N"])](*args, **kwargs, **INTERPRETER_TILES)
        return
    configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in CONFIGS[name]]
    tuned(name, kernel, configs, ["HEAD_DIM", "IEEE", "UPCAST", "len_bucket"])[
        lambda meta: grid_of(meta["BLOCK_M"], meta["BLOCK_N"])](*args, **kwargs)


class _TritonPair(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, z, starts, lens, sink, window, round_block, scale):
        hq, d = q.shape[1], q.shape[2]
        max_len = int(lens.max())
        bucket = triton.next_power_of_2(max_len)
        o_fa, o_sa = _alloc(q.shape, q), _alloc(q.shape, q)
        lse_fa = _alloc((hq, q.shape[0]), q, torch.float32)
        lse_sa = _alloc((hq, q.shape[0]), q, torch.float32)
        sa_mode = STREAMING if round_block is None else STREAMING_BLOCKS
        dev = q.device
        st, ln = starts.to(dev), lens.to(dev)
        _launch("_pair_fwd", dev, lambda bm, bn: (math.ceil(max_len / bm), len(starts) * hq),
                q, k, v, o_fa, o_sa, lse_fa, lse_sa, st, ln,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), o_fa.stride(0),
                o_fa.stride(1), lse_fa.stride(0),
                hq, hq // k.shape[1], max_len, bucket, scale * LOG2E, sink, window, round_block or 128, sa_mode,
                HEAD_DIM=d, **dot_flags(q))
        owner = token_owner(starts, lens, q.shape[0], dev)  # computed once, reused by the backward
        fill_outside(o_fa, owner)
        fill_outside(o_sa, owner)
        mix = torch.where(owner[:, None] >= 0, z[owner.clamp(min=0)], torch.zeros((), dtype=z.dtype, device=dev))
        out = (mix[..., None] * o_fa.float() + (1 - mix[..., None]) * o_sa.float()).to(q.dtype)
        ctx.save_for_backward(q, k, v, z, o_fa, o_sa, lse_fa, lse_sa, st, ln, owner)
        ctx.meta = (sink, window, round_block, scale, sa_mode, len(starts), max_len, bucket)
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, z, o_fa, o_sa, lse_fa, lse_sa, st, ln, owner = ctx.saved_tensors
        sink, window, round_block, scale, sa_mode, n_seqs, max_len, bucket = ctx.meta
        d_out = d_out.contiguous()
        hq, hk, d = q.shape[1], k.shape[1], q.shape[2]
        d_fa = (d_out.float() * o_fa.float()).sum(-1).T.contiguous()  # (Hq, N)
        d_sa = (d_out.float() * o_sa.float()).sum(-1).T.contiguous()
        inside = owner >= 0
        dz = torch.zeros(n_seqs, hq, dtype=torch.float32, device=q.device)
        dz.index_add_(0, owner[inside], (d_fa - d_sa).T[inside])
        zf = z.float().contiguous()
        dq, dk, dv = _alloc(q.shape, q), _alloc(k.shape, k), _alloc(v.shape, v)
        common = (sink, window, round_block or 128, sa_mode)
        _launch("_pair_bwd_dkdv", q.device, lambda bm, bn: (math.ceil(max_len / bn), n_seqs * hk),
                q, k, v, d_out, dk, dv, lse_fa, lse_sa, d_fa, d_sa, zf, st, ln,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), d_out.stride(0),
                d_out.stride(1), dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1), lse_fa.stride(0),
                hq, hk, hq // hk, max_len, bucket, scale * LOG2E, scale, *common,
                HEAD_DIM=d, **dot_flags(q))
        _launch("_pair_bwd_dq", q.device, lambda bm, bn: (math.ceil(max_len / bm), n_seqs * hq),
                q, k, v, d_out, dq, lse_fa, lse_sa, d_fa, d_sa, zf, st, ln,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), d_out.stride(0),
                d_out.stride(1), dq.stride(0), dq.stride(1), lse_fa.stride(0),
                hq, hq // hk, max_len, bucket, scale * LOG2E, scale, *common,
                HEAD_DIM=d, **dot_flags(q))
        for grad in (dq, dk, dv):
            fill_outside(grad, owner)
        return dq, dk, dv, dz.to(z.dtype), None, None, None, None, None, None


def _reference_pair(q, k, v, z, starts, lens, sink, window, round_block, scale):
    out = torch.zeros_like(q)
    parts = []
    for s, (a, t) in enumerate(zip(starts.tolist(), lens.tolist())):
        if t == 0:
            continue
        qs, ks, vs = q[a:a + t][None], k[a:a + t][None], v[a:a + t][None]
        full = full_attention(qs, ks, vs, scale=scale)[0]
        sparse = streaming_attention(qs, ks, vs, sink, window, round_block, scale=scale)[0]
        mix = z[s].to(full.dtype)[None, :, None]
        parts.append((a, t, mix * full + (1 - mix) * sparse))
    if not parts:
        return out
    rows = torch.cat([torch.arange(a, a + t) for a, t, _ in parts]).to(q.device)
    return out.index_put((rows,), torch.cat([p for _, _, p in parts]))


def elastic_attention_pair(q, k, v, z, *, cu_seqlens=None, lengths=None, left_padded: bool = False, sink: int = SINK,
                           window: int = WINDOW, round_block: Optional[int] = None, scale: Optional[float] = None,
                           backend: str = "auto") -> torch.Tensor:
    """Differentiable O = z * O_FA + (1 - z) * O_SA with z (S, Hq) per (sequence, query head) (1 = full).

    SA is token-exact streaming (sink + window), or block-rounded with ``round_block``. Layout as ``elastic_prefill``.
    """
    _check_tensors(q, k, v, packed=q.dim() == 3)
    starts, lens = sequences(q, cu_seqlens, lengths, left_padded)
    hq, d = q.shape[-2], q.shape[-1]
    if z.shape != (len(starts), hq) or not z.is_floating_point():
        raise ValueError(f"z must be floating point (sequences, query heads) = ({len(starts)}, {hq}); "
                         f"got {z.dtype} {tuple(z.shape)}.")
    if sink < 0 or window < 1 or (round_block is not None and round_block < 1):
        raise ValueError(f"sink={sink} >= 0, window={window} >= 1 and round_block={round_block} >= 1 are required.")
    scale = d**-0.5 if scale is None else scale
    qp, kp, vp = _packed(q), _packed(k), _packed(v)
    if resolve_backend(backend, q.device) == "reference":
        return _reference_pair(qp, kp, vp, z, starts, lens, sink, window, round_block, scale).reshape(q.shape)
    _check_triton(q)
    if int(lens.max()) == 0:
        return torch.zeros_like(q) + 0 * z.sum()
    return _TritonPair.apply(qp.contiguous(), kp.contiguous(), vp.contiguous(), z, starts, lens, sink, window,
                             round_block, scale).reshape(q.shape)
