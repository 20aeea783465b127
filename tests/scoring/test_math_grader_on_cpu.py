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
    """Passes every cap, but sympy spins on it: the timeout ends it, the item is counted, the grader goes on."""
    before = grader.stats["timeout"]
    grade = grader.grade("\\boxed{\\sum_{n=1}^{300} n^{n}}", "2")
    assert grade.status == "timeout" and not grade.correct
    assert grader.stats["timeout"] == before + 1
    assert grader.grade("\\boxed{0.25}", "\\frac14").correct  # the grader recovered


@pytest.mark.parametrize("answer,cap", [
    ("9^{9^{9^{9^{9}}}}", "integer power"), ("9^{999999999}", "integer power"), ("200000!", "factorial"),
    ("x+" * 600, "characters"), ("{" * 20 + "1" + "}" * 20, "nesting"),
])
def test_answers_certain_to_be_pathological_are_refused_before_parsing(answer, cap):
    g = MathGrader(timeout_s=3)
    grade = g.grade(f"\\boxed{{{answer}}}", "2")
    assert grade.status == "refused" and cap in grade.detail and not grade.correct
    assert g.stats["refused"] == 1 and g.stats["calls"] == 0  # no child was asked


def test_ordinary_answers_pass_the_caps():
    from verl_ext.scoring.caps import refusal_reason

    for answer in ("2^{2024}", "10^{10^{6}}", "99999!", "\\frac{\\sqrt{3}}{2}", "e^{x^2}", "\\binom{10}{3}", "1.5^{99999999}"):
        assert refusal_reason(answer) is None, answer


def test_a_timeout_hands_over_to_the_warm_spare():
    """The killed child's place goes to the spare started beforehand, so the next item pays no start-up."""
    g = MathGrader(timeout_s=2, workers=1)
    assert g.grade("\\boxed{\\frac{2}{4}}", "\\frac12").correct  # starts the child and the spare
    g._pool._spare_ready.wait(60)
    spare = g._pool._spare
    assert spare is not None and spare.alive
    assert g.grade("\\boxed{(x+y+z)^{60}}", "2").status == "timeout"
    child = g._pool._idle.get(timeout=60)  # put there by the background replacement
    assert child is spare  # the next call gets the warm spare, started before the timeout
    g._pool._idle.put(child)
    assert g.grade("\\boxed{\\frac{3}{6}}", "\\frac12").correct
    assert g.stats["restarts"] == 1
    g.close()


def test_grade_many_runs_children_concurrently(monkeypatch):
    """Two slow items are in flight together on two children (counted, not timed)."""
    from verl_ext.scoring import child_pool

    active, peak, lock = [0], [0], threading.Lock()
    original = child_pool._Child.call

    def counting(self, *args):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            return original(self, *args)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(child_pool._Child, "call", counting)
    g = MathGrader(timeout_s=2, workers=2)
    items = [("\\boxed{(x+y+z)^{60}}", "2"), ("\\boxed{(x+y+z)^{61}}", "2"), ("\\boxed{\\frac{1}{2}}", "0.5")]
    grades = g.grade_many(items)
    assert [gr.status for gr in grades] == ["timeout", "timeout", "correct"]
    assert peak[0] == 2
    g.close()


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
        "score": 1.0, "acc": 1.0, "grading_timeout": 0.0, "grading_refused": 0.0, "grading_error": 0.0}
    assert compute_score("verl_ext/arithmetic", "\\boxed{3}", "2")["score"] == 0.0


@pytest.mark.parametrize("response,truth,status", [("\\boxed{1,000}", "1000", "correct"), ("\\boxed{3.50}", "3.5", "correct"),
                                                   ("\\boxed{-2}", "2", "wrong"), ("\\boxed{12}", "12.0000001", "correct")])
def test_plain_numbers_skip_math_verify(response, truth, status):
    g = MathGrader(timeout_s=3)
    assert g.grade(response, truth).status == status
    assert g.stats["calls"] == 0  # no math-verify child was needed


def test_a_pair_is_not_a_thousands_number(grader):
    assert grader.grade("\\boxed{1,2}", "12").status == "wrong"
