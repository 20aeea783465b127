"""Sparsity metrics of Elastic Attention decisions.

- Omega_MSR (model sparsity ratio): the share of (layer, KV head) pairs routed to sparse attention, per sequence.
- Omega_ESR (effective sparsity ratio): the share of causal query-key pairs a sequence's attention skips:
  sum over sparse heads of (1 - streaming pairs / causal pairs at its length), divided by all heads. Full heads
  skip nothing; a sparse head on a prompt shorter than sink + window skips nothing either.
"""

from __future__ import annotations

import torch


def msr(decisions: torch.Tensor) -> torch.Tensor:
    """decisions (B, L, H) with 1 = full -> (B,) Omega_MSR."""
    return 1.0 - decisions.float().flatten(1).mean(dim=1)


def msr_per_layer(decisions: torch.Tensor) -> torch.Tensor:
    """(B, L, H) -> (B, L)."""
    return 1.0 - decisions.float().mean(dim=2)


def streaming_pair_fraction(length: int, sink: int, window: int) -> float:
    """Streaming-visible causal pairs / causal pairs at ``length`` tokens (token-exact pattern)."""
    causal = length * (length + 1) / 2
    visible = sum(min(i + 1, min(sink, i + 1) + min(window, max(0, i + 1 - sink))) for i in range(length))
    return visible / causal


def esr(decisions: torch.Tensor, lengths: torch.Tensor, sink: int, window: int) -> torch.Tensor:
    """decisions (B, L, H), lengths (B,) -> (B,) Omega_ESR."""
    sparse_share = msr(decisions)
    kept = torch.tensor([streaming_pair_fraction(int(n), sink, window) for n in lengths], dtype=torch.float32)
    return sparse_share * (1.0 - kept)
