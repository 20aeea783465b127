"""The CPU back end of Elastic Attention (what ``backend="auto"`` runs off CUDA): each mode's fast path, dispatched
through the registry (``modes.py``); a mode without one attends through its ``visible`` rule (masked, O(T^2)).

Padded layout for the attention functions: q (B, T, Hq, D), k and v (B, T, Hkv, D), causal, one prompt per row.
Softmax scale 1/sqrt(D) unless given.

- ``full_attention``: dense causal attention (SDPA).
- ``streaming_attention``: query i sees key j iff j <= i and (j < sink or i - j < window) (token-exact), or, with
  ``block_size``, the official kernel's block-rounded version. Computed chunk by chunk over only the keys a chunk can
  see, merged by log-sum-exp: O(T * (sink + window)), not a masked O(T^2). Exact backward from the log-sum-exp.
- ``block_sparse_attention``: causal attention restricted to a block mask's kept blocks (masked SDPA).
- ``masked_attention``: any mode through its ``visible`` rule.

``prefill`` and ``pair`` take the packed arguments of ``naive.prefill_reference`` / ``naive.mixed_pair_reference``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from . import modes as M
from . import naive
from .backward import attention_backward, reduce_groups
from .utils import SINK, WINDOW, acc_dtype, check_bthd, expand_kv
from .xattention import BLOCK


def full_attention(q, k, v, scale: Optional[float] = None) -> torch.Tensor:
    """Dense causal attention. Returns (B, T, Hq, D) in q's dtype."""
    groups = check_bthd(q, k, v)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), expand_kv(k, groups).transpose(1, 2), expand_kv(v, groups).transpose(1, 2),
        is_causal=True, scale=scale,
    )
    return out.transpose(1, 2)


def block_sparse_attention(q, k, v, block_mask: torch.Tensor, block: int = BLOCK, scale=None) -> torch.Tensor:
    """Causal attention restricted to the kept (query block, key block) pairs; block_mask (B, Hq, nb, nb)."""
    groups = check_bthd(q, k, v)
    b, t, hq, d = q.shape
    token_mask = block_mask.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)[:, :, :t, :t]
    token_mask = token_mask & torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    out = F.scaled_dot_product_attention(q.transpose(1, 2), expand_kv(k, groups).transpose(1, 2),
                                         expand_kv(v, groups).transpose(1, 2), attn_mask=token_mask, scale=scale)
    return out.transpose(1, 2)


def masked_attention(q, k, v, mode: M.Mode, settings: M.Settings, scale: float) -> torch.Tensor:
    """Attention of one mode through its ``visible`` rule: q (B, T, Hq, D), k, v (B, T, Hkv, D); a
    ``settings.block_mask`` carries (B, Hq) in front. Differentiable; rows that see nothing give 0 (no NaN, in the
    gradient either). O(T^2) memory per head: the fallback of modes without a fast path."""
    groups = check_bthd(q, k, v)
    pos = torch.arange(q.shape[1], device=q.device)
    seen = mode.visible(pos[:, None], pos[None, :], settings).to(q.device)  # (T, T) or (B, Hq, T, T)
    acc = acc_dtype(q.dtype)
    k, v = expand_kv(k, groups), expand_kv(v, groups)
    scores = torch.matmul(q.transpose(1, 2).to(acc), k.transpose(1, 2).to(acc).transpose(-1, -2)) * scale
    empty = ~seen.any(-1, keepdim=True)  # softmax over an all -inf row would be NaN
    scores = scores.masked_fill(~seen, float("-inf")).masked_fill(empty, 0.0)
    probs = torch.softmax(scores, dim=-1).masked_fill(~seen, 0.0)
    return torch.matmul(probs, v.transpose(1, 2).to(acc)).transpose(1, 2).to(q.dtype)


def _span(lo: int, hi: int) -> torch.Tensor:
    return torch.arange(lo, max(lo, hi))


def _flash_cpu(q, k, v, causal: bool, scale: Optional[float]):
    """(out, lse) of attention on (B, H, L, D) tensors via the CPU flash kernel."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)
    return out, lse.to(acc_dtype(q.dtype))


def _masked_with_lse(q, k, v, visible, scale: float):
    """(out, lse) of attention with a boolean (Lq, Lk) mask; rows that see nothing get lse = -inf, out = 0."""
    acc = acc_dtype(q.dtype)
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
    check_bthd(q, k, v)
    if sink < 0 or window < 1:
        raise ValueError(f"sink={sink} must be >= 0 and window={window} >= 1.")
    if q.device.type != "cpu":
        return naive.dense_masked_streaming(q, k, v, sink, window, block_size, scale)
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
    lse_out = torch.empty(b, hq, t, dtype=acc_dtype(q.dtype))
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
            kr = expand_kv(kh[:, :, edge].flip(2).transpose(1, 2), groups).transpose(1, 2)
            vr = expand_kv(vh[:, :, edge].flip(2).transpose(1, 2), groups).transpose(1, 2)
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
        o, lse = _flash_cpu(qh[:, :, s:e], expand_kv(kh[:, :, s:e].transpose(1, 2), groups).transpose(1, 2),
                            expand_kv(vh[:, :, s:e].transpose(1, 2), groups).transpose(1, 2), True, scale)
        parts.append((o, lse))
        o, lse = _merge(parts) if len(parts) > 1 else parts[0]
        out[:, :, s:e] = o.to(q.dtype)
        lse_out[:, :, s:e] = lse
    return out.transpose(1, 2), lse_out.transpose(1, 2)


class _StreamingCPU(torch.autograd.Function):
    """The CPU flash path with an exact backward: recomputed chunk by chunk from the merged log-sum-exp, over the
    streaming mode's key span (``Mode.key_span``)."""

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
        span, settings = M.streaming(block_size).key_span, M.Settings(sink, window, block_size or 1)
        dq, dk, dv = [], [], []
        for row in range(q.shape[0]):
            kx, vx = k[row].repeat_interleave(groups, 1), v[row].repeat_interleave(groups, 1)
            g = attention_backward(q[row], kx, vx, out[row], lse[row], d_out[row], scale,
                                   lambda i0, i1: span(i0, i1, settings), chunk)
            dq.append(g[0])
            dk.append(reduce_groups(g[1], groups))
            dv.append(reduce_groups(g[2], groups))
        return (torch.stack(dq).to(q.dtype), torch.stack(dk).to(k.dtype), torch.stack(dv).to(v.dtype),
                None, None, None, None, None)


