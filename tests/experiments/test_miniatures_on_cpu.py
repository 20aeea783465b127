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
    """Two seeds of the quick preset: every headline figure of the report, per-seed results and pictures, and a
    second call that resumes instead of rerunning."""
    out = tmp_path / "elastic"
    cmd = [sys.executable, str(ROOT / "experiments" / "elastic_miniature.py"), "--quick", "--seeds", "0", "1",
           "--out", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["seeds"] == [0, 1]
    for key in ("routed_minus_dense_worst", "msr_gap_mean", "wall_s"):
        assert isinstance(report[key], (int, float)) and math.isfinite(report[key]), key
    assert set(report["beats_static_seeds"]) <= {0, 1} and set(report["oracle_static_keeps_all"]) <= {0, 1}
    assert 0 <= report["below_static_curve_points"] <= report["curve_points"] == 2 * 2  # 2 seeds x 2 budgets
    assert len(report["goals"]) == 4 and all(isinstance(v, bool) for v in report["goals"].values())
    for seed in (0, 1):
        results = json.loads((out / f"seed-{seed}" / "results.json").read_text())
        summary = results["summary"]
        assert summary["dense_solved"] is True
        for key in ("msr_retrieval", "msr_local", "acc_dense_retrieval", "acc_routed_retrieval",
                    "acc_static_retrieval", "acc_static_floor_retrieval", "acc_static_ceil_retrieval",
                    "acc_static_frequency_retrieval", "acc_sparse_retrieval", "acc_dense_local", "acc_routed_local"):
            assert 0.0 <= summary[key] <= 1.0, key
        assert results["results"]["dense"]["retrieval"]["msr"] == 0.0  # all heads full
        assert results["results"]["sparse"]["local"]["msr"] == 1.0  # all heads sparse
        curve = results["static_curve"]
        assert [p["k"] for p in curve] == list(range(summary["preset_heads"] + 1))
        assert curve[0]["acc_retrieval"] == summary["acc_sparse_retrieval"]  # no full head = all sparse
        assert curve[-1]["acc_retrieval"] == summary["acc_dense_retrieval"]  # every head full = dense
        assert [len(h) for h in results["oracle"]["heads"]] == [p["k"] for p in curve]
        assert 0 <= summary["needed_heads"] <= summary["preset_heads"]
        for png in ("accuracy_msr.png", "accuracy_vs_msr.png", "accuracy_vs_msr_budgets.png",
                    "routing_heatmaps.png", "router_training.png"):
            assert (out / f"seed-{seed}" / png).stat().st_size > 5000, png
    assert (out / "accuracy_vs_msr_seeds.png").stat().st_size > 5000
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("done before") == 2  # resumable per seed
    assert json.loads(again.stdout.strip().splitlines()[-1]) == report


def test_elastic_miniature_unsolved_seed_is_reported(tmp_path):
    """A seed whose dense model does not solve both tasks within the caps trains no routers, says so, and is left
    out of the goals (listed as unsolved) instead of passing the oracle check at chance."""
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import dataclasses

        from elastic_miniature import aggregate, run_seed
        from elastic_miniature_tasks import PRESETS
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    logs = []
    summary = run_seed(dataclasses.replace(PRESETS["quick"], solved=1.01), 0, tmp_path / "seed-0", logs.append)
    assert summary["dense_solved"] is False and "routed_minus_dense" not in summary
    assert any("did not solve both tasks" in m for m in logs)
    report = aggregate([summary], summary["wall_s"])
    assert report["seeds"] == [] and report["unsolved_seeds"] == [0]
    assert report["goals"] == {"dense_model_solved_some_seed": False}


def test_re2_miniature_gate():
    """The premise gate stops a seed whose warm start does not meet Re²'s premise, naming what fell short."""
    sys.path.insert(0, str(ROOT / "experiments"))  # the experiment's own folder, as running it as a script does
    try:
        from re2_miniature import GATE, gate_failures
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    assert gate_failures({"premise_ratio": 5.0, "check_truth": 0.95}) == {}
    assert gate_failures({"premise_ratio": 1.5, "check_truth": 0.95}) == {"premise_ratio": (1.5, GATE["premise_ratio"])}
    assert set(gate_failures({"premise_ratio": 0.0, "check_truth": 0.1})) == {"premise_ratio", "check_truth"}


@pytest.mark.slow
def test_re2_miniature_quick(tmp_path):
    """The premise gate on the warm start, one step of Re² and of the budget-matched baseline through verl's trainer,
    then the evaluation chain (dump, eval avg|tts|prefix) on every checkpoint; a second call resumes from the
    finished seed instead of rerunning it."""
    out = tmp_path / "re2"
    cmd = [sys.executable, str(ROOT / "experiments" / "re2_miniature.py"), "--quick", "--seeds", "0", "--out", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["seeds"] == [0]
    for key in ("premise_ratio", "check_truth", "wall_s"):
        assert isinstance(summary[key], (int, float)) and math.isfinite(summary[key]), key
    assert 0 <= summary["check_truth"] <= 1 and summary["premise_ratio"] >= 0
    result = json.loads((out / "seed-0" / "result.json").read_text())
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert summary["gate_failed_seeds"] == [] and isinstance(result["gate"], dict)  # measured; quick: not enforced
    for key in ("redo_rate_start", "redo_rate_end", "acc_re2_end", "acc_baseline_end", "acc_gain_mean",
                "optimizer_steps_re2", "optimizer_steps_baseline", "tts64_gain_mean"):
        assert isinstance(summary[key], (int, float)) and math.isfinite(summary[key]), key
    assert summary["optimizer_steps_re2"] == summary["optimizer_steps_baseline"] == 1  # equal update budgets
    assert summary["acc_gain_mean"] == pytest.approx(summary["acc_re2_end"] - summary["acc_baseline_end"])
    for name in ("start", "re2_last", "re2_best", "baseline_last", "baseline_best"):
        curve = summary["tts"][name]
        assert len(curve) == len(summary["tts_budgets"]) and all(0.0 <= v <= 1.0 for v in curve), name
    for method in ("re2", "baseline"):  # validation before and after the step; tokens counted for both methods
        curve = result["curves"][method]
        assert curve["steps"] == [0, 1] and curve["tokens"][0] == 0 and curve["tokens"][1] > 0, method
    assert set(result["section3"]) == {"start", "re2_last"}
    # one step: the best validation checkpoint is the last one, evaluated once and reported under both names
    assert result["best_step_re2"] == 1 and result["eval"]["re2_best"] == result["eval"]["re2_last"]
    assert not (out / "seed-0" / "re2_best").exists() and (out / "seed-0" / "re2_last" / "tts").is_dir()
    phases = {"warm_start", "premise", "train_re2", "train_baseline", "evaluation_chain", "section3"}
    assert set(result["phase_s"]) == set(summary["phase_s_mean"]) == phases
    assert sum(result["phase_s"].values()) <= result["wall_s"] + 1.0
    for png in ("learning_curves.png", "tts.png", "section3.png"):
        assert (out / png).stat().st_size > 5000, png
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0 and "done before" in again.stdout  # resumable per seed
