"""The official judge system prompts, read from a local clone in the official layout (here a file written by the
test in that layout, with stand-in texts), flow into the converted rows, the records and results.json."""

import json

import pytest

from verl_ext.memrm.convert import iter_rows
from verl_ext.memrm.official_prompts import PROMPT_MODULE, load_official_prompts
from verl_ext.memrm.prompts import OUR_PROMPTS
from verl_ext.memrm.report import write_report
from verl_ext.memrm.scoring import compute_score
from verl_ext.memrm.synthetic import write_benchmark

OFFICIAL_LAYOUT = '''import re
from typing import List

INPUT_PAIR_SYSTEM_PROMPT = (
"""
STAND-IN PAIR PROMPT: compare Agent A and Agent B; answer [[A]] or [[B]].
"""

)

INPUT_LONGGEN_PAIR_SYSTEM_PROMPT = ("""
STAND-IN LONGGEN PROMPT: audit the constraints; answer [[A]] or [[B]].
""")


def get_user_prompt(question, answers):
    return question
'''


@pytest.fixture
def clone(tmp_path):
    path = tmp_path / "MemoryRewardBench" / PROMPT_MODULE
    path.parent.mkdir(parents=True)
    path.write_text(OFFICIAL_LAYOUT)
    return tmp_path / "MemoryRewardBench"


def test_reads_both_constants_verbatim_without_executing(clone):
    prompts = load_official_prompts(clone)
    assert prompts.pair == "\nSTAND-IN PAIR PROMPT: compare Agent A and Agent B; answer [[A]] or [[B]].\n"
    assert prompts.longform.startswith("\nSTAND-IN LONGGEN PROMPT")
    assert prompts.system("Long-form_Generation") == prompts.longform
    assert prompts.system("Long-context_Reasoning") == prompts.pair
    assert prompts.label.startswith("official:") and prompts.label != OUR_PROMPTS.label
    assert load_official_prompts(clone / PROMPT_MODULE).label == prompts.label  # the module path works too


def test_bad_clones_name_the_file_and_the_fix(tmp_path, clone):
    with pytest.raises(FileNotFoundError, match=r"no official prompt module at .*prompt.py; pass the root of your clone"):
        load_official_prompts(tmp_path / "elsewhere")
    (clone / PROMPT_MODULE).write_text("INPUT_PAIR_SYSTEM_PROMPT = 'x'\n")
    with pytest.raises(ValueError, match=r"defines no string \['INPUT_LONGGEN_PAIR_SYSTEM_PROMPT'\]"):
        load_official_prompts(clone)
    (clone / PROMPT_MODULE).write_text("INPUT_PAIR_SYSTEM_PROMPT = make()\nINPUT_LONGGEN_PAIR_SYSTEM_PROMPT = 'y'\n")
    with pytest.raises(ValueError, match="line 1: INPUT_PAIR_SYSTEM_PROMPT is not a string literal"):
        load_official_prompts(clone)


def test_rows_records_and_results_carry_the_prompt_set(tmp_path, clone, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    official = load_official_prompts(clone)
    data = write_benchmark(tmp_path / "bench")
    rows = list(iter_rows(data, tokenizer, cap=10_000, prompts=official))
    for row in rows:
        task = row["extra_info"]["task"]
        assert row["prompt"][0]["content"] == official.system(task)
        assert row["extra_info"]["prompt_set"] == official.label
    ours = list(iter_rows(data, tokenizer, cap=10_000))
    assert ours[0]["extra_info"]["prompt_set"] == OUR_PROMPTS.label
    assert ours[0]["extra_info"]["prompt_sha"] != rows[0]["extra_info"]["prompt_sha"]  # records never mix them up
    records = tmp_path / "records.jsonl"
    for row in rows[:6]:
        compute_score(row["data_source"], "[[A]] because", row["reward_model"]["ground_truth"], row["extra_info"],
                      records_path=str(records), model="judge")
    result = write_report(records, tmp_path / "report")
    assert result["prompt_sets"] == {official.label: 6}
    assert json.loads((tmp_path / "report" / "results.json").read_text())["prompt_sets"] == {official.label: 6}
    assert f"Judge system prompts: {official.label} (6 records)." in (tmp_path / "report" / "results.md").read_text()
