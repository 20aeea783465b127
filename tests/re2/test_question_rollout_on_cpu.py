"""One question's two-stage rollout with a scripted generator: prefixes, truncation, Eq. 1 rewards, filtering."""

import asyncio
import random

import pytest

from verl_ext.re2.config import Re2Config
from verl_ext.re2.question_rollout import filter_metric_values, rollout_question
from verl_ext.scoring.math_grader import MathGrader

REDO = "It's better to redo the question."


class ScriptedGenerator:
    """Full responses, then continuations chosen by prefix group: records every prompt it was sent."""

    def __init__(self, tokenizer, full_text, continuation_texts):
        self.tok = tokenizer
        self.full = tokenizer.encode(full_text, add_special_tokens=False)
        self.continuations = [tokenizer.encode(t, add_special_tokens=False) for t in continuation_texts]
        self.prompts = []
        self.calls = 0

    async def __call__(self, prompt_ids, max_tokens):
        self.prompts.append(list(prompt_ids))
        self.calls += 1
        if self.calls <= 2:  # stage 1: two full responses
            return list(self.full), None, {"global_steps": 3}
        index = (self.calls - 3) % len(self.continuations)
        return list(self.continuations[index]), None, {"global_steps": 3}


@pytest.fixture(scope="module")
def grader():
    g = MathGrader(timeout_s=5)
    yield g
    g.close()


def _run(tokenizer, detector, grader, generator, **cfg):
    config = Re2Config(continuations_per_prefix=3, **cfg)
    prompt = tokenizer.encode("Compute 2 + 2.", add_special_tokens=False)
    return asyncio.run(rollout_question("q7", prompt, "4", 2, config, generator, grader.grade, detector,
                                        tokenizer.eos_token_id, 32, random.Random(0))), prompt


def test_two_stages_rewards_and_prompts(tokenizer, detector, grader):
    texts = ["2 + 2 = 4. \\boxed{4}", "2 + 2 = 5 " + REDO + " trailing", "\\boxed{5}"]
    gen = ScriptedGenerator(tokenizer, "2 + 2 = 4, so the answer is \\boxed{4}.", texts)
    result, prompt = _run(tokenizer, detector, grader, gen, filter_degenerate_groups=False)
    assert gen.calls == 2 + 2 * 3
    assert [len(p) for p in gen.prompts[:2]] == [len(prompt)] * 2  # stage 1 from the bare prompt
    for group in result.groups:  # stage 2 prompts are prompt + a prefix of a full response, joined as tokens
        assert group.continuation_prompt_ids[: len(prompt)] == prompt
        assert list(group.prefix_ids) == gen.full[: len(group.prefix_ids)]
    outcomes = [c.outcome for c in result.continuations]
    assert outcomes == ["correct", "redo", "incorrect"] * 2
    redo = [c for c in result.continuations if c.outcome == "redo"]
    assert all(c.text.endswith(REDO) and c.token_ids[-1] == tokenizer.eos_token_id for c in redo)
    # Out-of-group for one redo row: the other group's {correct, redo, incorrect}: P(c)=1/3, P(r)=1/3.
    assert redo[0].score == pytest.approx((1 / 3) * (1 - (1 / 3) ** 5) / (2 / 3))
    assert redo[0].row_uid == "q7/p0#redo" and result.continuations[0].row_uid == "q7/p0"
    assert result.summary()["redo"] == 2 and result.summary()["continuations"] == 6
    # The budget counts every sampled token: both full responses and each continuation before its redo cut.
    sampled = [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts] * 2
    assert result.summary()["generated_tokens"] == 2 * len(gen.full) + sum(sampled)
    assert sum(len(c.token_ids) for c in result.continuations) < sum(sampled)  # the redo rows were cut


def test_degenerate_groups_are_dropped_and_flagged_for_eviction(tokenizer, detector, grader):
    gen = ScriptedGenerator(tokenizer, "\\boxed{4}", ["\\boxed{4}"])
    result, _ = _run(tokenizer, detector, grader, gen)
    assert result.kept == [] and result.summary()["degenerate_groups"] == 2
    assert set(filter_metric_values(result)) == {0.0}  # constant: verl's group filter evicts the question


def test_missing_ground_truth(tokenizer, detector, grader):
    gen = ScriptedGenerator(tokenizer, "x", ["y"])
    with pytest.raises(ValueError, match="question q1: reward_model.ground_truth is missing"):
        asyncio.run(rollout_question("q1", [1, 2], None, 2, Re2Config(), gen, grader.grade, detector,
                                     tokenizer.eos_token_id, 16, random.Random(0)))
