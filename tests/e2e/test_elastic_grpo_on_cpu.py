"""GRPO with an Elastic Attention actor, reference and rollout through verl's trainer on CPU, switched on by
``actor_rollout_ref.model.override_config`` alone: the metrics file shows each step's rollout Omega_MSR and a
rollout/actor log-prob gap at float32 noise. The router adapter sends every head of the first layer to streaming
attention (sink 16, window 8: the ~45-token sequences lose their middle) and every other head to full attention, so
the gap only stays at noise level if the actor routes and attends exactly as the rollout did."""

import pytest

from verl_ext.cpu_smoke import prepare_model, read_metrics, run
from verl_ext.elastic_attention.adapter import fixed_routing_adapter

pytestmark = pytest.mark.slow


def test_elastic_grpo_two_steps(tmp_path, smoke_cache):
    out = tmp_path / "runs"
    model_dir = prepare_model(smoke_cache)
    adapter, expected_msr = fixed_routing_adapter(model_dir, tmp_path / "routers.safetensors", {0})
    result = run(out, config_name="elastic_grpo_cpu_smoke", steps=2, quiet=True, cache=smoke_cache, validate=False,
                 extra=[f"actor_rollout_ref.model.override_config.elastic_adapter={adapter}"])
    assert result["returncode"] == 0, open(result["log"]).read()[-4000:]
    records = [r for r in read_metrics(result["metrics"]) if "timing_s/step" in r["data"]]
    assert len(records) == 2
    for record in records:
        data = record["data"]
        assert data["elastic/rollout_msr/mean"] == pytest.approx(expected_msr)  # the adapter's routing, every step
        assert data["elastic/rollout_msr/responses"] == 64
        assert data["training/rollout_probs_diff_max"] < 1e-4
        # The warm-started model answers, boxing only sometimes: rewards vary within the step and the elastic
        # actor gets a gradient whenever they vary within a group (GRPO's advantages are zero otherwise).
        varied = data["critic/score/max"] > data["critic/score/min"]
        assert (data["actor/grad_norm"] > 0) == (data["critic/advantages/max"] > 0)
        assert varied
