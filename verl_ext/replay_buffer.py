"""``FastPollReplayBuffer``: verl's v1 replay buffer polling TransferQueue every ``poll_interval`` seconds instead of
its fixed 2 s, selected through verl's public sampler settings (the CPU configs set them):

    trainer.v1.sampler.custom_sampler.path: pkg://verl_ext.replay_buffer
    trainer.v1.sampler.custom_sampler.name: FastPollReplayBuffer
    trainer.v1.sampler.sampler_kwargs: {poll_interval: 0.05, train_batch_size: ..., filter_groups: ..., ...}

A sync step waits for its whole batch, sleeping ``poll_interval`` between checks, so 2 s per poll is most of a small
CPU step. verl builds a custom sampler with the common arguments only; the ones it derives for its own buffer from
the trainer config (group filtering, batch sizes, failed-group refill) are derived here the same way from
``sampler_kwargs``, which the config fills by interpolation. The derivation restates ``PPOTrainer._build_replay_buffer``
of verl 0.9.1 (a row of ``verl_ext.seams`` fails if its source changes).

It also ends a run whose rollout engine died instead of refilling its failed groups for ever (verl's agent loop
turns every request to a dead engine into a failed group): when groups fail, it asks the rollout servers whether
they can still generate (``verl_ext.platform.vllm_guard.engine_error``) and raises with the step if not; and it
raises once more than ``max_failed_groups`` groups (``sampler_kwargs``; default 4 x the batch) failed within one
step, whatever the engine.

With ``deterministic: true`` (``sampler_kwargs``; the CPU configs set it) a step's batch does not depend on timing:
verl's buffer decides on evictions and refills at every poll, while requests are still running, so which prompts are
refilled, which surplus is discarded (a set's order) and the order of the batch's rows follow which request finished
first; two ranks' rollout replicas, another node, a resumed run all change that. Here decisions wait until nothing is
in flight (the filtering proceeds in waves), the batch takes the earliest-dispatched groups (by uid: the
``verl_ext_sync`` trainer draws uids in dispatch order) and its rows come in (uid, session, index) order. The cost:
a refill wave no longer overlaps the rest of the step's generation.
"""

from __future__ import annotations

import time

from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

DEFAULT_POLL_INTERVAL = 0.05
HEALTH_CHECK_INTERVAL_S = 2.0


def row_order(key: str) -> tuple[str, int, int]:
    """A trajectory key ``{uid}_{session}_{index}`` as a sort key: by uid, then session and index as numbers."""
    uid, session, index = key.rsplit("_", 2)
    return uid, int(session), int(index)


