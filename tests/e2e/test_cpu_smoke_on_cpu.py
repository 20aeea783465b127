"""verl's own trainer (`python -m verl.trainer.main_ppo`) trains the tiny model with GRPO on CPU, rollout `hf`,
through `python -m verl_ext.cpu_smoke`: every assertion holds by construction of what the run does (a fixed seed,
a step-capped warm start), never by how fast the machine is."""

import math
from pathlib import Path

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
def smoke(tmp_path_factory, smoke_cache):
    root = tmp_path_factory.mktemp("runs")
    result = run(root, config_name="cpu_smoke", steps=2, quiet=True, cache=smoke_cache)
    assert result["returncode"] == 0, open(result["log"]).read()[-6000:]
    return root, result, read_metrics(result["metrics"])


def _train(records):
    return [r for r in records if "timing_s/step" in r["data"]]


def test_two_steps_with_finite_loss_and_expected_metrics(smoke):
    _, _, records = smoke
    train = _train(records)
    assert [r["step"] for r in train] == [1, 2]
    for record in train:
        data = record["data"]
        assert EXPECTED_KEYS <= set(data), EXPECTED_KEYS - set(data)
        assert math.isfinite(data["actor/pg_loss"]) and math.isfinite(data["actor/grad_norm"])
        assert 0 < data["response_length/mean"] <= 32


def test_validation_before_and_after(smoke):
    _, result, records = smoke
    assert result["val_steps"] == [0, 2] and 0 <= result["val_acc_start"] <= 1 and 0 <= result["val_acc_end"] <= 1
    assert "Final validation metrics: None" not in open(result["log"]).read()


def test_advantages_follow_the_rewards(smoke):
    """GRPO: a step whose scores differ within some group has advantages of both signs and a gradient; one whose
    every group is constant has none (and the warm start leaves answers boxed only sometimes, so scores differ)."""
    _, _, records = smoke
    for record in _train(records):
        data = record["data"]
        varied = data["critic/score/max"] > data["critic/score/min"]
        assert (data["critic/advantages/max"] > 0 > data["critic/advantages/min"]) == varied
        if varied:
            assert data["actor/grad_norm"] > 0


def test_rollout_follows_the_trained_weights(smoke):
    # After step 1's update the hf server must generate with the new weights: its log-probs match the actor's.
    _, _, records = smoke
    assert _train(records)[1]["data"]["training/rollout_probs_diff_mean"] < 1e-4


def test_parameters_changed(smoke):
    _, result, records = smoke
    run_dir = Path(result["run_dir"])
    cfg = (run_dir / "hydra" / ".hydra" / "overrides.yaml").read_text()  # the cached model the run started from
    model_dir = Path(next(line.split("=", 1)[1] for line in cfg.splitlines() if "actor_rollout_ref.model.path=" in line))
    before = load_file(model_dir / "model.safetensors")
    after = load_file(run_dir / "checkpoints" / "global_step_2" / "actor" / "huggingface" / "model.safetensors")
    assert before.keys() == after.keys()
    moved = [k for k in before if not torch.equal(before[k], after[k].to(before[k].dtype))]
    assert len(moved) > len(before) // 2, moved
