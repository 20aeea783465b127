"""Autograd for the Triton mode-table prefill: the kernel's forward, an exact backward recomputed from its
log-sum-exp (``backward.attention_backward``), one sequence and one mode's heads at a time.

What needs it: a policy update through an elastic actor (``actor_rollout_ref.model.override_config``) runs the
prefill with gradients on; without this the kernel's output carried no gradient, so the attention path of the
policy gradient was silently zero on CUDA. The backward is PyTorch (O(chunk x visible keys) memory per step); a
fused mode-table backward kernel is a speed item, not a correctness one.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import modes as M
from .backward import attention_backward
from .reference import streaming_keys


def mode_keys(mode: int, i0: int, i1: int, sink: int, window: int, round_block: int, dense_from: int,
              block_mask: Optional[torch.Tensor] = None, mask_block: Optional[int] = None):
    """(keys (nk,), visible (c, nk) or (H, c, nk)) for queries i0..i1-1 of heads in ``mode`` (``keys_of`` of
    ``attention_backward``): ``modes.visible``, and every earlier key for rows from ``dense_from`` on. Streaming
    chunks wholly before ``dense_from`` visit only their sink and window keys."""
    streaming = mode in (M.STREAMING, M.STREAMING_BLOCKS)
    if streaming and i1 - 1 < dense_from:
        return streaming_keys(i0, i1, sink, window, None if mode == M.STREAMING else round_block)
    rows, keys = torch.arange(i0, i1)[:, None], torch.arange(0, i1)
    mask = None if block_mask is None else block_mask.cpu()
    seen = M.visible(mode, rows, keys[None, :], sink, window, round_block, mask, mask_block)
    return keys, seen | ((rows >= dense_from) & (keys[None, :] <= rows))


class TritonPrefill(torch.autograd.Function):
    """(out (N, Hq, D), lse (Hq, N)) of ``ops._triton_prefill``, both differentiable in q, k and v."""

    @staticmethod
    def forward(ctx, q, k, v, modes, starts, lens, dense_from, block_mask, mask_block, sink, window, round_block,
                scale):
        from .ops import _triton_prefill

        out, lse = _triton_prefill(q, k, v, modes, starts, lens, dense_from, block_mask, mask_block, sink, window,
                                   round_block, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.meta = (modes.cpu(), starts, lens, dense_from, block_mask, mask_block, sink, window, round_block, scale)
        return out, lse

    @staticmethod
    def backward(ctx, d_out, d_lse):
        q, k, v, out, lse = ctx.saved_tensors
        modes, starts, lens, dense_from, block_mask, mask_block, sink, window, round_block, scale = ctx.meta
        groups = q.shape[1] // k.shape[1]
        dq = torch.zeros_like(q, dtype=torch.promote_types(q.dtype, torch.float32))
        dk = torch.zeros(k.shape, dtype=dq.dtype, device=k.device)
        dv = torch.zeros_like(dk)
        for s, (a, t) in enumerate(zip(starts.tolist(), lens.tolist())):
            for mode in sorted(set(modes[s].tolist())):
                heads = (modes[s] == mode).nonzero().flatten().to(q.device)
                kv = heads // groups
                bm = block_mask[s, heads] if mode == M.BLOCK_SPARSE else None

                def keys_of(i0, i1, mode=mode, bm=bm, s=s):
                    return mode_keys(mode, i0, i1, sink, window, round_block, int(dense_from[s]), bm, mask_block)

                rows = slice(a, a + t)
                g_q, g_k, g_v = attention_backward(
                    q[rows][:, heads], k[rows][:, kv], v[rows][:, kv], out[rows][:, heads], lse[heads, rows].T,
                    d_out[rows][:, heads], scale, keys_of, d_lse=None if d_lse is None else d_lse[heads, rows].T)
                dq[rows, heads] = g_q
                dk[rows] = dk[rows].index_add(1, kv, g_k)
                dv[rows] = dv[rows].index_add(1, kv, g_v)
        return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)) + (None,) * 10
