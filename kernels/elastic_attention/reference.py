"""PyTorch references of Elastic Attention's per-head attention modes (the CPU back end and the kernels' oracle).

Layout: q (B, T, Hq, D), k and v (B, T, Hkv, D) with Hq a multiple of Hkv (GQA), causal, one prompt per row
(right padding is the caller's business). Softmax scale 1/sqrt(D) unless given.

- ``full_attention``: dense causal attention.
- ``streaming_attention``: query i sees key j iff j <= i and (j < sink or i - j < window) (token-exact), or, with
  ``block_size``, the official kernel's block-granular version: the sink and window round up to whole blocks and a
  query block sees key block kb iff kb < sink blocks or qb - kb < window blocks (causal inside the diagonal
  block). Computed chunk by chunk over only the keys a chunk can see: O(T * (sink + window)), not a masked O(T^2).
- ``dense_masked_streaming``: the slow obvious O(T^2) version of the streaming pattern, for tests.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import torch.nn.functional as F

from . import modes
from .backward import attention_backward, reduce_groups

SINK, WINDOW = 128, 2048


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    if q.dim() != 4 or k.shape != v.shape or k.dim() != 4:
        raise ValueError(f"q (B,T,Hq,D) and k, v (B,T,Hkv,D) expected; got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}.")
    if q.shape[0] != k.shape[0] or q.shape[1] != k.shape[1] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on batch, length or head_dim.")
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"query heads ({q.shape[2]}) must be a multiple of KV heads ({k.shape[2]}).")
    return q.shape[2] // k.shape[2]


def _expand_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    return x.repeat_interleave(groups, dim=2) if groups > 1 else x


def full_attention(q, k, v, scale: Optional[float] = None) -> torch.Tensor:
    """Dense causal attention. Returns (B, T, Hq, D) in q's dtype."""
    groups = _check(q, k, v)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), _expand_kv(k, groups).transpose(1, 2), _expand_kv(v, groups).transpose(1, 2),
        is_causal=True, scale=scale,
    )
    return out.transpose(1, 2)


def _streaming_code(block_size: Optional[int]) -> int:
    return modes.STREAMING if block_size is None else modes.STREAMING_BLOCKS


def streaming_visible(t: int, sink: int = SINK, window: int = WINDOW, block_size: Optional[int] = None,
                      device=None) -> torch.Tensor:
    """(T, T) bool: which keys each query sees under the streaming pattern (token-exact or block-rounded)."""
    pos = torch.arange(t, device=device)
    return modes.visible(_streaming_code(block_size), pos[:, None], pos[None, :], sink, window, block_size or 1)


def streaming_keys(i0: int, i1: int, sink: int, window: int, block_size: Optional[int] = None):
    """(keys (nk,) int64, visible (i1 - i0, nk) bool): the keys queries i0..i1-1 can see under the streaming
    pattern (the sink, then the window of the chunk's first query up to its last), with the exact visibility."""
    if block_size is None:
        sink_end, lo = sink, max(0, i0 - window + 1)
    else:
        sink_end = math.ceil(sink / block_size) * block_size
        lo = max(0, (i0 // block_size - math.ceil(window / block_size) + 1) * block_size)
    keys = torch.cat([torch.arange(0, min(sink_end, lo, i1)), torch.arange(min(lo, i1), i1)])
    return keys, modes.visible(_streaming_code(block_size), torch.arange(i0, i1)[:, None], keys[None, :], sink, window,
                               block_size or 1)


def dense_masked_streaming(q, k, v, sink: int = SINK, window: int = WINDOW, block_size: Optional[int] = None,
                           scale: Optional[float] = None) -> torch.Tensor:
    """The obvious O(T^2) masked version of ``streaming_attention`` (tests only)."""
    groups = _check(q, k, v)
    mask = streaming_visible(q.shape[1], sink, window, block_size, q.device)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), _expand_kv(k, groups).transpose(1, 2), _expand_kv(v, groups).transpose(1, 2),
        attn_mask=mask, scale=scale,
    )
    return out.transpose(1, 2)


