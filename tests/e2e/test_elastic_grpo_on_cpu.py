"""GRPO with an Elastic Attention actor, reference and rollout through verl's trainer on CPU, switched on by
``actor_rollout_ref.model.override_config.elastic_attention`` alone: the metrics file shows each step's rollout
Omega_MSR and a rollout/actor log-prob gap at float32 noise, which with sparse heads whose window (8) is shorter than
the prompts (~35 tokens) only holds if the actor routes and attends exactly as the rollout did."""

import pytest

from verl_ext.cpu_smoke import read_metrics, run

pytestmark = pytest.mark.slow


def test_elastic_grpo_two_steps(tmp_path):
    result = run(tmp_path / "elastic", steps=2, config_name="elastic_grpo_cpu_smoke")
    assert result["returncode"] == 0, open(result["log"]).read()[-4000:]
    records = read_metrics(result["metrics"])
    assert len(records) == 2
    for record in records:
        data = record["data"]
        assert 0 < data["elastic/rollout_msr/mean"] < 1  # some heads sparse, some full
        assert data["elastic/rollout_msr/responses"] == 16
        assert data["training/rollout_probs_diff_max"] < 1e-4
        assert data["actor/pg_loss"] == data["actor/pg_loss"]  # finite: the elastic actor trained
