"""Pick-and-check, the task of Re² in miniature: candidates, the check, grading, the warm-start mixture."""

import random
from collections import Counter

import pandas as pd
import pytest

from verl_ext.re2.redo import RedoSpec
from verl_ext.scoring.math_grader import MathGrader
from verl_ext.testing import pick_check


def test_candidates_hold_the_answer_and_two_other_digits():
    for x, a in pick_check.all_problems():
        picks = pick_check.candidates(x, a)
        assert len(set(picks)) == 3 and x in picks and all(0 <= p <= 9 for p in picks)
        assert pick_check.candidates(x, a) == picks  # fixed per question and seed
    assert pick_check.question(5, 4).startswith("Find x in ") and "with x + 4 = 9." in pick_check.question(5, 4)


@pytest.mark.parametrize("response,truth", [
    ("Try 5: 5 + 4 = 9, right. The answer is \\boxed{5}.", True),
    ("Try 3: 3 + 4 = 7, not 9. The answer is \\boxed{3}.", True),   # a true check of a wrong pick
    ("Try 3: 3 + 4 = 8, not 9.", False),                            # a wrong sum
    ("Try 3: 3 + 4 = 7, right.", False),                            # a wrong verdict
    ("Try 5: 5 + 4 = 9, not 9.", False),
    ("Try 3: 3 + 4 = 7, not 8.", False),                            # the wrong target
    ("The answer is \\boxed{5}.", None),                            # no check at all
])
def test_check_truth(response, truth):
    assert pick_check.check_truth(5, 4, response) is truth


def test_attempts_grade_and_redo_as_intended():
    grader = MathGrader(timeout_s=5)
    try:
        right, wrong = pick_check.attempt(5, 4, 5), pick_check.attempt(5, 4, 3)
        assert grader.grade(right, "5").correct and not grader.grade(wrong, "5").correct
    finally:
        grader.close()
    redo = pick_check.attempt(5, 4, 3, redo=True)
    assert RedoSpec().is_redo(redo) and not RedoSpec().is_redo(wrong)


def test_the_warm_start_picks_uniformly_and_redoes_only_after_a_failed_check():
    rng, n = random.Random(0), 30_000
    kinds = Counter()
    for _ in range(n):
        question, response = pick_check.warm_start_example(rng, redo_share=0.05)
        a, c = map(int, question.split("with x + ")[1].split(".")[0].split(" = "))
        right = f"Try {c - a}:" in response
        kinds["right"] += right
        kinds["redo"] += "redo the question" in response
        assert not (right and "redo the question" in response)
        assert pick_check.check_truth(c - a, a, response) is True
    assert abs(kinds["right"] / n - 1 / 3) < 0.01  # every question right a third of the time
    assert abs(kinds["redo"] / n - 0.05 * 2 / 3) < 0.005  # only after the two wrong picks in three
    with pytest.raises(ValueError, match="redo_share=1.5"):
        pick_check.warm_start_example(rng, 1.5)


def test_rows_are_disjoint_and_in_verls_schema(tmp_path):
    train, val = pick_check.write_parquet(tmp_path, num_train=64, num_val=36, seed=3)
    a, b = pd.read_parquet(train), pd.read_parquet(val)
    assert len(a) == 64 and len(b) == 36
    assert not set(a["extra_info"].map(lambda e: e["question"])) & set(b["extra_info"].map(lambda e: e["question"]))
    row = a.iloc[0]
    assert row["prompt"][0]["role"] == "user" and row["reward_model"]["ground_truth"] == row["extra_info"]["answer"]
    with pytest.raises(ValueError, match="add up to at most 100"):
        pick_check.split_problems(90, 20)
