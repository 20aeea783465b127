"""Trainer modes that add the rollout's Elastic Attention routing to verl's step metrics:
``trainer.v1.trainer_mode=elastic_sync`` (verl's sync trainer) and ``re2_elastic_sync`` (Re²'s).

Each response's prefill Omega_MSR travels from the ``hf`` rollout in its ``extra_fields`` (``elastic_msr``); the
trainers read it from TransferQueue when verl computes the step metrics and log ``elastic/rollout_msr/{mean,min,max}``.
The rollout / actor log-prob agreement is verl's own ``training/rollout_probs_diff_*`` (rollout.calculate_log_probs).
"""

from __future__ import annotations

import logging

import numpy as np
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from verl_ext.re2.trainer import Re2PPOTrainer
from verl_ext.trainer_mode import ReportsSyncMode

logger = logging.getLogger(__name__)


def rollout_msr_metrics(extra_fields: list) -> dict:
    """Omega_MSR statistics over the responses that carry one (none: no metrics)."""
    values = [e["elastic_msr"] for e in extra_fields if isinstance(e, dict) and e.get("elastic_msr") is not None]
    if not values:
        return {}
    arr = np.asarray(values, dtype=np.float64)
    return {"elastic/rollout_msr/mean": float(arr.mean()), "elastic/rollout_msr/min": float(arr.min()),
            "elastic/rollout_msr/max": float(arr.max()), "elastic/rollout_msr/responses": float(arr.size)}


class ElasticRolloutMetrics:
    """Mixin over a v1 trainer: step metrics gain the rollout's routing; a vLLM rollout whose elastic settings are
    not the actor's is refused before anything starts."""

    def __init__(self, config, *args, **kwargs):
        from verl_ext.elastic_attention.vllm_plugin import check_rollout_matches_actor

        check_rollout_matches_actor(config)
        super().__init__(config, *args, **kwargs)

    def _compute_metrics(self, batch, metrics, timing_raw, global_steps, epoch):
        import transfer_queue as tq

        out = super()._compute_metrics(batch, metrics, timing_raw, global_steps, epoch)
        keys = [k for k, tag in zip(batch.keys, batch.tags) if not tag.get("is_padding", False)]
        if keys:
            data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=["extra_fields"])
            found = rollout_msr_metrics(data.pop("extra_fields").tolist())
            if not found and not getattr(self, "_elastic_msr_warned", False):
                self._elastic_msr_warned = True
                logger.warning("elastic trainer mode: no response carries elastic_msr, so elastic/rollout_msr is not "
                               "logged. The hf rollout reports it per response; the vLLM rollout does not (its "
                               "workers keep totals: verl_ext.elastic_attention.vllm_models.routing_report).")
            metrics.update(found)
        return out


@register_trainer("elastic_sync")
class ElasticPPOTrainer(ElasticRolloutMetrics, ReportsSyncMode, PPOTrainerSync):
    """GRPO / PPO with an elastic actor and rollout."""


@register_trainer("re2_elastic_sync")
class Re2ElasticPPOTrainer(ElasticRolloutMetrics, Re2PPOTrainer):
    """Re² with an elastic actor and rollout."""
