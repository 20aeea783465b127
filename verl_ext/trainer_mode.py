"""``verl_ext_sync``: verl's synchronous v1 trainer plus the per-step and validation metrics that methods
contribute (``trainer.v1.trainer_mode=verl_ext_sync``). One mode serves Re², Elastic Attention and both together:
each method registers contributors (``verl_ext.metric_contributors``, from ``verl_ext.plugin``), and a contributor
whose fields are absent from a batch contributes nothing. This module knows no method.

The step is verl's own; only metrics are added, one of them by the mode itself: ``training/optimizer_steps``, the
optimizer steps the actor took in the step (one per mini-batch verl's actor trains on, counted from the gradient
norms the update returns), the figure two methods compared "at the same update budget" must share.

Prompt uids are drawn in order (``ordered_uids``): verl gives every prompt a random uuid4, so nothing that sorts by
uid can follow the order prompts were dispatched in, and no two runs share a uid. Here the n-th prompt dispatched in
step s gets ``UUID(int=(s << 64) | n)`` (validation prompts a high bit more): the same uids in every run of a config
and after a resume, sorting as they were dispatched, which the deterministic replay buffer uses
(``verl_ext.replay_buffer``).
"""

from __future__ import annotations

import contextlib
import itertools
import uuid

from verl.trainer.ppo.v1 import trainer_base
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


VALIDATION_BIT = 1 << 127


class OrderedUids:
    """Stands in for the ``uuid`` module where verl's trainer draws prompt uids: ``uuid4()`` returns
    ``UUID(int=base | n)`` for n = 0, 1, ... (a UUID, so every consumer of the string is unchanged)."""

    def __init__(self, base: int):
        self.base, self.drawn = base, itertools.count()

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self.base | next(self.drawn))


@contextlib.contextmanager
def ordered_uids(source: OrderedUids):
    """verl's trainer module draws its uids from ``source`` inside the block (the module's own ``uuid`` name, so
    nothing else that uses uuid changes)."""
    saved, trainer_base.uuid = trainer_base.uuid, source
    try:
        yield
    finally:
        trainer_base.uuid = saved


@register_trainer("verl_ext_sync")
class VerlExtSyncTrainer(ReportsSyncMode, PPOTrainerSync):
    """verl's ``sync`` trainer plus the registered metric contributors, drawing prompt uids in order."""

    def _uids(self, validate: bool) -> OrderedUids:
        base = (VALIDATION_BIT if validate else 0) | (int(self.global_steps) << 64)
        sources = self.__dict__.setdefault("_uid_sources", {})  # one count per step and phase, never restarted
        return sources.setdefault(base, OrderedUids(base))

    def _fetch_one_gen_batch(self):
        with ordered_uids(self._uids(validate=False)):
            return super()._fetch_one_gen_batch()

    def _validate(self, *args, **kwargs):
        with ordered_uids(self._uids(validate=True)):
            return super()._validate(*args, **kwargs)

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
