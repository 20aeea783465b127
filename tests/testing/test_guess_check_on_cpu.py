"""The guess-and-check task of Re² in miniature: questions, graded answers, the warm start's mixture, the rows."""

import random
from collections import Counter

import pandas as pd
import pytest

from verl_ext.re2.redo import DEFAULT_REDO_PHRASE, redo_rule
from verl_ext.scoring.math_grader import MathGrader
from verl_ext.testing import guess_check


@pytest.fixture(scope="module")
def grader():
    g = MathGrader(timeout_s=5)
    yield g
    g.close()


def test_a_right_guess_is_graded_correct_and_a_wrong_one_is_not(grader):
    assert guess_check.question(4, 5) == "Find x with x + 5 = 9. Put the final answer in \\boxed{}."
    right, wrong = guess_check.attempt(4, 5, 4), guess_check.attempt(4, 5, 2)
    assert right == "Try 4: 4 + 5 = 9, right. The answer is \\boxed{4}."
    assert wrong == "Try 2: 2 + 5 = 7, not 9. The answer is \\boxed{2}."
    assert [g.correct for g in grader.grade_many([(right, "4"), (wrong, "4")])] == [True, False]


def test_the_redo_ending_is_a_redo_under_every_rule():
    text = guess_check.attempt(4, 5, 2, redo=True)
    assert text == "Try 2: 2 + 5 = 7, not 9. " + DEFAULT_REDO_PHRASE
    # "strict" (the official reward's check) looks only in the last third of a response: shorter than this one's
    # phrase here, so the task runs with the default rule, "anywhere".
    assert not redo_rule(DEFAULT_REDO_PHRASE, "strict")(text)
    for rule in ("anywhere", "eval"):
        assert redo_rule(DEFAULT_REDO_PHRASE, rule)(text), rule
        assert not redo_rule(DEFAULT_REDO_PHRASE, rule)(guess_check.attempt(4, 5, 2)), rule


def test_warm_start_half_knows_small_sums_and_redoes_only_after_a_failed_check():
    rng = random.Random(0)
    draws = [guess_check.warm_start_example(rng, redo_share=0.2, known_share=0.5) for _ in range(40000)]
    right, redo = Counter(), 0
    total = Counter()
    for question, response in draws:
        c = int(question.split("= ")[1].split(".")[0])
        a = int(question.split("+ ")[1].split(" ")[0])
        guess = int(response.split(":")[0].removeprefix("Try "))
        small = guess_check.is_small(c - a, a)
        total[small] += 1
        right[small] += guess == c - a
        if DEFAULT_REDO_PHRASE in response:
            redo += 1
            assert guess != c - a and ", not " in response, response  # only after a failed check
    # Small sums: right with 0.5, else a uniform digit (right 1 in 10); large sums: uniform.
    assert right[True] / total[True] == pytest.approx(0.5 + 0.5 * 0.1, abs=0.01)
    assert right[False] / total[False] == pytest.approx(0.1, abs=0.01)
    assert total[True] / len(draws) == pytest.approx(0.55, abs=0.01)
    wrong = 1 - (right[True] + right[False]) / len(draws)
    assert redo / len(draws) == pytest.approx(wrong * 0.2, abs=0.01)
    assert not any(DEFAULT_REDO_PHRASE in r for _, r in
                   (guess_check.warm_start_example(random.Random(1), redo_share=0.0) for _ in range(2000)))


def test_rows_are_disjoint_and_in_verls_schema(tmp_path):
    train, val = guess_check.write_parquet(tmp_path, num_train=64, num_val=36, seed=3)
    train, val = pd.read_parquet(train), pd.read_parquet(val)
    assert len(train) == 64 and len(val) == 36
    questions = [set(df["extra_info"].map(lambda e: e["question"])) for df in (train, val)]
    assert len(questions[0]) == 64 and len(questions[1]) == 36 and not questions[0] & questions[1]
    row = val.iloc[0]
    assert row["data_source"] == guess_check.DATA_SOURCE and row["prompt"][0]["role"] == "user"
    x = int(row["reward_model"]["ground_truth"])
    content = row["prompt"][0]["content"]
    assert guess_check.question(x, int(content.split("+ ")[1].split(" ")[0])) == content
    assert Counter(guess_check.split_problems(64, 36, seed=3)[1]) == Counter(guess_check.split_problems(64, 36, 3)[1])


@pytest.mark.parametrize("kwargs, match", [({"num_train": 90, "num_val": 20}, "at most 100"),
                                           ({"num_train": 0, "num_val": 20}, "must be >= 1")])
def test_bad_sizes_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        guess_check.split_problems(**kwargs)


def test_digits_are_checked():
    with pytest.raises(ValueError, match="single digits"):
        guess_check.attempt(4, 12, 3)


def test_a_tiny_model_warm_starts_on_the_task(tmp_path):
    from verl_ext.testing.tiny_model import TinyModelSpec, build_tiny_model
    from verl_ext.testing.warm_start import warm_start_on

    model_dir = build_tiny_model(tmp_path / "m", TinyModelSpec(), corpus=guess_check.corpus())
    report = warm_start_on(model_dir, lambda rng: guess_check.warm_start_example(rng, 0.01), steps=30, batch_size=8)
    assert report["steps"] == 30 and report["last_loss"] < 0.5 * report["first_loss"]
    with pytest.raises(ValueError, match="steps >= 1"):
        warm_start_on(model_dir, lambda rng: guess_check.warm_start_example(rng, 0.01), steps=0)