class FastPollReplayBuffer(ReplayBuffer):
    def __init__(self, trainer_mode, trainer_config, max_off_policy_threshold, max_off_policy_strategy,
                 sampler_kwargs, refill_fn=None, **verl_kwargs):
        kwargs = dict(sampler_kwargs or {})
        poll = float(kwargs.pop("poll_interval", DEFAULT_POLL_INTERVAL))
        if poll <= 0:
            raise ValueError(f"trainer.v1.sampler.sampler_kwargs.poll_interval={poll} must be > 0 (seconds).")
        filter_groups = dict(kwargs.pop("filter_groups", None) or {})
        refill_failed = bool(kwargs.pop("sync_refill_failed_groups", False))
        metric = filter_groups.get("metric") if filter_groups.get("enable", False) else None
        if filter_groups.get("enable", False) and not metric:
            raise ValueError("algorithm.filter_groups.metric must be set when group filtering is enabled.")
        train_batch_size = kwargs.pop("train_batch_size", None)
        self.max_failed_groups = int(kwargs.pop("max_failed_groups", 4 * int(train_batch_size or 8)))
        gen_batch_size = kwargs.pop("gen_batch_size", None)
        self.deterministic = kwargs.pop("deterministic", False)
        if not isinstance(self.deterministic, bool):
            raise ValueError(f"trainer.v1.sampler.sampler_kwargs.deterministic={self.deterministic!r} must be true or "
                             "false.")
        if kwargs:
            raise ValueError(f"trainer.v1.sampler.sampler_kwargs has unknown keys {sorted(kwargs)}; known: "
                             "poll_interval, filter_groups, sync_refill_failed_groups, train_batch_size, gen_batch_size, "
                             "max_failed_groups, deterministic.")
        derived = {}
        if trainer_mode == "sync":  # what verl derives for its own sync buffer
            derived = dict(train_batch_size=train_batch_size,
                           gen_batch_size=1 if metric is not None or refill_failed else (gen_batch_size or train_batch_size),
                           max_inflight_gen_batches=filter_groups.get("max_inflight_gen_batches", 1) if metric else 1)
        super().__init__(trainer_mode=trainer_mode, trainer_config=trainer_config,
                         max_off_policy_threshold=max_off_policy_threshold,
                         max_off_policy_strategy=max_off_policy_strategy, sampler_kwargs={}, poll_interval=poll,
                         refill_fn=refill_fn, filter_groups_metric=metric, sync_refill_failed_groups=refill_failed,
                         **derived, **verl_kwargs)

    # -- a dead rollout engine ends the run ----------------------------------------------------------------------

    def sample(self, global_steps, partition_id, batch_size):
        self._step, self._failed, self._last_check = global_steps, set(), 0.0
        if not getattr(self, "_servers_known", False):  # remember the rollout servers while they live
            from verl_ext.platform.vllm_guard import remember_servers

            remember_servers()
            self._servers_known = True
        self._in_waves = self.deterministic
        try:
            return super().sample(global_steps, partition_id, batch_size)
        finally:
            self._in_waves = False

    def _sync_metadata_from_transfer_queue(self):
        super()._sync_metadata_from_transfer_queue()
        self._check_failures()
        if getattr(self, "_in_waves", False):
            self._hide_terminal_groups_in_flight()

    def _hide_terminal_groups_in_flight(self):
        """A partition with requests in flight shows no finished or failed group yet: verl's loop then neither
        evicts, refills nor selects until the wave is over, when what it sees no longer depends on timing."""
        for partition in set(self.pending_keys) | set(self.running_keys):
            if self.pending_keys[partition] or self.running_keys[partition]:
                self.finished_keys[partition] = set()
                self.failure_keys[partition] = set()

    def _select_prompt_uids(self, partition_id, sampleable_keys, batch_size):
        if not self.deterministic:
            return super()._select_prompt_uids(partition_id, sampleable_keys, batch_size)
        steps = dict(self.prompt_global_steps[partition_id])
        ordered = sorted(sampleable_keys, key=lambda uid: (steps.get(uid, 0), uid))  # verl: a set's order
        return ordered[:batch_size], dict(self.partitions[partition_id]), steps

    def _materialize_batch(self, partition_id, selected_prompt_uids, partition_snapshot):
        batch = super()._materialize_batch(partition_id, selected_prompt_uids, partition_snapshot)
        if not self.deterministic:
            return batch
        rows = sorted(zip(batch.keys, batch.tags), key=lambda row: row_order(row[0]))  # verl: arrival order
        return type(batch)(partition_id=batch.partition_id, keys=[k for k, _ in rows], tags=[t for _, t in rows])

    def _check_failures(self):
        failed = set().union(*self.failure_keys.values()) if self.failure_keys else set()
        if not failed or not hasattr(self, "_failed"):
            return
        self._failed |= failed
        step = getattr(self, "_step", "?")
        if time.monotonic() - self._last_check >= HEALTH_CHECK_INTERVAL_S:
            self._last_check = time.monotonic()
            from verl_ext.platform.vllm_guard import RolloutEngineError, engine_error

            why = engine_error()
            if why:
                raise RolloutEngineError(f"training step {step}: the rollout cannot generate any more: {why}. The "
                                         "engine's own traceback is in the run's log (trainer.log).")
        if len(self._failed) > self.max_failed_groups:
            raise RuntimeError(f"training step {step}: {len(self._failed)} rollout groups failed (more than "
                               f"max_failed_groups={self.max_failed_groups}); the agent loop's log says why.")
