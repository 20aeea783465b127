"""The papers-in-miniature benchmarks' quick modes: the same code path as the full runs at tiny sizes and a few
steps; every headline figure is produced and finite and every picture is written (the effects themselves are the
full runs' business: BENCHMARKS.md)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_elastic_miniature_quick(tmp_path):
    out = tmp_path / "elastic"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "elastic_miniature.py"), "--quick", "--out",
                          str(out)], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    for key in ("msr_retrieval", "msr_local", "acc_dense_retrieval", "acc_routed_retrieval", "acc_static_retrieval",
                "acc_sparse_retrieval", "acc_dense_local", "acc_routed_local", "wall_s"):
        assert isinstance(summary[key], (int, float)) and math.isfinite(summary[key]), key
        assert key == "wall_s" or 0.0 <= summary[key] <= 1.0, key
    assert set(summary["targets"]) == {"msr_gap_ge_0.3", "routed_within_0.02_of_dense", "routed_beats_static_by_0.05"}
    for png in ("accuracy_msr.png", "accuracy_vs_msr.png", "routing_heatmaps.png", "router_training.png"):
        assert (out / png).stat().st_size > 5000, png
    results = json.loads((out / "results.json").read_text())
    assert results["results"]["dense"]["retrieval"]["msr"] == 0.0  # all heads full
    assert results["results"]["sparse"]["local"]["msr"] == 1.0  # all heads sparse


@pytest.mark.slow
def test_re2_miniature_quick(tmp_path):
    """One step of Re² and of the budget-matched baseline through verl's trainer, then the held-out evaluation."""
    out = tmp_path / "re2"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "re2_miniature.py"), "--quick", "--seeds", "0",
                          "--out", str(out)], capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["seeds"] == [0]
    for key in ("redo_rate_start", "redo_rate_end", "acc_re2_end", "acc_baseline_end", "acc_gain_mean",
                "acc_gain_min_seed", "wall_s"):
        assert isinstance(summary[key], (int, float)) and math.isfinite(summary[key]), key
    for key in ("redo_rate_start", "redo_rate_end", "acc_re2_end", "acc_baseline_end"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["acc_gain_mean"] == pytest.approx(summary["acc_re2_end"] - summary["acc_baseline_end"])
    for method in ("re2", "baseline", "start"):
        curve = summary[f"tts_{method}"]
        assert len(curve) == len(summary["tts_budgets"]) and all(0.0 <= v <= 1.0 for v in curve), method
    assert set(summary["targets"]) == {"redo_rate_end_ge_0.10_and_10x", "acc_gain_mean_ge_0.03",
                                       "gain_positive_every_seed", "tts_re2_above_from_8"}
    results = json.loads((out / "results.json").read_text())["seeds"][0]
    for method in ("re2", "baseline"):  # validation before and after the step; tokens counted for both methods
        curve = results["curves"][method]
        assert curve["steps"] == [0, 1] and curve["tokens"][0] == 0 and curve["tokens"][1] > 0, method
    for png in ("learning_curves.png", "tts.png"):
        assert (out / png).stat().st_size > 5000, png
