import pytest

from verl_ext.re2.trainer_metrics import step_metrics
from verl_ext.trainer_mode import VerlExtSyncTrainer


def _info(outcome, score, group, q_counts):
    return {"re2_outcome": outcome, "re2_length": 10, "score": score, "re2_group": group,
            **{f"re2_q_{k}": v for k, v in q_counts.items()}}


def test_step_metrics_count_each_question_once():
    q1 = {"continuations": 8, "redo": 2, "correct": 3, "groups": 2, "degenerate_groups": 1, "grading_timeouts": 1, "kept": 4}
    q2 = {"continuations": 8, "redo": 0, "correct": 8, "groups": 2, "degenerate_groups": 2, "grading_timeouts": 0, "kept": 0}
    infos = [_info("redo", 0.4, "a/p0", q1), _info("correct", 1.0, "a/p0", q1), _info("incorrect", 0.0, "b/p0", q2)]
    metrics = step_metrics(infos, ["a", "a", "b"])
    assert metrics["re2/redo_rate"] == pytest.approx(2 / 16)
    assert metrics["re2/acc_non_redo"] == pytest.approx(11 / 14)
    assert metrics["re2/degenerate_group_frac"] == pytest.approx(3 / 4)
    assert metrics["grading/timeouts"] == 1 and metrics["re2/trained_rows"] == 3
    assert metrics["re2/redo_reward_mean"] == pytest.approx(0.4)
    assert "re2/generated_tokens" not in metrics  # not counted by the rollout that wrote these rows: absent, not 0
    q1, q2 = q1 | {"generated_tokens": 100}, q2 | {"generated_tokens": 60}
    infos = [_info("redo", 0.4, "a/p0", q1), _info("correct", 1.0, "a/p0", q1), _info("incorrect", 0.0, "b/p0", q2)]
    assert step_metrics(infos, ["a", "a", "b"])["re2/generated_tokens"] == 160


def test_step_without_redo_or_without_answers_leaves_those_figures_out():
    q = {"continuations": 4, "redo": 0, "correct": 2, "groups": 1, "degenerate_groups": 0, "grading_timeouts": 0, "kept": 4}
    metrics = step_metrics([_info("correct", 1.0, "a/p0", q), _info("incorrect", 0.0, "a/p0", q)], ["a", "a"])
    assert metrics["re2/redo_rate"] == 0.0 and "re2/redo_reward_mean" not in metrics and "re2/length/redo" not in metrics
    q = {"continuations": 2, "redo": 2, "correct": 0, "groups": 1, "degenerate_groups": 1, "grading_timeouts": 0, "kept": 0}
    metrics = step_metrics([_info("redo", 0.3, "a/p0", q), _info("redo", 0.3, "a/p0", q)], ["a", "a"])
    assert metrics["re2/redo_rate"] == 1.0 and "re2/acc_non_redo" not in metrics


def test_trainer_behaves_as_verls_sync_mode():
    trainer = VerlExtSyncTrainer.__new__(VerlExtSyncTrainer)
    trainer.trainer_mode = "verl_ext_sync"
    assert trainer.trainer_mode == "sync" and trainer.selected_mode == "verl_ext_sync"


def test_validation_accuracy_under_the_redo_rule():
    from verl_ext.re2.trainer_metrics import redo_rule_validation_metrics

    # q1: correct, redo, wrong -> 1/2 over answered; q2: two redo -> 0 (all redo: plain mean)
    metrics = redo_rule_validation_metrics(
        ["math"] * 5, ["q1", "q1", "q1", "q2", "q2"], {"acc": [1, 0, 0, 0, 0], "redo": [0, 1, 0, 1, 1]})
    assert metrics["val-core/math/re2_avg_redo_rule"] == pytest.approx(0.25)
    assert metrics["val-aux/math/re2_redo_rate"] == pytest.approx(3 / 5)
    assert redo_rule_validation_metrics(["math"], ["q"], {"acc": [1]}) == {}


def test_trainer_adds_redo_rule_metrics_to_verls(monkeypatch):
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    from verl_ext.metric_contributors import add_metric_contributor

    add_metric_contributor("re2_validation", "verl_ext.re2.trainer_metrics:validation_metric_contributor", kind="validation")
    monkeypatch.setattr(PPOTrainer, "_val_metrics_update", lambda self, *a, **k: {"val-core/math/acc/mean@2": 0.5})
    trainer = VerlExtSyncTrainer.__new__(VerlExtSyncTrainer)
    out = trainer._val_metrics_update(["math"] * 2, ["q", "q"], {"acc": [1, 0], "redo": [0, 1]}, [2, 2])
    assert out == {"val-core/math/acc/mean@2": 0.5, "val-core/math/re2_avg_redo_rule": 1.0,
                   "val-aux/math/re2_redo_rate": 0.5}
