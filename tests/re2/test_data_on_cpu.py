import json

import pandas as pd
import pytest

from verl_ext.re2.data import main


def test_converts_questions_with_the_template(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [{"problem": "What is 2+2?", "answer": "4"},
                                                       {"question": "1+1?", "ground_truth": 2}]))
    template = tmp_path / "t.txt"
    template.write_text("Solve: {question}\nEnd.")
    assert main([str(src), str(tmp_path / "out.parquet"), "--template", str(template)]) == 0
    rows = pd.read_parquet(tmp_path / "out.parquet")
    assert rows.prompt[0][0]["content"] == "Solve: What is 2+2?\nEnd."
    assert rows.reward_model[1]["ground_truth"] == "2"


def test_rows_without_an_answer_fail_unless_skipped(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"problem": "x"}) + "\n" + json.dumps({"problem": "y", "answer": "1"}))
    template = tmp_path / "t.txt"
    template.write_text("{question}")
    with pytest.raises(ValueError, match="row 0 has no answer"):
        main([str(src), str(tmp_path / "o.parquet"), "--template", str(template)])
    assert main([str(src), str(tmp_path / "o.parquet"), "--template", str(template), "--skip-bad-rows"]) == 0
    assert len(pd.read_parquet(tmp_path / "o.parquet")) == 1
    template.write_text("no placeholder")
    with pytest.raises(ValueError, match="no {question} placeholder"):
        main([str(src), str(tmp_path / "o.parquet"), "--template", str(template)])
