"""Router training objective: LM cross-entropy + per-task Lagrangian sparsity terms, backbone frozen.

    loss = CE + lambda1[task] * |Omega - t[task]| + lambda2[task] * (Omega - t[task])^2

Omega is each sequence's model sparsity ratio from the straight-through decisions (1 - mean z over layers and KV
heads). The multipliers are trained by gradient *ascent* (their own optimizer group with ``maximize=True``), so a
task that misses its target keeps raising its penalty. Targets per task come from the recipe config (paper:
robust tasks 1.0, sensitive tasks 0.7).
``signed=True`` uses (Omega - t) instead of |Omega - t| for the first term (the official code's variant).
"""

from __future__ import annotations

import torch
from torch import nn

from verl_ext.elastic_attention.metrics import msr
from verl_ext.elastic_attention.router_names import is_router
from verl_ext.elastic_attention.state import elastic_layers


class SparsityLagrangian(nn.Module):
    def __init__(self, targets: list[float], signed: bool = False):
        super().__init__()
        if not targets or any(not 0 <= t <= 1 for t in targets):
            raise ValueError(f"sparsity targets {targets} must be probabilities, one per task.")
        self.register_buffer("targets", torch.tensor(targets, dtype=torch.float32))
        self.lambda1 = nn.Parameter(torch.zeros(len(targets)))
        self.lambda2 = nn.Parameter(torch.zeros(len(targets)))
        self.signed = signed

    def forward(self, omega: torch.Tensor, task_ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """omega (B,) with gradient to the routers; task_ids (B,) long -> (penalty, metrics)."""
        if int(task_ids.max()) >= len(self.targets) or int(task_ids.min()) < 0:
            raise ValueError(f"task ids {task_ids.tolist()} outside [0, {len(self.targets)}).")
        diff = omega - self.targets[task_ids]
        first = diff if self.signed else diff.abs()
        penalty = (self.lambda1[task_ids] * first + self.lambda2[task_ids] * diff.pow(2)).mean()
        return penalty, {"elastic/omega_mean": float(omega.detach().mean()),
                         "elastic/target_gap": float(diff.detach().abs().mean())}


def training_omega(model) -> torch.Tensor:
    """(B,) Omega_MSR from the last training forward's straight-through decisions (differentiable)."""
    z = [attn.elastic.soft_decisions for attn in elastic_layers(model)]
    if any(d is None for d in z):
        raise RuntimeError("no training forward has run: set_router_temperature(model, tau) and model.train() first.")
    return msr(torch.stack(z, dim=1))


def freeze_backbone(model) -> list[nn.Parameter]:
    """Freeze everything but the routers; returns the router parameters."""
    routers = []
    for name, param in model.named_parameters():
        param.requires_grad_(is_router(name))
        if is_router(name):
            routers.append(param)
    if not routers:
        raise ValueError("the model has no elastic routers; call enable_elastic_attention first.")
    return routers
