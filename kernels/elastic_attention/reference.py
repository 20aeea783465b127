"""PyTorch references of Elastic Attention's per-head attention modes (the CPU back end and the kernels' oracle).

Layout: q (B, T, Hq, D), k and v (B, T, Hkv, D) with Hq a multiple of Hkv (GQA), causal, one prompt per row
(right padding is the caller's business). Softmax scale 1/sqrt(D) unless given.

- ``full_attention``: dense causal attention.
- ``streaming_attention``: query i sees key j iff j <= i and (j < sink or i - j < window) (token-exact), or, with
  ``block_size``, the official kernel's block-granular version: the sink and window round up to whole blocks and a
  query block sees key block kb iff kb < sink blocks or qb - kb < window blocks (causal inside the diagonal
  block). Computed chunk by chunk over only the keys a chunk can see: O(T * (sink + window)), not a masked O(T^2).
- ``mixed_attention``: every query head in its own mode from a per-(sequence, query head) table (1 = full).
- ``dense_masked_streaming``: the slow obvious O(T^2) version of the streaming pattern, for tests.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

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


def streaming_visible(t: int, sink: int = SINK, window: int = WINDOW, block_size: Optional[int] = None,
                      device=None) -> torch.Tensor:
    """(T, T) bool: which keys each query sees under the streaming pattern (token-exact or block-rounded)."""
    i = torch.arange(t, device=device)[:, None]
    j = torch.arange(t, device=device)[None, :]
    causal = j <= i
    if block_size is None:
        return causal & ((j < sink) | (i - j < window))
    qb, kb = i // block_size, j // block_size
    sink_blocks, window_blocks = math.ceil(sink / block_size), math.ceil(window / block_size)
    return causal & ((kb < sink_blocks) | (qb - kb < window_blocks))


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


def streaming_attention(q, k, v, sink: int = SINK, window: int = WINDOW, block_size: Optional[int] = None,
                        chunk: int = 512, scale: Optional[float] = None) -> torch.Tensor:
    """Sink + local-window causal attention in O(T * (sink + window + chunk)) time and memory."""
    groups = _check(q, k, v)
    if sink < 0 or window < 1:
        raise ValueError(f"sink={sink} must be >= 0 and window={window} >= 1.")
    t = q.shape[1]
    if block_size is not None:
        # Block-rounded: a window of W blocks reaches back to the start of the block W-1 blocks before the query's.
        sink = math.ceil(sink / block_size) * block_size
        chunk = max(block_size, chunk // block_size * block_size)
    out = torch.empty_like(q)
    kx, vx = _expand_kv(k, groups), _expand_kv(v, groups)
    for start in range(0, t, chunk):
        end = min(t, start + chunk)
        if block_size is None:
            lo = max(0, start - window + 1)
        else:
            window_blocks = math.ceil(window / block_size)
            lo = max(0, (start // block_size - window_blocks + 1) * block_size)
        lo = max(lo, min(sink, start))  # local keys start after the sink; the sink is added separately
        key_idx = torch.cat([torch.arange(0, min(sink, lo), device=q.device), torch.arange(lo, end, device=q.device)])
        qi = torch.arange(start, end, device=q.device)[:, None]
        kj = key_idx[None, :]
        if block_size is None:
            visible = (kj <= qi) & ((kj < sink) | (qi - kj < window))
        else:
            visible = (kj <= qi) & ((kj < sink) | (qi // block_size - kj // block_size < math.ceil(window / block_size)))
        o = F.scaled_dot_product_attention(
            q[:, start:end].transpose(1, 2), kx[:, key_idx].transpose(1, 2), vx[:, key_idx].transpose(1, 2),
            attn_mask=visible, scale=scale,
        )
        out[:, start:end] = o.transpose(1, 2)
    return out


def mixed_attention(q, k, v, full_heads: torch.Tensor, sink: int = SINK, window: int = WINDOW,
                    block_size: Optional[int] = None, scale: Optional[float] = None) -> torch.Tensor:
    """Per-(sequence, query head) mode: ``full_heads`` (B, Hq) with 1 = full attention, 0 = streaming.

    Heads sharing a KV head may differ (the table is per query head); each mode runs only on the heads that use it.
    """
    groups = _check(q, k, v)
    b, _, hq, _ = q.shape
    if tuple(full_heads.shape) != (b, hq):
        raise ValueError(f"full_heads must be (B, Hq) = {(b, hq)}; got {tuple(full_heads.shape)}.")
    out = torch.empty_like(q)
    kx, vx = _expand_kv(k, groups), _expand_kv(v, groups)
    for row in range(b):
        full = full_heads[row].bool()
        for mode_heads, fn in ((full, full_attention), (~full, None)):
            heads = mode_heads.nonzero().flatten()
            if heads.numel() == 0:
                continue
            qs, ks, vs = q[row:row + 1, :, heads], kx[row:row + 1, :, heads], vx[row:row + 1, :, heads]
            if fn is None:
                o = streaming_attention(qs, ks, vs, sink, window, block_size, scale=scale)
            else:
                o = full_attention(qs, ks, vs, scale=scale)
            out[row:row + 1, :, heads] = o
    return out
