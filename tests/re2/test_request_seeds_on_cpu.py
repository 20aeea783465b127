"""Every sampled request of the Re² agent loop carries a seed made from what the data loader gave, not from where or
when it runs (``re2.request_seeds``). End to end: tests/e2e/test_multinode_on_cpu.py (two nodes equal one)."""

from verl_ext.re2.agent_loop import _Re2Worker
from verl_ext.re2.config import Re2Config


def _worker(rollout_seed=0, re2_seed=0):
    worker = object.__new__(_Re2Worker)  # the seed derivation only: no Ray actor, no model
    worker.re2, worker.rollout_seed = Re2Config(seed=re2_seed), rollout_seed
    return worker


def test_seeds_follow_the_data_not_the_uid_or_the_worker():
    trajectory = {"step": 3, "sample_index": 17, "validate": False}
    seeds = [_worker()._request_seed(trajectory, "uid-a", "rollout", call) for call in range(40)]
    assert len(set(seeds)) == 40  # a question's n full responses and n x m continuations all draw apart
    assert seeds == [_worker()._request_seed(trajectory, "uid-b", "rollout", c) for c in range(40)]  # new uid, resumed
    others = [
        _worker()._request_seed(dict(trajectory, step=4), "u", "rollout", 0),
        _worker()._request_seed(dict(trajectory, sample_index=18), "u", "rollout", 0),
        _worker(rollout_seed=1)._request_seed(trajectory, "u", "rollout", 0),
        _worker(re2_seed=1)._request_seed(trajectory, "u", "rollout", 0),
        _worker()._request_seed(trajectory, "u", "validate", 0),
    ]
    assert len(set(others) | {seeds[0]}) == 6


def test_without_a_row_index_the_uid_keeps_questions_apart():
    trajectory = {"step": 3, "validate": False}
    assert _worker()._request_seed(trajectory, "uid-a", "rollout", 0) != _worker()._request_seed(
        trajectory, "uid-b", "rollout", 0)
