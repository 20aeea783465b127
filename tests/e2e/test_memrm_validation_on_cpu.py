"""MemoryRewardBench as a verl validation run (`trainer.val_only=True`) on CPU: a tiny judge over the synthetic
benchmark, per-cell metrics in verl's metrics file, per-sample records, a report, and resume after a kill."""

import json
import shutil

import pandas as pd
import pytest

from verl_ext.memrm.convert import main as convert_main
from verl_ext.memrm.demo import CAP, teach_judge, validate
from verl_ext.memrm.records import RecordStore
from verl_ext.memrm.report import write_report
from verl_ext.memrm.synthetic import write_benchmark

pytestmark = pytest.mark.slow


def _validate(run, judge, parquet, extra=()):
    assert validate(run, judge, parquet, extra) == 0, (run / "trainer.log").read_text()[-6000:]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    run = tmp_path_factory.mktemp("memrm_run")
    bench = write_benchmark(run / "bench", per_cell=1)
    judge = run / "judge"
    shutil.copytree(tiny_model_dir, judge)
    assert convert_main([str(bench), str(run / "all.parquet"), "--tokenizer", str(judge), "--cap", str(CAP),
                         "--model", "tiny-judge"]) == 0
    teach_judge(judge, run / "all.parquet")
    _validate(run, judge, run / "all.parquet")
    return run, bench, judge


def test_per_cell_metrics_and_records(run):
    run, _, _ = run
    data = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["data"]
    cells = [k for k in data if k.startswith("val-core/memrm/") and k.endswith("/reward/mean@1")]
    assert len(cells) == 50  # one data source per setting x length (official order)
    records = RecordStore(run / "records.jsonl").load()
    assert len(records) == 50
    parsed = sum(r["parsed_strict"] for r in records.values()) / 50
    assert parsed >= 0.9  # the judge warm start taught the verdict-first format
    result = write_report(run / "records.jsonl", run / "report")
    assert result["summary"]["strict"]["overall_micro"]["n"] == 50
    baselines = result["summary"]["baselines"]
    assert baselines["pick_longer"] == baselines["pick_shorter"] == 0.5  # length predicts nothing, by construction
    assert (run / "report" / "results.md").exists()


def test_resume_after_a_kill_recomputes_only_what_was_lost(run):
    run, bench, judge = run
    lines = (run / "records.jsonl").read_text().splitlines()
    kept = lines[:30]
    (run / "records.jsonl").write_text("\n".join(kept) + "\n" + lines[30][: len(lines[30]) // 2])  # killed mid-write
    assert convert_main([str(bench), str(run / "rest.parquet"), "--tokenizer", str(judge), "--cap", str(CAP),
                         "--records", str(run / "records.jsonl"), "--model", "tiny-judge"]) == 0
    rest = pd.read_parquet(run / "rest.parquet")
    assert len(rest) == 20  # the 30 finished pairs are not sent again; the half-written one is
    _validate(run, judge, run / "rest.parquet")
    store = RecordStore(run / "records.jsonl")
    records = store.load()
    assert len(records) == 50 and store.partial_lines == 1  # nothing lost, nothing duplicated
    assert len({r["pair_id"] for r in records.values()}) == 50


def test_elastic_judge_by_one_override(run, tmp_path):
    """The same judge with Elastic Attention (one override): records carry each judgement's Omega_MSR and the
    report puts it beside accuracy per length bucket."""
    run, _, judge = run
    elastic = tmp_path / "elastic"
    elastic.mkdir()
    _validate(elastic, judge, run / "all.parquet", ["+actor_rollout_ref.model.override_config.elastic_attention=true"])
    records = RecordStore(elastic / "records.jsonl").load()
    assert len(records) == 50 and all(0 <= r["elastic_msr"] <= 1 for r in records.values())
    data = json.loads((elastic / "metrics.jsonl").read_text().splitlines()[-1])["data"]
    assert any(k.startswith("val-aux/memrm/") and "/elastic_msr/" in k for k in data)
    result = write_report(elastic / "records.jsonl", elastic / "report")
    by_length = result["summary"]["pass_through"]["elastic_msr"]
    assert sum(c["n"] for c in by_length.values()) == 50
    assert all(0 <= c["mean"] <= 1 for c in by_length.values())
    assert "mean elastic_msr" in (elastic / "report" / "results.md").read_text()
