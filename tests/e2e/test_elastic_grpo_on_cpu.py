"""GRPO with an Elastic Attention actor, reference and rollout through verl's trainer on CPU, switched on by
``actor_rollout_ref.model.override_config`` alone: the metrics file shows each step's rollout Omega_MSR and a
rollout/actor log-prob gap at float32 noise. The router adapter sends every head of the first layer to streaming
attention (window 8, shorter than the ~35-token prompts) and every other head to full attention, so the gap only
stays at noise level if the actor routes and attends exactly as the rollout did."""

import pytest
import torch

from verl_ext.cpu_smoke import prepare, read_metrics, run

pytestmark = pytest.mark.slow


def _first_layer_sparse_adapter(model_dir, path):
    from transformers import AutoModelForCausalLM

    from verl_ext.elastic_attention.adapter import save_router_adapter
    from verl_ext.elastic_attention.hf import enable_elastic_attention

    model = enable_elastic_attention(AutoModelForCausalLM.from_pretrained(model_dir))
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            head = layer.self_attn.elastic_router.router_mlp[-1]
            head.weight.zero_()
            head.bias.copy_(torch.tensor([10.0, -10.0] if i == 0 else [-10.0, 10.0]))  # (sparse, full) logits
    return save_router_adapter(model, path), 1 / len(model.model.layers)


def test_elastic_grpo_two_steps(tmp_path):
    out = tmp_path / "elastic"
    model_dir, _, _ = prepare(out)
    adapter, expected_msr = _first_layer_sparse_adapter(model_dir, tmp_path / "routers.safetensors")
    result = run(out, steps=2, config_name="elastic_grpo_cpu_smoke",
                 extra=[f"+actor_rollout_ref.model.override_config.elastic_adapter={adapter}"])
    assert result["returncode"] == 0, open(result["log"]).read()[-4000:]
    records = read_metrics(result["metrics"])
    assert len(records) == 2
    for record in records:
        data = record["data"]
        assert data["elastic/rollout_msr/mean"] == pytest.approx(expected_msr)  # the adapter's routing, every step
        assert data["elastic/rollout_msr/responses"] == 16
        assert data["training/rollout_probs_diff_max"] < 1e-4
        assert data["actor/pg_loss"] == data["actor/pg_loss"]  # finite: the elastic actor trained
