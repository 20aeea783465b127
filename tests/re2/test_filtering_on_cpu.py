import pytest

from verl_ext.re2.filtering import degenerate_groups, keep_mask, re2_metrics


def test_degenerate_groups():
    scores = [1, 1, 0, 1, 0.3, 0.3, 0.5]
    groups = ["a", "a", "b", "b", "c", "c", "d"]
    assert degenerate_groups(scores, groups) == {"a", "c", "d"}
    assert keep_mask(scores, groups).tolist() == [False, False, True, True, False, False, False]


def test_metrics_hand_computed():
    outcomes = ["correct", "incorrect", "redo", "redo", "correct", "incorrect"]
    metrics = re2_metrics(outcomes, [10, 20, 5, 7, 12, 30], [1, 0, 0.4, 0.6, 1, 0], ["a", "a", "b", "b", "c", "c"],
                          kept=[True] * 4 + [False] * 2)
    assert metrics["re2/redo_rate"] == pytest.approx(2 / 6)
    assert metrics["re2/acc_non_redo"] == pytest.approx(0.5)
    assert metrics["re2/length/redo"] == 6 and metrics["re2/length/correct"] == 11
    assert metrics["re2/redo_reward_mean"] == pytest.approx(0.5)
    assert metrics["re2/degenerate_group_frac"] == 0.0
    assert metrics["re2/kept_frac"] == pytest.approx(4 / 6)


def test_figures_over_absent_rows_are_left_out():
    no_redo = re2_metrics(["correct", "incorrect"], [3, 4], [1, 0], ["a", "a"])
    assert no_redo["re2/redo_rate"] == 0.0
    assert not {"re2/redo_reward_mean", "re2/length/redo"} & set(no_redo)
    all_redo = re2_metrics(["redo", "redo"], [3, 4], [0.2, 0.4], ["a", "a"])
    assert "re2/acc_non_redo" not in all_redo and all_redo["re2/redo_reward_mean"] == pytest.approx(0.3)
