"""The slow, obvious oracles of every Elastic Attention op: one sequence and one head at a time, an explicit
(T, T) visibility from the registry's ``Mode.visible`` (``modes.py``), float32-or-wider softmax. Every test compares
against these (in float64), and float64 autograd through them is the oracle of every gradient.

Packed layout as the kernels: q (N, Hq, D), k and v (N, Hkv, D), sequences given by ``starts`` and ``lens`` (S,);
the arguments are those of the CPU and Triton back ends (``cpu.prefill``, ``triton_prefill.prefill``, ...).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from . import modes as M
from .utils import SINK, WINDOW, acc_dtype, check_bthd, expand_kv


def mode_visibility(mode: int, t: int, sink: int, window: int, round_block: int,
                    block_mask: Optional[torch.Tensor] = None, mask_block: Optional[int] = None,
                    device=None) -> torch.Tensor:
    """(T, T) bool: which keys each query sees in ``mode`` (``Mode.visible``), causal included. ``block_mask``
    (nqb, nkb) for a mode that reads one, at ``mask_block`` tokens per block."""
    pos = torch.arange(t, device=device)
    mask = None if block_mask is None else block_mask.to(device)
    return M.visible(mode, pos[:, None], pos[None, :], sink, window, round_block, mask, mask_block)


def _attend(q, k, v, visible, scale):
    """(out, lse) over one head: q (T, D), k/v (T, D), visible (T, T). Rows that see nothing: out 0, lse -inf."""
    acc = acc_dtype(q.dtype)
    scores = (q.to(acc) @ k.to(acc).T) * scale
    scores = scores.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)[:, None])
    return probs @ v.to(acc), lse


def prefill_reference(q, k, v, modes, starts, lens, sink: int, window: int, round_block: int = 128,
                      block_mask: Optional[torch.Tensor] = None, mask_block: Optional[int] = None,
                      scale: Optional[float] = None, dense_from: Optional[torch.Tensor] = None):
    """(O (N, Hq, D) in q's dtype, LSE (Hq, N) float32) of the mode-table prefill. Rows outside every sequence are
    left at zero (LSE -inf). ``block_mask`` (S, Hq, nqb, nkb) where a head's mode reads one. ``dense_from`` (S,):
    query rows from that position on see every earlier key whatever the head's mode."""
    M.check_codes(modes)  # an unknown code fails here, before any head is computed
    n, hq, d = q.shape
    groups = hq // k.shape[1]
    scale = d**-0.5 if scale is None else scale
    out = torch.zeros_like(q)
    lse_all = torch.full((hq, n), float("-inf"), dtype=torch.float32, device=q.device)
    for s in range(len(starts)):
        a, t = int(starts[s]), int(lens[s])
        for h in range(hq):
            mode = M.get(modes[s, h])
            bm = block_mask[s, h] if mode.needs_block_mask else None
            visible = mode_visibility(mode.code, t, sink, window, round_block, bm, mask_block, q.device)
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
    full_modes = torch.full((len(starts), hq), M.FULL)
    sparse_modes = torch.full((len(starts), hq), M.streaming(round_block).code)
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
    decode with the ``sink_window`` rule (``modes.DECODE_RULES``), the others see the whole cache. Returns
    (B, Hq, D)."""
    b, hq, d = q.shape
    groups = hq // k_cache.shape[2]
    scale = d**-0.5 if scale is None else scale
    settings = M.Settings(sink=sink, window=window)
    out = torch.zeros_like(q)
    for row in range(b):
        t = int(cache_lens[row])
        j = torch.arange(t, device=q.device)
        for h in range(hq):
            rule = M.DECODE_RULES["sink_window" if bool(sparse_heads[row, h]) else "dense"]
            o, _ = _attend(q[row, h][None], k_cache[row, :t, h // groups], v_cache[row, :t, h // groups],
                           rule(j, t, settings)[None], scale)
            out[row, h] = o[0].to(q.dtype)
    return out


def streaming_visible(t: int, sink: int = SINK, window: int = WINDOW, block_size: Optional[int] = None,
                      device=None) -> torch.Tensor:
    """(T, T) bool: which keys each query sees under the streaming pattern (token-exact or block-rounded)."""
    pos = torch.arange(t, device=device)
    return M.streaming(block_size).visible(pos[:, None], pos[None, :], M.Settings(sink, window, block_size or 1))


def dense_masked_streaming(q, k, v, sink: int = SINK, window: int = WINDOW, block_size: Optional[int] = None,
                           scale: Optional[float] = None) -> torch.Tensor:
    """The obvious O(T^2) masked version of ``cpu.streaming_attention`` on padded (B, T, H, D) inputs."""
    groups = check_bthd(q, k, v)
    mask = streaming_visible(q.shape[1], sink, window, block_size, q.device)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), expand_kv(k, groups).transpose(1, 2), expand_kv(v, groups).transpose(1, 2),
        attn_mask=mask, scale=scale,
    )
    return out.transpose(1, 2)
