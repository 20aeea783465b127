"""verl's own trainer (`python -m verl.trainer.main_ppo`) trains the tiny model with GRPO on CPU, rollout `hf`."""

import math
import pytest
import torch
from safetensors.torch import load_file

from verl_ext.cpu_smoke import read_metrics, run

pytestmark = pytest.mark.slow

EXPECTED_KEYS = {
    "actor/pg_loss", "actor/grad_norm", "actor/lr", "critic/score/mean", "critic/advantages/max",
    "critic/advantages/min", "response_length/mean", "timing_s/gen", "timing_s/update_actor", "timing_s/step",
    "training/rollout_probs_diff_mean",
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("cpu_smoke")
    result = run(out, steps=2, config_name="cpu_smoke")
    log = open(result["log"]).read()
    assert result["returncode"] == 0, log[-6000:]
    return out, read_metrics(result["metrics"])


def test_two_steps_with_finite_loss_and_expected_metrics(smoke):
    _, records = smoke
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        data = record["data"]
        assert EXPECTED_KEYS <= set(data), EXPECTED_KEYS - set(data)
        assert math.isfinite(data["actor/pg_loss"]) and math.isfinite(data["actor/grad_norm"])
        assert 0 < data["response_length/mean"] <= 32


def test_advantages_are_not_all_zero(smoke):
    _, records = smoke
    assert any(r["data"]["critic/advantages/max"] > 0 and r["data"]["critic/advantages/min"] < 0 for r in records)
    assert any(r["data"]["actor/grad_norm"] > 0 for r in records)


def test_rollout_follows_the_trained_weights(smoke):
    # After step 1's update the hf server must generate with the new weights: its log-probs match the actor's.
    _, records = smoke
    assert records[1]["data"]["training/rollout_probs_diff_mean"] < 1e-4


def test_parameters_changed(smoke):
    out, _ = smoke
    before = load_file(out / "model" / "model.safetensors")
    after = load_file(out / "checkpoints" / "global_step_2" / "actor" / "huggingface" / "model.safetensors")
    assert before.keys() == after.keys()
    moved = [k for k in before if not torch.equal(before[k], after[k].to(before[k].dtype))]
    assert len(moved) > len(before) // 2, moved
