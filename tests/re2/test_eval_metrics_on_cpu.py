import json

import pytest

from verl_ext.re2.eval import main
from verl_ext.re2.eval_metrics import Sample, accuracy_by_prefix_fraction, avg_at_k, majority_vote, majority_vote_curve


def S(q, a, correct, redo=False, length=10):
    return Sample(q, a, correct, redo, length)


def test_avg_under_the_redo_rule_hand_computed():
    samples = [S("q1", "1", True), S("q1", None, False, redo=True), S("q1", "2", False),   # 1/2 (redo excluded)
               S("q2", None, False, redo=True), S("q2", None, False, redo=True)]          # all redo -> mean = 0
    result = avg_at_k(samples)
    assert result["avg_redo_rule"] == pytest.approx(0.25)
    assert result["avg_plain"] == pytest.approx((1 / 3 + 0) / 2)
    assert result["redo_rate"] == pytest.approx(3 / 5) and result["avg_rounds"] == pytest.approx(2.5)


def test_majority_vote_rules():
    assert majority_vote([S("q", "7", True), S("q", "7", True), S("q", "8", False)]) == 1.0
    # Redo samples do not vote; ties go to the shorter, then the lexicographically smaller answer.
    assert majority_vote([S("q", "10", False), S("q", "9", True), S("q", "10", False, redo=True)]) == 1.0
    # Only redo samples carry boxed answers: they vote.
    assert majority_vote([S("q", "3", False, redo=True), S("q", None, False, redo=True)]) == 0.0
    assert majority_vote([S("q", None, False), S("q", None, True)]) == 0.5  # nothing boxed: mean score


def test_curve_budgets_and_bad_budget():
    samples = [S("q", str(i % 3), i % 3 == 0) for i in range(8)]
    curve = majority_vote_curve(samples, [1, 8], resamples=50)
    assert curve[8] == 1.0 and 0 < curve[1] < 1
    with pytest.raises(ValueError, match="budget k=9 must be in"):
        majority_vote_curve(samples, [9])


def test_prefix_grid():
    out = accuracy_by_prefix_fraction([0.0, 0.04, 0.19, 0.21, 0.8], [True, False, True, False, False])
    assert [(c["fraction"], c["accuracy"], c["n"]) for c in out] == [(0.0, 0.5, 2), (0.2, 0.5, 2), (0.8, 0.0, 1)]


def test_cli_on_a_verl_validation_dump(tmp_path):
    rows = []
    for q in range(3):
        for i in range(4):
            answer = "It's better to redo the question." if i == 3 else f"so \\boxed{{{q + (i % 2)}}}"
            rows.append({"input": f"question {q}", "output": answer, "gts": str(q), "score": 0.0, "step": 1,
                         "prefix_fraction": 0.2 * i, "prefix_source_correct": i % 2 == 0})
    path = tmp_path / "0.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    for command in ("avg", "tts", "prefix"):
        assert main([command, str(path), "--out", str(tmp_path / "out"), "--resamples", "20"]) == 0
        assert (tmp_path / "out" / f"{command}.json").exists()
    avg = json.loads((tmp_path / "out" / "avg.json").read_text())
    assert avg["avg_redo_rule"] == pytest.approx(2 / 3) and avg["redo_rate"] == pytest.approx(0.25)
    assert (tmp_path / "out" / "tts.png").stat().st_size > 1000
    (tmp_path / "bad.jsonl").write_text('{"input": "q"}\n')
    with pytest.raises(ValueError, match="line 1: no response field"):
        main(["avg", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o2")])


def test_validation_reward_marks_redo():
    from verl_ext.re2.validation_reward import compute_score

    assert compute_score("s", "\\boxed{2}", "2") | {} == {"score": 1.0, "acc": 1.0, "grading_timeout": 0.0,
                                                         "grading_refused": 0.0, "grading_error": 0.0, "redo": 0.0}
    out = compute_score("s", "\\boxed{2} It's better to redo the question.", "2")
    assert (out["score"], out["redo"]) == (0.0, 1.0)


def test_wilson_bounds_never_cross_the_point():
    """At 0 and 1 successes-rate a bound equals the point analytically; rounding must not put it past (a plot's
    error bar would be negative)."""
    from verl_ext.stats import wilson_interval

    for n in (1, 3, 7, 11, 13, 16, 96, 100, 1000):
        for k in (0, n // 3, n):
            low, high = wilson_interval(k, n)
            assert 0 <= low <= k / n <= high <= 1, (k, n, low, high)
