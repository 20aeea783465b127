"""``re2``: a batch-level verl reward manager computing Re²'s three-way reward (``reward.reward_manager.name=re2``).

For verl paths that score a whole batch at once (the legacy trainer, or v1's colocated-reward path). In verl-ext's
default v1 flow the same reward is computed per question inside ``Re2AgentLoopWorker``, where all of a question's
continuations are present; both call ``verl_ext.re2.reward.three_way_rewards``.

Each row needs ``reward_model.ground_truth``, its prefix group in ``uid`` and its question in ``question_uid``
(or a ``uid`` of the form ``<question>/p<k>``, as verl-ext writes it). Constructor options (``reward.reward_kwargs``):
``redo_phrase``, ``redo_rule``, ``max_redo_rounds``, ``overlong_buffer_length``, ``overlong_penalty_factor``,
``overlong_scale``, ``max_response_length`` (overlong penalty on when the last is set).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Optional

import numpy as np
import torch
from verl.workers.reward_manager import register
from verl.workers.reward_manager.abstract import AbstractRewardManager

from verl_ext.re2.advantage import parse_row_uid
from verl_ext.re2.redo import DEFAULT_REDO_PHRASE, REDO, classify
from verl_ext.re2.redo import redo_rule as redo_rule_fn
from verl_ext.re2.reward import overlong_penalty, three_way_rewards
from verl_ext.scoring.math_grader import STATUS_TIMEOUT, default_grader


def question_of(row: int, non_tensor: dict) -> tuple[str, str]:
    """(question id, prefix-group id) of a row; an error names the missing field."""
    if "uid" not in non_tensor:
        raise KeyError("re2 reward needs each row's prefix group in non_tensor_batch['uid']; the batch has none.")
    group, _ = parse_row_uid(non_tensor["uid"][row])
    if "question_uid" in non_tensor:
        return str(non_tensor["question_uid"][row]), group
    if "/p" in group:
        return group.rsplit("/p", 1)[0], group
    raise KeyError(f"row {row}: re2 reward needs non_tensor_batch['question_uid'] (or a uid '<question>/p<k>'); "
                   f"got uid={group!r}.")


@register("re2")
class Re2RewardManager(AbstractRewardManager):
    def __init__(self, tokenizer, num_examine: int = 0, compute_score=None, reward_fn_key: str = "data_source",
                 redo_phrase: str = DEFAULT_REDO_PHRASE, redo_rule: str = "anywhere", max_redo_rounds: int = 5,
                 max_response_length: Optional[int] = None, overlong_buffer_length: int = 2048,
                 overlong_penalty_factor: float = 1.0, overlong_scale: float = 0.5, **unused: Any):
        if unused:
            raise TypeError(f"re2 reward manager got unknown options {sorted(unused)}.")
        self.tokenizer = tokenizer
        self.redo = redo_rule_fn(redo_phrase, redo_rule)
        self.max_redo_rounds = max_redo_rounds
        self.max_response_length = max_response_length
        self.overlong = (overlong_buffer_length, overlong_penalty_factor, overlong_scale)
        self.grader = default_grader()

    def __call__(self, data, return_dict: bool = False):
        responses = data.batch["responses"]
        prompt_len = data.batch["prompts"].shape[-1]
        lengths = data.batch["attention_mask"][:, prompt_len:].sum(-1).tolist()
        outcomes, questions, groups, statuses = [], [], [], []
        for row in range(len(data)):
            reward_model = data.non_tensor_batch["reward_model"][row]
            truth = (reward_model or {}).get("ground_truth")
            if truth is None or str(truth) == "":
                raise ValueError(f"row {row}: reward_model.ground_truth is missing; Re² needs it to grade.")
            text = self.tokenizer.decode(responses[row, : lengths[row]], skip_special_tokens=True)
            grade = self.grader.grade(text, str(truth))
            outcomes.append(classify(text, grade.correct, self.redo))
            statuses.append(grade.status)
            question, group = question_of(row, data.non_tensor_batch)
            questions.append(question)
            groups.append(group)
        scores = three_way_rewards(outcomes, questions, groups, self.max_redo_rounds)
        rewards = scores.copy()
        if self.max_response_length is not None:
            buffer, factor, scale = self.overlong
            rewards += overlong_penalty(lengths, self.max_response_length, min(buffer, self.max_response_length),
                                        factor, scale)
        reward_tensor = torch.zeros_like(responses, dtype=torch.float32)
        for row, length in enumerate(lengths):
            if length > 0:
                reward_tensor[row, length - 1] = float(rewards[row])
        if not return_dict:
            return reward_tensor
        extra = defaultdict(list)
        extra["score"] = scores.tolist()
        extra["acc"] = [float(o == "correct") for o in outcomes]
        extra["redo"] = [float(o == REDO) for o in outcomes]
        extra["grading_timeout"] = [float(s == STATUS_TIMEOUT) for s in statuses]
        return {"reward_tensor": reward_tensor, "reward_extra_info": {k: np.array(v) for k, v in extra.items()}}
