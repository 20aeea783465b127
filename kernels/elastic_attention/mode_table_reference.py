"""Slow, obvious PyTorch references of the Triton kernels' contracts (the oracle of their tests and the CPU back end
of ``ops.py``): one sequence and one head at a time, an explicit (T, T) visibility mask, float32-or-wider softmax.

Packed layout as the kernels: q (N, Hq, D), k and v (N, Hkv, D), sequences given by ``starts`` and ``lens`` (S,).
"""

from __future__ import annotations

from typing import Optional

import torch

from . import modes
from .modes import BLOCK_SPARSE, FULL, STREAMING, STREAMING_BLOCKS
from .reference import _acc


def mode_visibility(mode: int, t: int, sink: int, window: int, round_block: int,
                    block_mask: Optional[torch.Tensor] = None, mask_block: Optional[int] = None,
                    device=None) -> torch.Tensor:
    """(T, T) bool: which keys each query sees in ``mode`` (``modes.visible``), causal included. ``block_mask``
    (nqb, nkb) for BLOCK_SPARSE, at ``mask_block`` tokens per block."""
    pos = torch.arange(t, device=device)
    mask = None if block_mask is None else block_mask.to(device)
    return modes.visible(mode, pos[:, None], pos[None, :], sink, window, round_block, mask, mask_block)


def _attend(q, k, v, visible, scale):
    """(out, lse) over one head: q (T, D), k/v (T, D), visible (T, T). Rows that see nothing: out 0, lse -inf."""
    acc = _acc(q.dtype)
    scores = (q.to(acc) @ k.to(acc).T) * scale
    scores = scores.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)[:, None])
    return probs @ v.to(acc), lse


def prefill_reference(q, k, v, modes, starts, lens, sink: int, window: int, round_block: int = 128,
                      block_mask: Optional[torch.Tensor] = None, mask_block: Optional[int] = None,
                      scale: Optional[float] = None, dense_from: Optional[torch.Tensor] = None):
    """(O (N, Hq, D) in q's dtype, LSE (Hq, N) float32) of the mode-table prefill. Rows outside every sequence are
    left at zero (LSE -inf). ``block_mask`` (S, Hq, nqb, nkb) where a head uses BLOCK_SPARSE. ``dense_from`` (S,):
    query rows from that position on see every earlier key whatever the head's mode."""
    n, hq, d = q.shape
    groups = hq // k.shape[1]
    scale = d**-0.5 if scale is None else scale
    out = torch.zeros_like(q)
    lse_all = torch.full((hq, n), float("-inf"), dtype=torch.float32, device=q.device)
    for s in range(len(starts)):
        a, t = int(starts[s]), int(lens[s])
        for h in range(hq):
            mode = int(modes[s, h])
            bm = block_mask[s, h] if mode == BLOCK_SPARSE else None
            visible = mode_visibility(mode, t, sink, window, round_block, bm, mask_block, q.device)
            if dense_from is not None:
                rows = torch.arange(t, device=q.device) >= int(dense_from[s])
                visible = visible | (rows[:, None] & torch.ones(t, t, dtype=torch.bool, device=q.device).tril())
            o, lse = _attend(q[a:a + t, h], k[a:a + t, h // groups], v[a:a + t, h // groups], visible, scale)
            out[a:a + t, h] = o.to(q.dtype)
            lse_all[h, a:a + t] = lse.float()
    return out, lse_all


def pair_reference(q, k, v, starts, lens, sink: int, window: int, round_block: Optional[int] = None,
                   scale: Optional[float] = None):
    """(O_FA, O_SA) (N, Hq, D): full attention and the streaming mode (token-exact, or block-rounded with
    ``round_block``) of every head; the training pair's forward."""
    hq = q.shape[1]
    sparse = STREAMING if round_block is None else STREAMING_BLOCKS
    full_modes = torch.full((len(starts), hq), FULL)
    sparse_modes = torch.full((len(starts), hq), sparse)
    o_fa, _ = prefill_reference(q, k, v, full_modes, starts, lens, sink, window, round_block or 128, scale=scale)
    o_sa, _ = prefill_reference(q, k, v, sparse_modes, starts, lens, sink, window, round_block or 128, scale=scale)
    return o_fa, o_sa


def mixed_pair_reference(q, k, v, z, starts, lens, sink: int, window: int, round_block: Optional[int] = None,
                         scale: Optional[float] = None):
    """z (S, Hq) mixes the pair per (sequence, head): O = z * O_FA + (1 - z) * O_SA; differentiable in every input
    (autograd through the explicit softmax), the oracle of the fused backward."""
    o_fa, o_sa = pair_reference(q, k, v, starts, lens, sink, window, round_block, scale)
    mix = torch.zeros(q.shape[0], q.shape[1], 1, dtype=o_fa.dtype, device=q.device)
    for s in range(len(starts)):
        a, t = int(starts[s]), int(lens[s])
        mix[a:a + t] = z[s].to(o_fa.dtype)[:, None].expand(t, -1, -1)
    return mix * o_fa + (1 - mix) * o_sa


def decode_reference(q, k_cache, v_cache, cache_lens, sparse_heads, sink: int, window: int,
                     scale: Optional[float] = None):
    """One new token per sequence: q (B, Hq, D) against k/v_cache (B, T, Hkv, D) holding ``cache_lens`` (B,) valid
    positions (the new token's own key included, at position len - 1). ``sparse_heads`` (B, Hq) bool: those heads
    see only keys j < sink or len - 1 - j < window. Returns (B, Hq, D)."""
    b, hq, d = q.shape
    groups = hq // k_cache.shape[2]
    scale = d**-0.5 if scale is None else scale
    out = torch.zeros_like(q)
    for row in range(b):
        t = int(cache_lens[row])
        j = torch.arange(t, device=q.device)
        for h in range(hq):
            visible = torch.ones(t, dtype=torch.bool, device=q.device)
            if bool(sparse_heads[row, h]):
                visible = (j < sink) | (t - 1 - j < window)
            o, _ = _attend(q[row, h][None], k_cache[row, :t, h // groups], v_cache[row, :t, h // groups],
                           visible[None], scale)
            out[row, h] = o[0].to(q.dtype)
    return out