# The built-in modes' fast paths, named by ``Mode.cpu``: (q (B, T, Hq, D), k, v (B, T, Hkv, D), settings, scale) -> O
# (B, T, Hq, D), differentiable; ``settings.block_mask`` (B, Hq, nqb, nkb) for a mode that reads one.
FAST_PATHS = {
    "full": lambda q, k, v, s, scale: full_attention(q, k, v, scale=scale),
    "streaming": lambda q, k, v, s, scale: streaming_attention(q, k, v, s.sink, s.window, None, scale=scale),
    "streaming_blocks": lambda q, k, v, s, scale: streaming_attention(q, k, v, s.sink, s.window, s.round_block,
                                                                      scale=scale),
    "block_sparse": lambda q, k, v, s, scale: block_sparse_attention(q, k, v, s.block_mask, s.mask_block,
                                                                     scale=scale),
}


def _fast_path(mode: M.Mode):
    """The callable that attends in ``mode`` on the CPU: its fast path, or masked attention through ``visible``."""
    if mode.cpu is None:
        return lambda q, k, v, s, scale: masked_attention(q, k, v, mode, s, scale)
    if callable(mode.cpu):
        return mode.cpu
    if mode.cpu not in FAST_PATHS:
        raise ValueError(f"mode {mode.name!r} names the CPU fast path {mode.cpu!r}, which cpu.FAST_PATHS does not "
                         f"have ({sorted(FAST_PATHS)}); give a callable, or None for masked attention.")
    return FAST_PATHS[mode.cpu]


def prefill(q, k, v, modes, starts, lens, sink: int, window: int, round_block: int = 128,
            block_mask: Optional[torch.Tensor] = None, mask_block: Optional[int] = None,
            scale: Optional[float] = None, dense_from: Optional[torch.Tensor] = None) -> torch.Tensor:
    """O (N, Hq, D) of the mode-table prefill (arguments of ``naive.prefill_reference``): per sequence, the heads
    of each mode together through its fast path; rows from ``dense_from`` on of heads that are not dense from a
    full pass over those heads. Differentiable in q, k, v."""
    paths = {mode.code: (mode, _fast_path(mode)) for mode in M.check_codes(modes)}  # refuse before computing
    scale = q.shape[-1]**-0.5 if scale is None else scale
    groups = q.shape[1] // k.shape[1]
    out = torch.zeros_like(q)
    for s, (a, t) in enumerate(zip(starts.tolist(), lens.tolist())):
        if t == 0:
            continue
        qs, ks, vs = q[a:a + t][None], k[a:a + t].repeat_interleave(groups, 1)[None], v[a:a + t].repeat_interleave(groups, 1)[None]
        for code in sorted(set(modes[s].tolist())):
            mode, attend = paths[code]
            heads = (modes[s] == code).nonzero().flatten()
            args = (qs[:, :, heads], ks[:, :, heads], vs[:, :, heads])
            mask = block_mask[s:s + 1, heads.to(block_mask.device)].cpu() if mode.needs_block_mask else None
            o = attend(*args, M.Settings(sink, window, round_block, mask, mask_block), scale)
            if not mode.dense and dense_from is not None and int(dense_from[s]) < t:
                p = int(dense_from[s])  # out of place: o may be an autograd Function's saved output
                o = torch.cat([o[:, :p], full_attention(*args, scale=scale)[:, p:]], dim=1)
            out[a:a + t, heads.to(q.device)] = o[0]
    return out


def pair(q, k, v, z, starts, lens, sink: int, window: int, round_block: Optional[int] = None,
         scale: Optional[float] = None) -> torch.Tensor:
    """The training pair O = z * O_FA + (1 - z) * O_SA (arguments of ``naive.mixed_pair_reference``): both
    branches through their fast paths, autograd for the gradients (dz included)."""
    full, sparse = _fast_path(M.get(M.FULL)), _fast_path(M.streaming(round_block))
    settings = M.Settings(sink, window, round_block or 1)
    scale = q.shape[-1]**-0.5 if scale is None else scale
    out = torch.zeros_like(q)
    parts = []
    for s, (a, t) in enumerate(zip(starts.tolist(), lens.tolist())):
        if t == 0:
            continue
        qs, ks, vs = q[a:a + t][None], k[a:a + t][None], v[a:a + t][None]
        o_fa, o_sa = full(qs, ks, vs, settings, scale)[0], sparse(qs, ks, vs, settings, scale)[0]
        mix = z[s].to(o_fa.dtype)[None, :, None]
        parts.append((a, t, mix * o_fa + (1 - mix) * o_sa))
    if not parts:
        return out
    rows = torch.cat([torch.arange(a, a + t) for a, t, _ in parts]).to(q.device)
    return out.index_put((rows,), torch.cat([p for _, _, p in parts]))
