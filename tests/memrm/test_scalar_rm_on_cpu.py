import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from verl_ext.memrm.records import RecordStore
from verl_ext.memrm.report import write_report
from verl_ext.memrm.scalar_rm import evaluate, score_pair
from verl_ext.memrm.loaders import load_items
from verl_ext.memrm.synthetic import write_benchmark


def _scalar_rm(tiny_model_dir, out):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.config.pad_token_id = AutoTokenizer.from_pretrained(tiny_model_dir).pad_token_id
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def test_scalar_rm_scores_each_side_and_resumes(tmp_path, tiny_model_dir):
    rm = _scalar_rm(tiny_model_dir, tmp_path / "rm")
    bench = write_benchmark(tmp_path / "bench", per_cell=1)
    stats = evaluate(rm, bench, tmp_path / "run", cap=900)
    assert stats == {"pairs": 50, "skipped_done": 0}
    records = RecordStore(tmp_path / "run" / "records.jsonl").load()
    assert len(records) == 50
    r = next(iter(records.values()))
    assert r["correct_strict"] == float(r["score_chosen"] > r["score_rejected"])
    assert evaluate(rm, bench, tmp_path / "run", cap=900) == {"pairs": 50, "skipped_done": 50}
    assert write_report(tmp_path / "run" / "records.jsonl", tmp_path / "rep")["summary"]["strict"]["overall_micro"]["n"] == 50


def test_ties_count_wrong(tmp_path, tiny_model_dir):
    rm = _scalar_rm(tiny_model_dir, tmp_path / "rm")
    model = AutoModelForSequenceClassification.from_pretrained(rm, num_labels=1).eval()
    tok = AutoTokenizer.from_pretrained(rm)
    item = load_items(write_benchmark(tmp_path / "b"))[0]
    same = item.__class__(**{**item.__dict__, "rejected": item.chosen})
    result = score_pair(model, tok, same, cap=900)
    assert result["correct_strict"] == 0.0 and result["correct_half_ties"] == 0.5
