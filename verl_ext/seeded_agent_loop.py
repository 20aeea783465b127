"""verl's v1 agent loop with every sampled request seeded from what the data loader gave, not from where or when it
runs:

    actor_rollout_ref.rollout.agent.agent_loop_manager_class=verl_ext.seeded_agent_loop.SeededAgentLoopManager

verl's server manager sends each request to the rollout replica with the fewest requests in flight, so with two
ranks (two replicas) which replica serves a request is a matter of timing, and so is what it draws unless the request
carries its own ``seed``. Here each session's request gets one: the rollout seed, the step, the dataset row (its
``index``; the prompt's uid if the data has none), training or validation, the session, and a digest of the prompt's
messages (rows that share an index, such as a pair's two orderings, still draw apart). A run on one node, the same run
on two, and a run resumed from a checkpoint then draw the same tokens. The CPU configs use it; a GPU recipe can, at
the cost vLLM pays for seeded requests (it samples them one by one).
"""

from __future__ import annotations

import json

import ray
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ

from verl_ext.rollout.sampling import stable_seed


def prompt_digest(messages) -> str:
    """A stable digest of a row's chat messages (any JSON-able structure)."""
    import hashlib

    text = json.dumps(messages, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class SeededWorker(AgentLoopWorkerTQ.__ray_actor_class__):
    """The agent-loop worker body: verl's, with ``seed`` added to each session's sampling parameters."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rollout_seed = int(self.config.actor_rollout_ref.rollout.get("seed", 0) or 0)

    # What a subclass may change: whether requests are seeded, the run's seeds, what names one session's request.
    def seeds_requests(self) -> bool:
        return True

    def seed_base(self) -> tuple:
        return (self.rollout_seed,)

    def session_call(self, trajectory: dict, session_id, prompt: dict) -> tuple:
        kind = "validate" if trajectory["validate"] else "train"
        return kind, session_id, prompt_digest(prompt.get("raw_prompt"))

    def _request_seed(self, trajectory: dict, uid, *call: object) -> int:
        """One sampled request's seed: the run's seeds, the step, the dataset row (its uid if the data has no index)
        and which of the row's requests it is (``call``); not the replica that serves it, nor when it arrives."""
        row = trajectory.get("sample_index", uid)
        return stable_seed(*self.seed_base(), trajectory.get("step"), row, *call)

    async def _run_agent_loop(self, sampling_params: dict, trajectory: dict, **kwargs):
        if self.seeds_requests() and "seed" not in sampling_params:
            call = self.session_call(trajectory, kwargs.get("session_id"), kwargs)
            sampling_params = dict(sampling_params, seed=self._request_seed(trajectory, kwargs.get("uid"), *call))
        return await super()._run_agent_loop(sampling_params, trajectory, **kwargs)


SeededAgentLoopWorker = ray.remote(SeededWorker)


class SeededAgentLoopManager(AgentLoopManagerTQ):
    """verl's v1 agent-loop manager with the seeding worker."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.agent_loop_workers_class = SeededAgentLoopWorker
