"""Sparsity metrics of Elastic Attention decisions.

- Omega_MSR (model sparsity ratio): the share of (layer, KV head) pairs routed to the sparse mode, per sequence.
- Omega_ESR (effective sparsity ratio): the share of causal query-key pairs a sequence's attention skips, averaged
  over (layer, query head): each head skips 1 - (pairs its mode sees / causal pairs at the sequence's length), read
  from the registry (``modes.py``): a ``dense`` mode skips nothing; a mode that ``needs_block_mask`` skips what its
  head's block mask drops (XAttention); any other mode skips what its ``visible`` rule hides (a streaming head on a
  prompt shorter than sink + window: nothing). Under XA-SSA both modes skip, so Omega_ESR can exceed Omega_MSR's
  share.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from verl_ext.kernels.elastic_attention import modes as M


def msr(decisions: torch.Tensor) -> torch.Tensor:
    """decisions (B, L, H) or (B, H) with 1 = retrieval (full) -> (B,) Omega_MSR, the share of sparse (layer,
    KV head) pairs. The one definition: hard decisions for reports, straight-through ones (differentiable) for the
    training penalty."""
    return 1.0 - decisions.to(torch.promote_types(decisions.dtype, torch.float32)).flatten(1).mean(dim=1)


def streaming_pair_fraction(length: int, sink: int, window: int) -> float:
    """Streaming-visible causal pairs / causal pairs at ``length`` tokens (token-exact pattern), in closed form (a
    hand check of ``rule_pair_fraction``)."""
    causal = length * (length + 1) / 2
    visible = sum(min(i + 1, min(sink, i + 1) + min(window, max(0, i + 1 - sink))) for i in range(length))
    return visible / causal


def rule_pair_fraction(code: int, length: int, sink: int, window: int, round_block: int, chunk: int = 1024) -> float:
    """Visible / causal pairs of a mode's position rule (``modes.visible``), counted in row chunks (bounded
    memory)."""
    seen = 0
    keys = torch.arange(length)[None, :]
    for i0 in range(0, length, chunk):
        rows = torch.arange(i0, min(i0 + chunk, length))[:, None]
        seen += int(M.visible(code, rows, keys, sink, window, round_block).sum())
    return seen / (length * (length + 1) / 2)


def block_pair_fraction(block_mask: torch.Tensor, mask_block: int, length: int) -> torch.Tensor:
    """(..., nb, nb) kept blocks -> (...,) visible / causal pairs: each kept (query block, key block) tile counts
    its causal pairs inside ``length`` tokens."""
    nb = -(-length // mask_block)
    sizes = torch.full((nb,), mask_block, dtype=torch.float64)
    sizes[-1] = length - mask_block * (nb - 1)
    pairs = sizes[:, None] * sizes[None, :]
    pairs = torch.where(torch.ones(nb, nb, dtype=torch.bool).tril(-1), pairs, torch.zeros(()))
    pairs += torch.diag(sizes * (sizes + 1) / 2)
    kept = block_mask[..., :nb, :nb].to(torch.float64).cpu()
    return (kept * pairs).sum(dim=(-1, -2)) / (length * (length + 1) / 2)


def esr(codes: torch.Tensor, length: int, sink: int, window: int, round_block: int = 1,
        block_masks: Optional[Sequence[Optional[torch.Tensor]]] = None, mask_block: Optional[int] = None) -> float:
    """Omega_ESR of one sequence: ``codes`` (L, Hq) mode codes (``mode_table.table`` per layer), ``length`` its
    tokens; ``block_masks[l]`` (Hq, nb, nb) for layers with heads whose mode reads a block mask."""
    skipped = torch.zeros(codes.shape, dtype=torch.float64)
    rule_share = {}
    for layer in range(codes.shape[0]):
        for head in range(codes.shape[1]):
            mode = M.get(int(codes[layer, head]))
            if mode.dense:
                continue
            if mode.needs_block_mask:
                if block_masks is None or block_masks[layer] is None or mask_block is None:
                    raise ValueError(f"layer {layer} has block-sparse heads ({mode.name}): pass its block mask and "
                                     "mask_block.")
                share = float(block_pair_fraction(block_masks[layer][head], mask_block, length))
            else:
                if mode.code not in rule_share:
                    rule_share[mode.code] = rule_pair_fraction(mode.code, length, sink, window, round_block)
                share = rule_share[mode.code]
            skipped[layer, head] = 1.0 - share
    return float(skipped.mean())
