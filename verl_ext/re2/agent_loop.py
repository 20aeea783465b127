"""Re²'s two-stage rollout inside verl's v1 trainer, through its agent-loop manager extension point.

    actor_rollout_ref.rollout.agent.agent_loop_manager_class=verl_ext.re2.agent_loop.Re2AgentLoopManager

verl's v1 agent-loop worker handles one question per coroutine (``_run_prompt``): it runs ``rollout.n`` sessions and
writes each session's trajectory to TransferQueue under ``{question uid}_{session}_{index}``. ``Re2AgentLoopWorker``
keeps that contract and replaces what a question's coroutine does for training batches: n full responses, n
prefixes, m continuations per prefix (``verl_ext.re2.question_rollout``), each continuation written as one session
whose prompt is prompt + prefix (so the prefix gets no loss) and whose reward is Re²'s three-way reward. Each row's
``uid`` field is then set to its prefix group (plus ``#redo`` for redo rows) for ``adv_estimator=re2``.
Validation batches run verl's own path, each session's request seeded as below.

Every sampled request carries a seed (``re2.request_seeds``, on by default) made from the run's seeds, the step,
the dataset row and which request of that row it is: verl's server manager sends a request to whichever replica has
the fewest in flight, so without it what a row draws depends on timing once there are two replicas (two ranks).
With it a run on one node, the same run on two, and a run resumed from a checkpoint draw the same tokens.
"""

from __future__ import annotations

import itertools
import random
import zlib

from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ

from verl_ext.data_plane import put_row_fields, row_key, set_question_status
from verl_ext.re2.config import Re2Config
from verl_ext.re2.question_rollout import filter_metric_values, rollout_question
from verl_ext.re2.redo import RedoDetector
from verl_ext.scoring.math_grader import default_grader
from verl_ext.seeded_agent_loop import SeededWorker

FILTER_METRIC = "re2_filter"


def re2_config_from(trainer_config) -> Re2Config:
    block = trainer_config.get("re2", None)
    values = OmegaConf.to_container(block, resolve=True) if block is not None else {}
    return Re2Config.from_mapping(values)


class _Re2Worker(SeededWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.re2 = re2_config_from(self.config)
        self.detector = RedoDetector(self.tokenizer, self.re2.redo_spec)
        self.grader = default_grader()

    # Seeding (verl_ext.seeded_agent_loop): validation sessions through verl's own loop, training requests below.
    def seeds_requests(self) -> bool:
        return self.re2.request_seeds

    def seed_base(self) -> tuple:
        return self.rollout_seed, self.re2.seed

    def session_call(self, trajectory: dict, session_id, prompt: dict) -> tuple:
        return "validate", session_id  # a Re² dataset's rows have their own index

    def _prompt_ids(self, messages) -> list[int]:
        kwargs = dict(self.config.data.get("apply_chat_template_kwargs", None) or {})
        text = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False, **kwargs)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    async def _run_prompt(self, prompt: dict, sampling_params: dict, trajectory: dict, trace: bool = False) -> None:
        if trajectory["validate"]:
            return await super()._run_prompt(prompt, sampling_params, trajectory, trace)
        uid = prompt["uid"]
        await set_question_status(uid, "running")
        try:
            await self._run_re2_question(prompt, sampling_params, trajectory)
            status = "finished"
        except Exception:  # noqa: BLE001 - verl's contract: a failed question is reported, logged, and refilled
            import logging

            logging.getLogger(__name__).exception("Re² rollout failed for question %s", uid)
            status = "failure"
        await set_question_status(uid, status)

    async def _generate(self, uid: str, prompt_ids: list[int], sampling_params: dict):
        out = await self.llm_client.generate(
            request_id=f"{uid}-{random.getrandbits(64):x}", prompt_ids=prompt_ids, sampling_params=sampling_params,
        )
        return list(out.token_ids), out.log_probs, dict(out.extra_fields)

    async def _run_re2_question(self, prompt: dict, sampling_params: dict, trajectory: dict) -> None:
        uid = prompt["uid"]
        prompt.pop("__do_sample__", None)
        n = int(prompt.pop("__rollout_n__", self.config.actor_rollout_ref.rollout.n))
        rollout_cfg = self.config.actor_rollout_ref.rollout
        params = dict(sampling_params)
        if self.re2.stop_at_redo:
            params["stop"] = self.re2.stop_strings

        calls = itertools.count()

        def generate(prompt_ids, max_tokens):
            # Not a coroutine function: the call's index, and so its seed, is taken when rollout_question asks (in
            # its own order), not when the event loop gets to the request.
            request = dict(params, max_tokens=max_tokens)
            if self.seeds_requests():
                request["seed"] = self._request_seed(trajectory, uid, "rollout", next(calls))
            return self._generate(uid, prompt_ids, request)

        ground_truth = (prompt.get("reward_model") or {}).get("ground_truth")
        # The question's prefix draws depend on what verl's data loader gave (the step and the row's index), not on
        # its uid (a fresh UUID each run): a run and its resumption draw the same prefixes.
        seed = zlib.crc32(f"{self.re2.seed}:{trajectory.get('step')}:{trajectory.get('sample_index', uid)}".encode())
        result = await rollout_question(
            question_uid=uid,
            prompt_ids=self._prompt_ids(prompt["raw_prompt"]),
            ground_truth=ground_truth,
            num_prefixes=n,
            config=self.re2,
            generate=generate,
            grade=self.grader.grade,
            detector=self.detector,
            eos_token_id=self.tokenizer.eos_token_id,
            response_length=int(rollout_cfg.response_length),
            rng=random.Random(seed),
            max_prompt_length=int(rollout_cfg.prompt_length),
        )
        rows = result.kept or result.continuations  # all-degenerate questions go to verl's filter for eviction
        filter_values = filter_metric_values(result)
        summary = result.summary()
        keys = []
        for session, (row, filter_value) in enumerate(zip(rows, filter_values)):
            info = {
                "score": row.score,
                "acc": float(row.outcome == "correct"),
                "redo": float(row.outcome == "redo"),
                FILTER_METRIC: float(filter_value),
                "grading_timeout": float(row.grade_status == "timeout"),
                "re2_outcome": row.outcome,
                "re2_group": row.group.uid,
                "re2_length": len(row.token_ids),
                **{f"re2_q_{k}": v for k, v in summary.items()},
            }
            extra = dict(row.extra)
            extra["reward_extra_info"] = info
            output = AgentLoopOutput(
                prompt_ids=row.group.continuation_prompt_ids,
                response_ids=row.token_ids,
                response_mask=[1] * len(row.token_ids),
                response_logprobs=None,
                reward_score=row.reward,
                num_turns=2,
                metrics={},
                extra_fields=extra,
            )
            await self._agent_loop_postprocess(output, False, **{**prompt, "session_id": session})
            keys.append(row_key(uid, session))
        # verl keys a question's rows by its uid; the advantage groups them by prefix group (and class).
        await put_row_fields(keys, [{"uid": row.row_uid} for row in rows])


import ray  # noqa: E402

Re2AgentLoopWorker = ray.remote(_Re2Worker)


class Re2AgentLoopManager(AgentLoopManagerTQ):
    """verl's v1 agent-loop manager with Re²'s worker."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.agent_loop_workers_class = Re2AgentLoopWorker
