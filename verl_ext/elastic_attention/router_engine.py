"""Router training inside verl's engine-based SFT trainer: the engine, the objective and the settings.

Why verl's SFT trainer (``verl.trainer.sft_trainer``) and not the PPO stack: the objective is supervised (LM loss
plus a Lagrangian sparsity penalty), and that trainer already brings FSDP2, remove-padding packing (samples are
concatenated into rows of up to ``data.max_token_len_per_gpu`` tokens, which is the paper's 64K packing), dynamic
micro-batches, checkpoints and the metrics file. What it lacks is plugged in through its own seams:

- ``ElasticRouterEngine`` is verl's FSDP LM engine registered under the model type ``elastic_language_model``: it
  adds the routers before FSDP wraps the model, freezes the backbone, keeps the per-task multipliers (tiny,
  replicated, their gradients averaged over data-parallel ranks), builds one AdamW with a descending router group
  and an ascending (``maximize``) multiplier group, hands each packed micro-batch's prompt lengths to the routers,
  and anneals the Gumbel temperature with the optimizer step.
- ``elastic_router_loss`` is the trainer's loss function: verl's SFT loss plus the Lagrangian on the per-sample
  Omega_MSR of the straight-through decisions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch
import torch.distributed as dist

from verl_ext.elastic_attention.engine_names import ENGINE_MODEL_TYPE  # noqa: F401  (re-exported)
from verl_ext.elastic_attention.config import ElasticAttentionConfig
from verl_ext.elastic_attention.hf import enable_elastic_attention
from verl_ext.elastic_attention.metrics import msr
from verl_ext.elastic_attention.router import tau_cosine, tau_exponential
from verl_ext.elastic_attention.router_names import is_router
from verl_ext.elastic_attention.state import (elastic_decisions, set_noise_generator, set_prompt_lengths,
                                              set_router_temperature)
from verl_ext.elastic_attention.router_objective import SparsityLagrangian, freeze_backbone, training_omega


@dataclasses.dataclass(frozen=True)
class RouterTrainingConfig:
    """The ``elastic`` block of the router-training config (validated here; the recipe README explains each)."""

    tasks: tuple = ("single_qa", "multihop_qa", "summarization", "code", "icl")
    targets: tuple = (0.7, 0.7, 1.0, 1.0, 1.0)
    signed: bool = False
    lambda_lr: float = 1e-3
    lambda_weight_decay: float = 0.1
    lambda_init_max: float = 0.5
    tau_schedule: str = "exponential"
    tau_max: float = 1.5
    tau_min: float = 1.0
    lm_loss: str = "all"
    adapter_init: Optional[str] = None
    adapter_out: Optional[str] = None
    seed: int = 0
    attention: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if len(self.tasks) != len(self.targets) or not self.tasks:
            raise ValueError(f"elastic.tasks {list(self.tasks)} and elastic.targets {list(self.targets)} need one "
                             "target per task.")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"elastic.tasks has duplicates: {list(self.tasks)}.")
        if self.tau_schedule not in ("exponential", "cosine"):
            raise ValueError(f"elastic.tau_schedule={self.tau_schedule!r} must be 'exponential' (paper) or 'cosine' "
                             "(official code).")
        if self.lm_loss not in ("all", "answer"):
            raise ValueError(f"elastic.lm_loss={self.lm_loss!r} must be 'all' (every token, official code) or "
                             "'answer'.")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"elastic.seed={self.seed!r} must be an integer >= 0 (router init and Gumbel noise).")
        if self.lambda_lr <= 0 or self.lambda_init_max < 0 or not 0 < self.tau_min <= self.tau_max:
            raise ValueError("elastic.lambda_lr > 0, elastic.lambda_init_max >= 0 and 0 < tau_min <= tau_max needed.")
        self.attention_config()  # validates the attention block

    @classmethod
    def from_config(cls, block) -> "RouterTrainingConfig":
        raw = dict(block or {})
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown elastic.* keys {sorted(unknown)}; known: {[f.name for f in dataclasses.fields(cls)]}.")
        for key in ("tasks", "targets"):
            if key in raw:
                raw[key] = tuple(raw[key])
        raw["attention"] = dict(raw.get("attention") or {})
        return cls(**raw)

    def attention_config(self) -> ElasticAttentionConfig:
        return ElasticAttentionConfig.from_options(self.attention, "elastic.attention")

    def tau(self, step: int, total_steps: int) -> float:
        if self.tau_schedule == "cosine":
            return tau_cosine(step, max(total_steps, 1), self.tau_max, self.tau_min)
        return tau_exponential(step / max(total_steps, 1), self.tau_max, self.tau_min)


def _local(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a (possibly FSDP2-sharded) parameter or gradient."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _engine_base():
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    return FSDPEngineWithLMHead


class ElasticRouterEngine(_engine_base()):
    """verl's FSDP LM engine with Elastic Attention routers as the only trained weights (see module doc)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings: Optional[RouterTrainingConfig] = None  # the trainer sets it before the module is built

    def _settings(self) -> RouterTrainingConfig:
        if self.settings is None:
            raise RuntimeError("ElasticRouterEngine.settings is unset: its trainer sets them between building the "
                               "engine and initialising it; use verl_ext.elastic_attention.train_routers.")
        return self.settings

    def _build_module(self):
        settings = self._settings()
        if self.engine_config.strategy != "fsdp2":
            raise ValueError(f"engine.strategy={self.engine_config.strategy!r}: router training needs engine.strategy="
                             "fsdp2 (per-parameter sharding keeps the frozen backbone and the routers apart).")
        if self.engine_config.ulysses_sequence_parallel_size > 1:
            raise ValueError("engine.ulysses_sequence_parallel_size > 1: verl's Ulysses patch wraps flash attention, "
                             "not the elastic attention function, so routing would see a shard; use 1.")
        if not self.model_config.get("use_remove_padding", False):
            raise ValueError("router training packs samples into rows: set model.use_remove_padding=true.")
        # TrainingWorker stamps the registry key on the model config; the module itself is an ordinary LM.
        self.model_config.model_type = "language_model"
        module = super()._build_module()
        # Every rank draws the same initial routers, whatever the process drew before (FSDP shards them as built).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            enable_elastic_attention(module, settings.attention_config())
        if settings.adapter_init:
            from verl_ext.elastic_attention.adapter import load_router_adapter

            load_router_adapter(module, settings.adapter_init)
        freeze_backbone(module)
        self.lagrangian = SparsityLagrangian(list(settings.targets), signed=settings.signed)
        with torch.no_grad():  # official init U[0, 0.5); the paper says "randomly initialised"
            generator = torch.Generator().manual_seed(0)  # identical on every rank
            for lam in (self.lagrangian.lambda1, self.lagrangian.lambda2):
                lam.copy_(torch.rand(lam.shape, generator=generator) * settings.lambda_init_max)
        # Built on the CPU; it joins the routers' device once FSDP has placed them (_build_optimizer).
        self._router_start = None
        self._training_pass = False
        self._noise_generator = None
        return module

    def _seed_noise(self) -> None:
        """Rank r draws its Gumbel noise from seed + r: a run's noise depends on the seed and the rank, not on
        which node or process the rank runs in (one node or several, torchrun or Ray). Once, at the first forward
        (the routers' device is known only after FSDP has placed them)."""
        if self._noise_generator is None:
            rank = dist.get_rank() if dist.is_initialized() else 0
            device = next(p for p in self.module.parameters() if p.requires_grad).device
            self._noise_generator = torch.Generator(device=device).manual_seed(self._settings().seed + rank)
            set_noise_generator(self.module, self._noise_generator)

    def _lagrangian_to(self, device):
        if next(self.lagrangian.parameters()).device != device:
            self.lagrangian.to(device)

    def _build_optimizer(self, module):
        settings, optim = self._settings(), self.optimizer_config
        routers = [p for p in module.parameters() if p.requires_grad]
        self._lagrangian_to(routers[0].device)
        betas = tuple(optim.betas)
        return torch.optim.AdamW([
            {"params": routers, "lr": optim.lr, "weight_decay": optim.weight_decay},
            {"params": list(self.lagrangian.parameters()), "lr": settings.lambda_lr,
             "weight_decay": settings.lambda_weight_decay, "maximize": True},
        ], lr=optim.lr, betas=betas)

    def forward_step(self, micro_batch, loss_function, forward_only):
        settings = self._settings()
        prompt_mask = micro_batch["elastic_prompt_mask"]
        lengths = torch.stack([m.sum() for m in prompt_mask.unbind()]).long()
        set_prompt_lengths(self.module, lengths)
        step = self.lr_scheduler.last_epoch if self.lr_scheduler is not None else 0
        total = self.optimizer_config.total_training_steps
        set_router_temperature(self.module, None if forward_only else settings.tau(step, total))
        self._training_pass = not forward_only
        self._seed_noise()
        if self._router_start is None:
            self._router_start = {n: _local(p.detach()).clone() for n, p in self.module.named_parameters()
                                  if is_router(n)}
        return super().forward_step(micro_batch, loss_function, forward_only)

    def optimizer_step(self):
        dp_size = self.get_data_parallel_size()
        if dist.is_initialized() and dp_size > 1:  # the multipliers are replicated: average their gradients
            for p in self.lagrangian.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad, op=dist.ReduceOp.AVG, group=self.get_data_parallel_group())
        return super().optimizer_step()

    def router_update_norm(self) -> float:
        """L2 distance of the routers from their values before the first step."""
        if self._router_start is None:
            return 0.0
        total = 0.0
        for name, p in self.module.named_parameters():
            if name in self._router_start:
                total += float((_local(p.detach()) - self._router_start[name]).pow(2).sum())
        return math.sqrt(total)

    def router_state_dict(self) -> dict:
        """Full router tensors keyed as the adapter file keys them (gathered from the shards)."""
        return {name: _local(p.detach()).cpu() for name, p in self.module.named_parameters() if is_router(name)}


