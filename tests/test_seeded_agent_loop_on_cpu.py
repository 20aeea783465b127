"""Every sampled request of the CPU configs' agent loop carries a seed made from the data (the rollout seed, the step,
the row, training or validation, the session, the prompt), not from the replica that serves it or when. End to end:
tests/e2e/test_multinode_on_cpu.py (the main job and the judge on two nodes equal to one)."""

from verl_ext.seeded_agent_loop import SeededWorker, prompt_digest

MESSAGES = [{"role": "user", "content": "Which response is better, A or B?"}]


def _worker(rollout_seed=0):
    worker = object.__new__(SeededWorker)  # the seed derivation only: no Ray actor, no model
    worker.rollout_seed = rollout_seed
    return worker


def _seed(worker, trajectory, uid="u", session=0, messages=MESSAGES):
    call = worker.session_call(trajectory, session, {"raw_prompt": messages})
    return worker._request_seed(trajectory, uid, *call)


def test_a_sessions_seed_follows_the_data():
    val = {"step": 0, "sample_index": 7, "validate": True}
    first = _seed(_worker(), val)
    assert first == _seed(_worker(), val, uid="another-run")  # uids are fresh each run; the seed is not
    swapped = [dict(m, content=m["content"] + " (B first)") for m in MESSAGES]
    apart = {
        _seed(_worker(), val, session=1),  # a group's n samples
        _seed(_worker(), val, messages=swapped),  # a pair's other ordering, same row index
        _seed(_worker(), dict(val, sample_index=8)),
        _seed(_worker(), dict(val, step=1)),
        _seed(_worker(), dict(val, validate=False)),
        _seed(_worker(rollout_seed=1), val),
    }
    assert first not in apart and len(apart) == 6


def test_the_digest_is_stable_and_reads_the_whole_prompt():
    assert prompt_digest(MESSAGES) == prompt_digest([dict(m) for m in MESSAGES])
    assert prompt_digest(MESSAGES) != prompt_digest([{**MESSAGES[0], "role": "system"}])
    assert prompt_digest(None) == prompt_digest(None)
