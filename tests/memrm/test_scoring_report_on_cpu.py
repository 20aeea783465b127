import json

import pytest

from verl_ext.memrm.aggregate import dual_order, length_baselines, position_bias, summarise, wilson_interval
from verl_ext.memrm.records import RecordStore, record_key
from verl_ext.memrm.report import write_report
from verl_ext.memrm.scoring import compute_score, score_output


def test_score_output_and_reward_function(tmp_path):
    assert score_output("[[B]] x", "B")["correct_strict"] == 1.0
    assert score_output("I pick [[B]]", "B") | {} == {"verdict_strict": None, "verdict_lenient": "B", "correct_strict": 0.0,
                                                      "correct_lenient": 1.0, "parsed_strict": 0.0, "parsed_lenient": 1.0,
                                                      "picked_A": 0.0}
    info = {"pair_id": "LCR-1", "order": [0, 1], "prompt_sha": "abc", "view": "official"}
    out = compute_score("memrm/LCR/x", "[[A]]", "A", info, records_path=str(tmp_path / "r.jsonl"), model="m")
    assert out["score"] == 1.0 and all(isinstance(v, float) for v in out.values())
    records = RecordStore(tmp_path / "r.jsonl").load()
    assert list(records) == [record_key("m", "abc", "", [0, 1])]
    with pytest.raises(ValueError, match="pair LCR-1 .*ground_truth='C' must be 'A' or 'B'"):
        compute_score("memrm/LCR/x", "[[A]]", "C", info)


def test_pass_through_fields_are_kept_aggregated_by_length_and_checked(tmp_path):
    """Any numeric rollout field named in the config rides along (e.g. an Elastic judge's elastic_msr), absent
    values are left out rather than 0, and a non-number names the field and the fix."""
    path = str(tmp_path / "r.jsonl")
    for i, (letter, verdict, length, msr) in enumerate([("A", "A", "8k", 0.25), ("B", "A", "8k", 0.75),
                                                         ("A", "A", "64k", None)]):
        info = {"pair_id": f"p{i}", "order": [0, 1], "prompt_sha": str(i), "view": "official", "ctx_length": length,
                "setting": "Mem0-Mem", "task": "Multi-turn_Dialogue_Understanding", "chosen_chars": 1,
                "rejected_chars": 2, **({} if msr is None else {"elastic_msr": msr, "unlisted": 3.0})}
        out = compute_score("memrm/x", f"[[{verdict}]]", letter, info, records_path=path, model="m",
                            pass_through=["elastic_msr"])
        assert ("elastic_msr" in out) == (msr is not None) and "unlisted" not in out
    summary = summarise(RecordStore(path).load().values())["pass_through"]
    assert summary == {"elastic_msr": {"8k": {"mean": 0.5, "n": 2, "accuracy": 0.5}}}
    with pytest.raises(ValueError, match="pass-through field 'elastic_msr' is 'high'.*reward_kwargs.pass_through"):
        compute_score("memrm/x", "[[A]]", "A", {"elastic_msr": "high"}, pass_through=["elastic_msr"])


def test_partial_line_from_a_killed_writer_is_skipped_and_recomputed(tmp_path):
    store = RecordStore(tmp_path / "r.jsonl")
    store.append({"key": "k1", "v": 1})
    with open(tmp_path / "r.jsonl", "a") as f:
        f.write('{"key": "k2", "v"')  # killed mid-write
    store.append({"key": "k3", "v": 3})
    store.append({"key": "k1", "v": 10})  # a re-run of k1: last one wins, no duplicate
    fresh = RecordStore(tmp_path / "r.jsonl")
    loaded = fresh.load()
    assert set(loaded) == {"k1", "k3"} and loaded["k1"]["v"] == 10 and fresh.partial_lines == 1


def _rec(pair, view, letter, verdict, setting="Mem0-Mem", task="Multi-turn_Dialogue_Understanding", length="8k",
         chosen=10, rejected=5):
    return {"pair_id": pair, "view": view, "correct_letter": letter, "verdict_strict": verdict,
            "verdict_lenient": verdict, "correct_strict": float(verdict == letter), "correct_lenient": float(verdict == letter),
            "setting": setting, "task": task, "ctx_length": length, "chosen_chars": chosen, "rejected_chars": rejected}


def test_aggregates_hand_computed():
    records = [_rec("p1", "official", "A", "A"), _rec("p1", "swap", "B", "A"),      # inconsistent: always A
               _rec("p2", "official", "B", "B"), _rec("p2", "swap", "A", "A"),      # consistent, both right
               _rec("p3", "official", "A", None, setting="Parallel", task="Long-form_Generation", length="64k",
                    chosen=3, rejected=9)]
    s = summarise(records)
    strict = s["strict"]
    assert strict["overall_micro"]["accuracy"] == pytest.approx(2 / 3) and strict["overall_micro"]["n"] == 3
    assert strict["macro_over_tasks"] == pytest.approx((1.0 + 0.0) / 2)
    assert strict["setting_x_length"]["Parallel/64k"] == {"accuracy": 0.0, "n": 1, "ci95": list(wilson_interval(0, 1))}
    d = dual_order(records)
    assert d == {"pairs": 2, "mean_accuracy_both_orders": 0.75, "both_correct": 0.5, "consistency": 0.5}
    pos = position_bias([r for r in records if r["view"] == "official"])
    assert pos["p_pick_A"] == 0.5 and pos["parse_failure_rate"] == pytest.approx(1 / 3)
    base = length_baselines([r for r in records if r["view"] == "official"])
    assert base["pick_longer"] == pytest.approx(2 / 3) and base["always_A"] == pytest.approx(2 / 3)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)


def test_report_writes_json_markdown_and_plots(tmp_path):
    store = RecordStore(tmp_path / "r.jsonl")
    for i, r in enumerate([_rec("p1", "official", "A", "A"), _rec("p2", "official", "B", None)]):
        store.append({"key": f"k{i}", **r})
    result = write_report(tmp_path / "r.jsonl", tmp_path / "out", {"judge": "tiny"})
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["spec_version"] and saved["versions"]["verl"] == "0.9.1" and len(saved["records"]) == 2
    assert "| Mem0-Mem | 50.0 (2) |" in (tmp_path / "out" / "results.md").read_text()
    assert (tmp_path / "out" / "accuracy_by_length.png").stat().st_size > 1000
    assert result["config"] == {"judge": "tiny"}
