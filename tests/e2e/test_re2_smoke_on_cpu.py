"""The full two-stage Re² loop trains the tiny model inside verl's trainer (main_ppo) through the main job
(`python -m verl_ext.cpu_smoke`), and logs its metrics; assertions hold by construction of the run."""

import math

import pytest

from verl_ext.cpu_smoke import read_metrics, run

pytestmark = pytest.mark.slow

RE2_KEYS = {"re2/redo_rate", "re2/degenerate_group_frac", "re2/kept_frac", "grading/timeouts", "grading/refused",
            "re2/trained_rows", "re2/generated_tokens"}
REDO_ONLY = {"re2/length/redo", "re2/redo_reward_mean"}  # present exactly when the step has redo rows


@pytest.fixture(scope="module")
def result(tmp_path_factory, smoke_cache):
    result = run(tmp_path_factory.mktemp("runs"), config_name="re2_cpu_smoke", steps=2, quiet=True, cache=smoke_cache)
    assert result["returncode"] == 0, open(result["log"]).read()[-6000:]
    return result


def _train(records):
    return [r for r in records if "timing_s/step" in r["data"]]


def test_validation_reports_accuracy_under_the_redo_rule_before_and_after(result):
    assert result["val_steps"] == [0, 2]
    assert 0 <= result["val_acc_start"] <= 1 and 0 <= result["redo_rate_start"] <= 1
    log = open(result["log"]).read()
    assert "Final validation metrics: {" in log and "Final validation metrics: None" not in log


def test_two_steps_with_re2_metrics(result):
    records = _train(read_metrics(result["metrics"]))
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        data = record["data"]
        assert RE2_KEYS <= set(data), RE2_KEYS - set(data)
        assert (REDO_ONLY <= set(data)) == (data["re2/redo_rate"] > 0), data
        assert math.isfinite(data["actor/pg_loss"]) and data["re2/num_continuations"] > 0
        assert data["re2/generated_tokens"] > data["re2/num_continuations"]  # full responses too, >= 1 token each
        assert 0 <= data["re2/redo_rate"] <= 1 and 0 <= data["re2/degenerate_group_frac"] <= 1
        assert data["grading/timeouts"] == 0
        # re2.update_steps=matched: one mini-batch of 8 questions' rows, one optimizer step, as GRPO's main job
        assert data["training/optimizer_steps"] == 1


def test_trained_rows_come_from_groups_that_differ(result):
    """The degenerate-group filter keeps prefix groups whose scores differ, so every trained row has an
    advantage of its group's sign, and a step with trained rows has a gradient."""
    for record in _train(read_metrics(result["metrics"])):
        data = record["data"]
        if data["re2/trained_rows"] > 0 and data["re2/kept_frac"] > 0:
            assert data["critic/advantages/max"] > 0 > data["critic/advantages/min"]
            assert data["actor/grad_norm"] > 0
