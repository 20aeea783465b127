"""Elastic Attention's per-layer attention router: pooled pre-RoPE keys -> full or sparse attention per KV head.

Sign convention (used everywhere in verl_ext): ``z = 1`` means the KV head runs **full attention** (a retrieval
head), ``z = 0`` means **sparse attention**; class index 1 of the router's 2 logits is "full" (the official code's
convention; the paper's r_hard = 1 means sparse, i.e. r = 1 - z). Model sparsity ratio Omega_MSR = mean(1 - z)
(``metrics.msr``).

Shapes: B sequences, T tokens, H KV heads, D head_dim.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from verl_ext.elastic_attention.config import POOL_MODES

RETRIEVAL_CLASS = 1  # the router's logit index of "retrieval head" (z = 1); a class index, not a kernel mode code


class ElasticRouter(nn.Module):
    """Task MLP (D -> 4D -> D, SiLU) then router MLP (D -> 4D -> D -> 2, SiLU), shared across KV heads.

    263,682 parameters at head_dim 128. Weights N(0, 0.02), biases 0, so logits start near 0: ~50/50 routing.
    """

    def __init__(self, head_dim: int, hidden_mult: int = 4, init_std: float = 0.02):
        super().__init__()
        if head_dim < 1 or hidden_mult < 1:
            raise ValueError(f"head_dim={head_dim} and hidden_mult={hidden_mult} must be positive.")
        hidden = hidden_mult * head_dim
        self.task_mlp = nn.Sequential(nn.Linear(head_dim, hidden), nn.SiLU(), nn.Linear(hidden, head_dim))
        self.router_mlp = nn.Sequential(nn.Linear(head_dim, hidden), nn.SiLU(), nn.Linear(hidden, head_dim), nn.SiLU(),
                                        nn.Linear(head_dim, 2))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=init_std)
                nn.init.zeros_(module.bias)

    def forward(self, pooled_keys: torch.Tensor) -> torch.Tensor:
        """pooled_keys (B, H, D) -> logits (B, H, 2); index 1 = full attention."""
        return self.router_mlp(self.task_mlp(pooled_keys))


def boundary_pool(keys: torch.Tensor, lengths: Optional[torch.Tensor] = None, budget: int = 100,
                  mode: str = "boundary") -> torch.Tensor:
    """Mean key of each sequence's first and last ``budget`` prompt tokens, or of the whole prompt.

    - ``boundary`` (the paper, default): the union of the first and last ``budget`` tokens, each token once;
    - ``boundary_concat`` (the released inference code): the first ``budget`` and the last ``budget`` tokens
      concatenated, so for prompts of budget+1 .. 2*budget-1 tokens the overlap counts twice (mean over
      2 * min(T, budget) rows; equal to ``boundary`` below budget+1 tokens and from 2*budget on);
    - ``segment`` (the released training code): every prompt token.

    keys (B, T, H, D), right-padded; lengths (B,) prompt lengths (default T). Returns (B, H, D) float32.
    """
    if keys.dim() != 4:
        raise ValueError(f"keys must be (B, T, H, D); got shape {tuple(keys.shape)}.")
    if mode not in POOL_MODES:
        raise ValueError(f"pooling mode {mode!r} must be one of {POOL_MODES}.")
    b, t = keys.shape[:2]
    if lengths is None:
        lengths = torch.full((b,), t, dtype=torch.long, device=keys.device)
    if bool((lengths < 1).any()) or bool((lengths > t).any()):
        raise ValueError(f"prompt lengths must be in [1, {t}]; got {lengths.tolist()}.")
    pos = torch.arange(t, device=keys.device)[None, :]
    inside = pos < lengths[:, None]
    head, tail = pos < budget, pos >= lengths[:, None] - budget
    if mode == "boundary":
        weights = (inside & (head | tail)).to(torch.float32)
    elif mode == "boundary_concat":
        weights = (inside & head).to(torch.float32) + (inside & tail).to(torch.float32)
    else:
        weights = inside.to(torch.float32)
    summed = torch.einsum("bt,bthd->bhd", weights, keys.float())
    return summed / weights.sum(dim=1)[:, None, None]


def gumbel_noise(shape, generator: Optional[torch.Generator] = None, device=None, eps: float = 1e-10) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device)
    return -torch.log(-torch.log(u + eps) + eps)


def route_train(logits: torch.Tensor, tau: float, generator: Optional[torch.Generator] = None,
                noise: bool = True) -> torch.Tensor:
    """Gumbel-softmax with a straight-through estimator: forward z in {0, 1}, gradient of softmax((l + g)/tau)[1].

    logits (B, H, 2) -> z (B, H) float, 1 = full attention. ``noise=False`` drops the Gumbel noise: the forward is
    then the deterministic argmax of inference (what an RL actor with trainable routers needs to reproduce the
    rollout's routing), with the same straight-through gradient.
    """
    if tau <= 0:
        raise ValueError(f"Gumbel temperature tau={tau} must be > 0.")
    perturbed = logits + gumbel_noise(logits.shape, generator, logits.device).to(logits.dtype) if noise else logits
    soft = torch.softmax(perturbed / tau, dim=-1)
    hard = torch.nn.functional.one_hot(soft.argmax(dim=-1), 2).to(soft.dtype)
    return (hard + soft - soft.detach())[..., RETRIEVAL_CLASS]


def route_inference(logits: torch.Tensor) -> torch.Tensor:
    """Deterministic decision at prefill: argmax, no noise. logits (B, H, 2) -> z (B, H) long, 1 = full."""
    return logits.argmax(dim=-1)


def expand_to_query_heads(z: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, H_kv) -> (B, H_kv * groups): each query head takes its KV head's decision (GQA)."""
    return z.repeat_interleave(groups, dim=-1)


def tau_exponential(progress: float, tau_init: float = 1.5, tau_min: float = 1.0, rate: float = 0.6) -> float:
    """Paper Eq. 14: max(tau_min, tau_init * exp(-rate * progress)), progress in [0, 1]."""
    return max(tau_min, tau_init * math.exp(-rate * progress))


def tau_cosine(step: int, max_steps: int, tau_max: float = 1.5, tau_min: float = 1.0, anneal_fraction: float = 0.6) -> float:
    """Official code: cosine from tau_max to tau_min over the first ``anneal_fraction`` of training, then tau_min."""
    if max_steps < 1:
        raise ValueError(f"max_steps={max_steps} must be >= 1.")
    end = anneal_fraction * max_steps
    if step >= end:
        return tau_min
    return tau_min + 0.5 * (tau_max - tau_min) * (1 + math.cos(math.pi * step / end))