def _acc(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: at least float32 (bf16/fp16 inputs), float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


def _span(lo: int, hi: int) -> torch.Tensor:
    return torch.arange(lo, max(lo, hi))


def _flash_cpu(q, k, v, causal: bool, scale: Optional[float]):
    """(out, lse) of attention on (B, H, L, D) tensors via the CPU flash kernel."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)
    return out, lse.to(_acc(q.dtype))


def _masked_with_lse(q, k, v, visible, scale: float):
    """(out, lse) of attention with a boolean (Lq, Lk) mask; rows that see nothing get lse = -inf, out = 0."""
    acc = _acc(q.dtype)
    scores = torch.matmul(q.to(acc), k.to(acc).transpose(-1, -2)) * scale
    scores = scores.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)[..., None])
    return torch.matmul(probs, v.to(acc)).to(q.dtype), lse


def _merge(parts):
    """Combine partial attentions over disjoint key sets from their (out, lse): (out, lse) of the union."""
    lse_all = torch.logsumexp(torch.stack([lse for _, lse in parts]), dim=0)
    out = sum(o.to(lse_all.dtype) * torch.exp(lse - lse_all)[..., None] for o, lse in parts)
    return out, lse_all


def streaming_attention(q, k, v, sink: int = SINK, window: int = WINDOW, block_size: Optional[int] = None,
                        chunk: int = 256, scale: Optional[float] = None) -> torch.Tensor:
    """Sink + local-window causal attention in O(T * (sink + window + chunk)) time and memory (on the CPU; other
    devices take the masked O(T^2) version). Differentiable in q, k and v: the backward recomputes each query
    chunk's probabilities from the forward's log-sum-exp (``backward.py``), since the flash kernel's lse that the
    forward merges by carries no gradient."""
    _check(q, k, v)
    if sink < 0 or window < 1:
        raise ValueError(f"sink={sink} must be >= 0 and window={window} >= 1.")
    if q.device.type != "cpu":
        return dense_masked_streaming(q, k, v, sink, window, block_size, scale)
    scale = q.shape[-1]**-0.5 if scale is None else scale
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        return _StreamingCPU.apply(q, k, v, sink, window, block_size, chunk, scale)
    return _streaming_cpu(q, k, v, sink, window, block_size, chunk, scale)[0]


def _streaming_cpu(q, k, v, sink: int, window: int, block_size: Optional[int], chunk: int, scale: float):
    """(out (B, T, Hq, D), lse (B, T, Hq)) of streaming attention on the CPU, no autograd.

    Per query chunk [s, e) the visible keys split into three disjoint sets, each attended with the cheapest exact
    method and merged by log-sum-exp: keys every query of the chunk sees (the sink and the shared part of the
    window: mask-free flash attention, KV heads shared by their query heads without copying), the window's lower
    edge (a small masked block), and the chunk itself (causal flash attention).
    """
    groups = q.shape[2] // k.shape[2]
    b, t, hq, d = q.shape
    hk = k.shape[2]
    if block_size is not None:
        # Block granularity: a query block sees whole key blocks, so chunks are single blocks and the sink and the
        # window round up to whole blocks.
        chunk = block_size
        sink = math.ceil(sink / block_size) * block_size
        window_span = (math.ceil(window / block_size) - 1) * block_size  # whole blocks before the query's own
    else:
        chunk = min(chunk, window)  # the chunk's own keys must all lie inside every query's window
    # (B, H, T, D), contiguous once, so every key range below is a view and not a gather.
    qh, kh, vh = q.transpose(1, 2).contiguous(), k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()
    out = torch.empty_like(qh)
    lse_out = torch.empty(b, hq, t, dtype=_acc(q.dtype))
    for s in range(0, t, chunk):
        e = min(t, s + chunk)
        c = e - s
        q_kv = qh[:, :, s:e].reshape(b, hk, groups * c, d)  # query heads grouped under their KV head
        parts = []
        edge_lo = s - window + 1
        if block_size is None and edge_lo >= sink and edge_lo + c <= s:
            # Window's lower edge, keys [s-W+1, e-W+1): query a of the chunk sees key m iff m >= a. Reversing both
            # orders turns that into ordinary causal attention, so flash attention handles it too.
            edge = _span(edge_lo, edge_lo + c)
            qr = qh[:, :, s:e].flip(2)
            kr = _expand_kv(kh[:, :, edge].flip(2).transpose(1, 2), groups).transpose(1, 2)
            vr = _expand_kv(vh[:, :, edge].flip(2).transpose(1, 2), groups).transpose(1, 2)
            o, lse = _flash_cpu(qr, kr, vr, True, scale)
            parts.append((o.flip(2), lse.flip(2)))
            shared = [(0, sink), (edge_lo + c, s)]
        else:
            if block_size is None:
                shared_lo = max(sink, e - window)      # keys >= this (and < s) are seen by every query of the chunk
                masked_lo = max(sink, edge_lo)         # keys in [masked_lo, shared_lo) are seen by some queries only
            else:
                shared_lo = masked_lo = max(sink, s - window_span)
            shared = [(0, min(sink, s)), (max(shared_lo, min(sink, s)), s)]
            ks = _span(masked_lo, min(shared_lo, s))
            if ks.numel():
                qi = torch.arange(s, e)[:, None]
                visible = (ks[None, :] >= qi - window + 1).repeat(groups, 1)
                o, lse = _masked_with_lse(q_kv, kh[:, :, ks], vh[:, :, ks], visible, scale)
                parts.append((o.reshape(b, hq, c, d), lse.reshape(b, hq, c)))
        for lo, hi in shared:
            if hi > lo:
                o, lse = _flash_cpu(q_kv, kh[:, :, lo:hi], vh[:, :, lo:hi], False, scale)
                parts.append((o.reshape(b, hq, c, d), lse.reshape(b, hq, c)))
        o, lse = _flash_cpu(qh[:, :, s:e], _expand_kv(kh[:, :, s:e].transpose(1, 2), groups).transpose(1, 2),
                            _expand_kv(vh[:, :, s:e].transpose(1, 2), groups).transpose(1, 2), True, scale)
        parts.append((o, lse))
        o, lse = _merge(parts) if len(parts) > 1 else parts[0]
        out[:, :, s:e] = o.to(q.dtype)
        lse_out[:, :, s:e] = lse
    return out.transpose(1, 2), lse_out.transpose(1, 2)


class _StreamingCPU(torch.autograd.Function):
    """The CPU flash path with an exact backward: recomputed chunk by chunk from the merged log-sum-exp."""

    @staticmethod
    def forward(ctx, q, k, v, sink, window, block_size, chunk, scale):
        out, lse = _streaming_cpu(q, k, v, sink, window, block_size, chunk, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.meta = (sink, window, block_size, chunk, scale)
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, out, lse = ctx.saved_tensors
        sink, window, block_size, chunk, scale = ctx.meta
        groups = q.shape[2] // k.shape[2]
        keys_of = functools.partial(streaming_keys, sink=sink, window=window, block_size=block_size)
        dq, dk, dv = [], [], []
        for row in range(q.shape[0]):
            kx, vx = k[row].repeat_interleave(groups, 1), v[row].repeat_interleave(groups, 1)
            g = attention_backward(q[row], kx, vx, out[row], lse[row], d_out[row], scale, keys_of, chunk)
            dq.append(g[0])
            dk.append(reduce_groups(g[1], groups))
            dv.append(reduce_groups(g[2], groups))
        return (torch.stack(dq).to(q.dtype), torch.stack(dk).to(k.dtype), torch.stack(dv).to(v.dtype),
                None, None, None, None, None)
