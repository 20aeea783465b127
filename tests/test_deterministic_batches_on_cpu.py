"""A step's batch does not depend on timing (``sampler_kwargs.deterministic``, the ``verl_ext_sync`` trainer's uids):
uids drawn in dispatch order, the earliest-dispatched groups selected, rows in (uid, session, index) order, and
evictions / refills decided only when no request is in flight. End to end: tests/e2e/test_multinode_on_cpu.py (the
main job on two nodes equal to one node, a resumed run equal to an uninterrupted one)."""

import random
import uuid

import numpy as np
import pytest
import torch
from verl.trainer.ppo.v1 import trainer_base

from verl_ext.replay_buffer import FastPollReplayBuffer, row_order
from verl_ext.trainer_mode import VALIDATION_BIT, OrderedUids, VerlExtSyncTrainer, ordered_uids


def test_ordered_uids_sort_as_drawn_and_stay_inside_the_block():
    source = OrderedUids(5 << 64)
    with ordered_uids(source):
        drawn = [str(trainer_base.uuid.uuid4()) for _ in range(300)]  # across hex-digit carries
    assert trainer_base.uuid is uuid
    assert sorted(drawn) == drawn and len(set(drawn)) == 300
    assert drawn[0] == str(uuid.UUID(int=5 << 64)) and "_" not in drawn[0]  # verl splits row keys on "_"
    later_step = OrderedUids(6 << 64).uuid4()
    assert str(later_step) > drawn[-1] and str(OrderedUids(VALIDATION_BIT).uuid4()) > str(later_step)


class _Loader:
    """Four prompts per fetch, as verl's dataloader yields them."""

    def __iter__(self):
        for start in range(0, 64, 4):
            yield {"raw_prompt": np.array([[{"role": "user", "content": f"q{i}"}] for i in range(start, start + 4)],
                                          dtype=object), "index": torch.arange(start, start + 4)}


def _fetched_uids(step, fetches):
    trainer = object.__new__(VerlExtSyncTrainer)  # verl's own _fetch_one_gen_batch, run as the trainer runs it
    trainer.train_dataloader, trainer.train_dataloader_it, trainer.global_steps = _Loader(), None, step
    uids = []
    for _ in range(fetches):
        uids += list(trainer._fetch_one_gen_batch()["uid"])
    return uids


def test_trainer_draws_the_same_uids_in_dispatch_order_in_every_run():
    first = _fetched_uids(step=3, fetches=3)  # the step's batch, then two refills
    assert first == sorted(first) and len(set(first)) == 12
    assert first == _fetched_uids(step=3, fetches=3)  # another run, or a resumed one at step 3
    assert not set(first) & set(_fetched_uids(step=4, fetches=1))


def test_row_order_sorts_sessions_and_indices_as_numbers():
    keys = ["b_0_0", "a_10_0", "a_2_1", "a_2_0", "a_0_0"]
    assert sorted(keys, key=row_order) == ["a_0_0", "a_2_0", "a_2_1", "a_10_0", "b_0_0"]


def _buffer(deterministic=True):
    return FastPollReplayBuffer("sync", {}, None, "drop", {"deterministic": deterministic, "train_batch_size": 2,
                                                          "filter_groups": {"enable": True, "metric": "acc"}},
                                refill_fn=lambda n: n)


def test_selection_takes_the_earliest_dispatched_groups_whatever_the_set_order():
    buffer = _buffer()
    uids = [str(uuid.UUID(int=(2 << 64) | n)) for n in range(4)]
    buffer.prompt_global_steps["train"] = {uid: 2 for uid in uids}
    for seed in range(5):
        shuffled = list(uids)
        random.Random(seed).shuffle(shuffled)
        selected, _, _ = buffer._select_prompt_uids("train", set(shuffled), 2)
        assert selected == uids[:2]


def test_nothing_is_decided_while_a_wave_is_in_flight():
    buffer = _buffer()
    buffer.pending_keys["train"], buffer.running_keys["train"] = set(), {"u3"}
    buffer.finished_keys["train"], buffer.failure_keys["train"] = {"u1"}, {"u2"}
    buffer.finished_keys["val"] = {"v1"}  # nothing in flight there: left as it is
    buffer._hide_terminal_groups_in_flight()
    assert buffer.finished_keys["train"] == set() and buffer.failure_keys["train"] == set()
    assert buffer.finished_keys["val"] == {"v1"}
    buffer.running_keys["train"] = set()
    buffer.finished_keys["train"] = {"u1", "u3"}
    buffer._hide_terminal_groups_in_flight()  # the wave is over: everything shows
    assert buffer.finished_keys["train"] == {"u1", "u3"}


@pytest.mark.parametrize("value", ["yes", 1])
def test_the_switch_is_a_boolean(value):
    with pytest.raises(ValueError, match="sampler_kwargs.deterministic"):
        FastPollReplayBuffer("sync", {}, None, "drop", {"deterministic": value})
