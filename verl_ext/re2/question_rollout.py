"""One question's Re² rollout: n full responses -> n prefixes -> m continuations each -> graded, rewarded, filtered.

Independent of verl: generation and grading are passed in, so the same code runs inside verl's agent-loop worker
(``verl_ext.re2.agent_loop``) and in tests and benchmarks with fakes. Every continuation of the question is in hand
when rewards are computed, so the out-of-group statistics of Eq. 1 need no batch-level pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Awaitable, Callable, Optional, Sequence

import numpy as np

from verl_ext.re2.advantage import row_uid
from verl_ext.re2.config import Re2Config
from verl_ext.re2.filtering import degenerate_groups
from verl_ext.re2.prefixes import PrefixGroup, build_prefix_groups
from verl_ext.re2.redo import REDO, RedoDetector, classify, truncate_after_redo
from verl_ext.re2.reward import DEGENERATE_REDO_REWARD, overlong_penalty, three_way_rewards
from verl_ext.scoring.math_grader import STATUS_REFUSED, STATUS_TIMEOUT, Grade

# generate(prompt_ids, max_tokens) -> (response token ids, response log-probs or None, server extra fields)
GenerateFn = Callable[[list[int], int], Awaitable[tuple[list[int], Optional[list[float]], dict]]]
GradeFn = Callable[[str, str], Grade]


@dataclasses.dataclass
class Continuation:
    group: PrefixGroup
    token_ids: list[int]
    log_probs: Optional[list[float]]
    text: str
    outcome: str
    grade_status: str
    score: float = 0.0  # Eq. 1 value (redo-substituted), the filter metric
    reward: float = 0.0  # score + overlong penalty: what the policy is trained on
    kept: bool = True
    extra: dict = dataclasses.field(default_factory=dict)
    generated: int = 0  # tokens sampled, before the cut after a redo phrase: the generation budget it used

    @property
    def row_uid(self) -> str:
        return row_uid(self.group.uid, self.outcome == REDO)


@dataclasses.dataclass
class QuestionRollout:
    question_uid: str
    full_responses: list[list[int]]
    groups: list[PrefixGroup]
    continuations: list[Continuation]

    @property
    def kept(self) -> list[Continuation]:
        return [c for c in self.continuations if c.kept]

    def summary(self) -> dict[str, float]:
        """Pre-filter counts, so per-step metrics describe everything generated, not only what is trained on."""
        outcomes = [c.outcome for c in self.continuations]
        return {
            "continuations": len(outcomes),
            "redo": sum(o == REDO for o in outcomes),
            # Eq. 1's degenerate case: no out-of-group continuation, or every one a redo (official code: -1)
            "redo_reward_degenerate": sum(c.score == DEGENERATE_REDO_REWARD for c in self.continuations),
            "correct": sum(o == "correct" for o in outcomes),
            "groups": len(self.groups),
            "degenerate_groups": len(degenerate_groups([c.score for c in self.continuations],
                                                       [c.group.uid for c in self.continuations])),
            "grading_timeouts": sum(c.grade_status == STATUS_TIMEOUT for c in self.continuations),
            "grading_refused": sum(c.grade_status == STATUS_REFUSED for c in self.continuations),
            "kept": sum(c.kept for c in self.continuations),
            # everything sampled for the question, full responses (stage 1) included: Re²'s token budget
            "generated_tokens": sum(map(len, self.full_responses)) + sum(c.generated for c in self.continuations),
        }


def _clip(tokens: list[int], limit: int, eos_token_id: int) -> list[int]:
    if len(tokens) <= limit:
        return tokens
    return tokens[: limit - 1] + [eos_token_id]


async def rollout_question(
    question_uid: str,
    prompt_ids: Sequence[int],
    ground_truth: str,
    num_prefixes: int,
    config: Re2Config,
    generate: GenerateFn,
    grade: GradeFn,
    detector: RedoDetector,
    eos_token_id: int,
    response_length: int,
    rng: random.Random,
    max_prompt_length: Optional[int] = None,
) -> QuestionRollout:
    """Run the two stages for one question and score every continuation (Eq. 1 + optional overlong penalty)."""
    if ground_truth is None or str(ground_truth) == "":
        raise ValueError(f"question {question_uid}: reward_model.ground_truth is missing; Re² needs it to grade.")
    prompt_ids = list(prompt_ids)
    # Stage 1: n full responses, used only to make prefixes (not trained on).
    firsts = await asyncio.gather(*[generate(prompt_ids, response_length) for _ in range(num_prefixes)])
    full = [tokens for tokens, _, _ in firsts]
    groups = build_prefix_groups(question_uid, prompt_ids, full, config.prefix, rng, detector, [eos_token_id])
    if max_prompt_length is not None:
        # prompt + prefix is the continuation's prompt: keep it within the rollout's prompt budget.
        room = max(0, max_prompt_length - len(prompt_ids))
        groups = [dataclasses.replace(g, prefix_ids=g.prefix_ids[:room]) for g in groups]
    # Stage 2: m continuations per prefix, each with the full response budget (the prefix is prompt).
    requests = [(g, generate(g.continuation_prompt_ids, response_length)) for g in groups
                for _ in range(config.continuations_per_prefix)]
    outputs = await asyncio.gather(*[req for _, req in requests])
    cut = []
    for tokens, log_probs, _ in outputs:
        truncated = _clip(truncate_after_redo(tokens, detector, eos_token_id), response_length, eos_token_id)
        # re-encoded tail tokens were not sampled: no rollout log-probs for them
        cut.append((truncated, log_probs if truncated == list(tokens) else None, detector.decode(truncated)))
    # Graded concurrently: the grader's pool bounds how many run at once; a slow item holds up no other.
    grades = await asyncio.gather(*[asyncio.to_thread(grade, text, str(ground_truth)) for _, _, text in cut])
    continuations = []
    redo = config.redo_check()
    for (group, _), (sampled, _, extra), (truncated, log_probs, text), graded in zip(requests, outputs, cut, grades):
        outcome = classify(text, graded.correct, redo)
        continuations.append(Continuation(group, truncated, log_probs, text, outcome, graded.status, extra=extra,
                                          generated=len(sampled)))
    scores = three_way_rewards([c.outcome for c in continuations], [question_uid] * len(continuations),
                               [c.group.uid for c in continuations], config.max_redo_rounds)
    rewards = scores.copy()
    if config.overlong.enable:
        rewards += overlong_penalty([len(c.token_ids) for c in continuations], response_length,
                                    min(config.overlong.buffer_length, response_length),
                                    config.overlong.penalty_factor, config.overlong.scale)
    for c, s, r in zip(continuations, scores, rewards):
        c.score, c.reward = float(s), float(r)
    if config.filter_degenerate_groups:
        dropped = degenerate_groups(scores, [c.group.uid for c in continuations])
        for c in continuations:
            c.kept = c.group.uid not in dropped
    return QuestionRollout(question_uid, full, groups, continuations)


def filter_metric_values(rollout: QuestionRollout) -> np.ndarray:
    """Values for verl's question-level group filter (``algorithm.filter_groups.metric=re2_filter``).

    A question with surviving prefix groups reports its rows' scores, which differ because a surviving group has
    spread; a question whose groups were all degenerate reports a constant, so verl evicts it and refills.
    """
    kept = rollout.kept
    if not kept:
        return np.zeros(len(rollout.continuations))
    return np.array([c.score for c in kept])
