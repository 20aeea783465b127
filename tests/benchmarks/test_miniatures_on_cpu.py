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
