"""The full two-stage Re² loop trains the tiny model inside verl's trainer (main_ppo), and logs its metrics."""

import math

import pytest

from verl_ext.cpu_smoke import read_metrics, run

pytestmark = pytest.mark.slow

RE2_KEYS = {"re2/redo_rate", "re2/degenerate_group_frac", "re2/kept_frac", "grading/timeouts", "grading/refused"}
REDO_ONLY = {"re2/length/redo", "re2/redo_reward_mean"}  # present exactly when the step has redo rows


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("re2_smoke")
    result = run(out, steps=2, config_name="re2_cpu_smoke")
    assert result["returncode"] == 0, open(result["log"]).read()[-6000:]
    return read_metrics(result["metrics"])


def _train(records):
    return [r for r in records if "actor/pg_loss" in r["data"]]


def test_validation_reports_accuracy_under_the_redo_rule(records):
    val = [r["data"] for r in records if any(k.endswith("/re2_avg_redo_rule") for k in r["data"])]
    assert val, "no validation record with re2_avg_redo_rule"
    key = next(k for k in val[0] if k.endswith("/re2_avg_redo_rule"))
    assert 0 <= val[0][key] <= 1


def test_two_steps_with_re2_metrics(records):
    records = _train(records)
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        data = record["data"]
        assert RE2_KEYS <= set(data), RE2_KEYS - set(data)
        assert (REDO_ONLY <= set(data)) == (data["re2/redo_rate"] > 0), data
        assert math.isfinite(data["actor/pg_loss"]) and data["re2/num_continuations"] > 0
        assert 0 <= data["re2/redo_rate"] <= 1 and 0 <= data["re2/degenerate_group_frac"] <= 1
        assert data["grading/timeouts"] == 0


def test_every_outcome_class_occurs_and_advantages_move(records):
    records = _train(records)
    # The warm start teaches the redo phrase, so redo rows (with their Eq. 1 reward) appear next to answers.
    assert any(r["data"]["re2/redo_rate"] > 0 for r in records)
    assert any(0 < r["data"]["re2/acc_non_redo"] < 1 for r in records)
    assert any(r["data"]["critic/advantages/max"] > 0 for r in records)
    assert all(r["data"]["re2/trained_rows"] > 0 for r in records)
