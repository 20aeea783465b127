import threading

import pytest

from verl_ext.scoring.math_grader import MathGrader, last_boxed
from verl_ext.scoring.verl_reward import compute_score


@pytest.fixture(scope="module")
def grader():
    g = MathGrader(timeout_s=3)
    yield g
    g.close()


def test_last_boxed():
    assert last_boxed("a \\boxed{1} then \\boxed{\\frac{1}{2}} end") == "\\frac{1}{2}"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("no box") is None and last_boxed("\\boxed{unclosed") is None


@pytest.mark.parametrize(
    "response,truth,status",
    [
        ("so \\boxed{0.5}", "\\frac{1}{2}", "correct"),
        ("\\boxed{\\{1,2\\}}", "\\{2,1\\}", "correct"),
        ("The answer is \\boxed{7}.", "7", "correct"),
        ("\\boxed{3}", "2", "wrong"),
        ("\\boxed{\\pi}", "3.14", "wrong"),
        ("I do not know", "2", "no_answer"),
    ],
)
def test_grades(grader, response, truth, status):
    assert grader.grade(response, truth).status == status


def test_pathological_latex_times_out_is_counted_and_does_not_stall(grader):
    before = grader.stats["timeout"]
    grade = grader.grade("\\boxed{9^{9^{9^{9^{9}}}}}", "2")
    assert grade.status == "timeout" and not grade.correct
    assert grader.stats["timeout"] == before + 1
    assert grader.grade("\\boxed{0.25}", "\\frac14").correct  # the grader recovered


def test_works_from_threads(grader):
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(grader.grade(f"\\boxed{{{i}.0}}", str(i)).status))
               for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["correct"] * 6


def test_missing_ground_truth_is_an_error(grader):
    with pytest.raises(ValueError, match="ground_truth is empty"):
        grader.grade("\\boxed{1}", "")
    with pytest.raises(ValueError, match="row 5 of data_source='x' has no reward_model.ground_truth"):
        compute_score("x", "\\boxed{1}", None, {"index": 5})


def test_verl_reward_function():
    assert compute_score("verl_ext/arithmetic", "1 + 1 = 2. The answer is \\boxed{2}.", "2") == {
        "score": 1.0, "acc": 1.0, "grading_timeout": 0.0, "grading_error": 0.0}
    assert compute_score("verl_ext/arithmetic", "\\boxed{3}", "2")["score"] == 0.0


@pytest.mark.parametrize("response,truth,status", [("\\boxed{1,000}", "1000", "correct"), ("\\boxed{3.50}", "3.5", "correct"),
                                                   ("\\boxed{-2}", "2", "wrong"), ("\\boxed{12}", "12.0000001", "correct")])
def test_plain_numbers_skip_math_verify(response, truth, status):
    g = MathGrader(timeout_s=3)
    assert g.grade(response, truth).status == status
    assert g.stats["calls"] == 0  # no math-verify child was needed


def test_a_pair_is_not_a_thousands_number(grader):
    assert grader.grade("\\boxed{1,2}", "12").status == "wrong"
