"""``verl_ext_sync``: verl's synchronous v1 trainer plus the per-step and validation metrics that methods
contribute (``trainer.v1.trainer_mode=verl_ext_sync``). One mode serves Re², Elastic Attention and both together:
each method registers contributors (``verl_ext.metric_contributors``, from ``verl_ext.plugin``), and a contributor
whose fields are absent from a batch contributes nothing. This module knows no method.

The step is verl's own; only metrics are added, one of them by the mode itself: ``training/optimizer_steps``, the
optimizer steps the actor took in the step (one per mini-batch verl's actor trains on, counted from the gradient
norms the update returns), the figure two methods compared "at the same update budget" must share.
"""

from __future__ import annotations

from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from verl_ext.metric_contributors import contributors
from verl_ext.data_plane import extra_fields_of

class ReportsSyncMode:
    """verl checks ``trainer_mode == "sync"`` for its replay buffer and refill rules, so a trainer registered under
    another name reports ``sync``; the name it was selected by is kept in ``selected_mode``."""

    @property
    def trainer_mode(self) -> str:
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:
        self.selected_mode = value


def optimizer_steps(actor_metrics: dict):
    """Optimizer steps behind one actor update's metrics: verl's actor returns one ``grad_norm`` per mini-batch it
    stepped on (a list, before the trainer averages it); None when the update reported none."""
    norms = actor_metrics.get("grad_norm")
    if norms is None:
        return None
    return len(norms) if isinstance(norms, (list, tuple)) else 1


@register_trainer("verl_ext_sync")
class VerlExtSyncTrainer(ReportsSyncMode, PPOTrainerSync):
    """verl's ``sync`` trainer plus the registered metric contributors."""

    def _compute_advantage(self, batch, metrics: dict):
        step = contributors("step")
        if step:
            extra, questions = extra_fields_of(batch)
            for fn in step if extra else ():
                metrics.update(fn(extra, questions))
        return super()._compute_advantage(batch, metrics)

    def _update_actor(self, batch, metrics: dict):
        group = self.actor_rollout_wg
        update = group.update_actor
        counted = []

        def counting_update(data):
            output = update(data)
            counted.append(optimizer_steps(output["metrics"]))
            return output

        group.update_actor = counting_update  # this call only: the worker group's own method is put back below
        try:
            batch = super()._update_actor(batch, metrics)
        finally:
            group.update_actor = update
        if counted and counted[0] is not None:
            metrics["training/optimizer_steps"] = float(counted[0])
        return batch

    def _val_metrics_update(self, data_sources, sample_uids, reward_extra_infos_dict, sample_turns, **kwargs):
        metrics = super()._val_metrics_update(data_sources, sample_uids, reward_extra_infos_dict, sample_turns,
                                              **kwargs)
        for fn in contributors("validation"):
            metrics.update(fn(data_sources, sample_uids, reward_extra_infos_dict))
        return metrics
