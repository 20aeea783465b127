"""Router training through verl's SFT trainer on CPU (tiny model, 6 steps): the metrics file shows the routers
moved, the multipliers rose and Omega_MSR moved toward the targets; the adapter loads into a fresh model."""

import json
import os
import subprocess
import sys

import pytest
import torch

from verl_ext.testing.router_data import write_router_training_data
from verl_ext.testing.tiny_model import TinyModelSpec, build_tiny_model

pytestmark = pytest.mark.slow


def _mean(value):
    flat = [x for part in value for x in (part if isinstance(part, list) else [part])] if isinstance(value, list) \
        else [value]
    return sum(flat) / len(flat)


def test_router_training_smoke(tmp_path):
    model = build_tiny_model(tmp_path / "model", TinyModelSpec(arch="qwen3", hidden=64, heads=4, kv_heads=2))
    data = write_router_training_data(tmp_path / "train.parquet", rows=32)
    metrics_file = tmp_path / "metrics.jsonl"
    env = {**os.environ, "VERL_FILE_LOGGER_PATH": str(metrics_file)}
    cmd = [sys.executable, "-m", "verl_ext.elastic_attention.train_routers", "--config-name",
           "elastic_router_cpu_smoke", f"model.path={model}", f"data.train_files={data}",
           f"trainer.default_local_dir={tmp_path / 'ckpt'}"]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    steps = [json.loads(line)["data"] for line in metrics_file.read_text().splitlines()]
    assert len(steps) == 6
    first, last = steps[0], steps[-1]
    assert _mean(first["elastic/router_update_norm"]) == 0.0  # measured before the first update
    assert _mean(last["elastic/router_update_norm"]) > 0.1
    for task in ("sensitive", "robust"):
        assert _mean(last[f"elastic/lambda1/{task}"]) > _mean(first[f"elastic/lambda1/{task}"])  # gradient ascent
        assert _mean(last[f"elastic/lambda2/{task}"]) > _mean(first[f"elastic/lambda2/{task}"])
    gap_start = _mean(first["elastic/target_gap"])
    gap_end = sum(_mean(s["elastic/target_gap"]) for s in steps[-2:]) / 2
    assert gap_end < gap_start, (gap_start, gap_end)  # Omega moved toward the targets (0.7 and 1.0, from ~0.5)
    assert _mean(last["elastic/omega_mean"]) > _mean(first["elastic/omega_mean"])
    assert all(torch.isfinite(torch.tensor(_mean(s["elastic/lm_loss"]))) for s in steps)

    from transformers import AutoModelForCausalLM

    from verl_ext.elastic_attention.adapter import load_router_adapter
    from verl_ext.elastic_attention.hf import enable_elastic_attention

    adapter = tmp_path / "ckpt" / "router_adapter.safetensors"
    fresh = enable_elastic_attention(AutoModelForCausalLM.from_pretrained(model))
    before = [p.clone() for p in fresh.model.layers[0].self_attn.elastic_router.parameters()]
    load_router_adapter(fresh, adapter)
    after = list(fresh.model.layers[0].self_attn.elastic_router.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    lagrangian = json.loads((tmp_path / "ckpt" / "lagrangian.json").read_text())
    assert lagrangian["tasks"] == ["sensitive", "robust"] and len(lagrangian["lambda1"]) == 2