def elastic_router_loss(model_output, data, dp_group=None, *, engine: ElasticRouterEngine):
    """verl's SFT loss + lambda1[task] * |Omega - t| (or signed) + lambda2[task] * (Omega - t)^2 per sample.

    The penalty is weighted by the micro-batch's share of the rank's samples, so summed over micro-batches it is the
    rank's per-sample mean (the CE term is normalised over the global token count by verl). Metrics per task.
    """
    from verl.workers.utils.losses import sft_loss

    ce, _ = sft_loss(None, model_output, data, dp_group)
    settings = engine.settings
    task_ids = torch.stack([t[0] for t in data["elastic_task_ids"].unbind()]).long()
    metrics = {"elastic/lm_loss": float(ce.detach())}
    if not engine._training_pass:  # validation: hard decisions, no penalty
        omega = msr(elastic_decisions(engine.module))
        metrics.update(_per_task(omega.cpu(), task_ids, settings, "elastic/val_omega"))
        return ce, metrics
    omega = training_omega(engine.module)
    engine._lagrangian_to(omega.device)
    penalty, extra = engine.lagrangian(omega, task_ids.to(omega.device))
    local_samples = data["global_batch_size"] / data["dp_size"]
    loss = ce + penalty * (len(task_ids) / local_samples)
    metrics.update({"elastic/penalty": float(penalty.detach()), "elastic/router_update_norm": engine.router_update_norm(),
                    **extra, **_per_task(omega.detach().cpu(), task_ids, settings, "elastic/omega")})
    for i, name in enumerate(settings.tasks):
        metrics[f"elastic/lambda1/{name}"] = float(engine.lagrangian.lambda1[i].detach())
        metrics[f"elastic/lambda2/{name}"] = float(engine.lagrangian.lambda2[i].detach())
    return loss, metrics


def _per_task(omega: torch.Tensor, task_ids: torch.Tensor, settings: RouterTrainingConfig, prefix: str) -> dict:
    out = {f"{prefix}_mean": float(omega.mean())}
    for i, name in enumerate(settings.tasks):
        picked = omega[task_ids.cpu() == i]
        if picked.numel():
            out[f"{prefix}/{name}"] = float(picked.mean())
    return out
