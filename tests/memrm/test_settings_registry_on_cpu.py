"""Settings are data: a toy setting added as one entry flows through label normalisation, the synthetic benchmark,
conversion, scoring, aggregation and the report; a toy task is one more entry and picks its judge prompt; entries
that would not fit are refused with the reason and leave the registry as it was; the README's tables are the
entries'."""

import dataclasses
from pathlib import Path

import pytest

from verl_ext.memrm import schema
from verl_ext.memrm.convert import iter_rows
from verl_ext.memrm.loaders import load_items
from verl_ext.memrm.prompts import LONGFORM_SYSTEM_PROMPT, OUR_PROMPTS, PromptSet, judge_messages
from verl_ext.memrm.registry import (
    README_BEGIN,
    REGISTRY,
    RegistryError,
    readme_tables,
    register,
    registered,
    settings_markdown,
    unregister,
)
from verl_ext.memrm.report import write_report
from verl_ext.memrm.schema import (
    ALL_SETTINGS,
    LENGTHS,
    PUBLISHED_COUNTS,
    SETTINGS,
    ContradictoryLabels,
    UnknownLabel,
    normalise_setting,
)
from verl_ext.memrm.scoring import compute_score
from verl_ext.memrm.settings import PROMPT_FAMILIES, SETTING_ENTRIES, Part, Setting, Task, Word
from verl_ext.memrm.synthetic import RAW_LABELS, write_benchmark

README = Path(__file__).resolve().parents[2] / "recipes" / "memoryrewardbench" / "README.md"
LCR = "Long-context_Reasoning"

# The one entry: a new LCR pattern, with the label word that names it.
TOY = Setting("Branching-Noise", LCR, (1, 2, 3, 4, 5), {"pattern": "Branching", "error": "Noise"},
              released=("branching-self_correct", "qa7-branching2-self_correct"), raw_codes=("B-Noise",),
              words={"pattern": ("branching",)})


def _state():
    return tuple(ALL_SETTINGS), dict(PUBLISHED_COUNTS), dict(RAW_LABELS), schema.FULL_SIZE


def test_a_toy_setting_is_one_entry_and_flows_through(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    before = _state()
    with registered(TOY):
        assert SETTINGS[LCR][-1] == "Branching-Noise" and "Branching-Noise" in ALL_SETTINGS
        assert PUBLISHED_COUNTS["Branching-Noise"] == (1, 2, 3, 4, 5) and schema.FULL_SIZE == 2400 + 15
        # labels: its released forms, its parts, its raw code (any case), and against the others
        assert normalise_setting(LCR, *TOY.released) == "Branching-Noise"
        assert normalise_setting(LCR, "branching", "longmit-self_correct") == "Branching-Noise"
        assert normalise_setting(LCR, "b-noise", "") == normalise_setting(LCR, "B-NOISE", "qa7-branching") == TOY.name
        with pytest.raises(ContradictoryLabels, match="on the pattern .*Branching vs Mixed"):
            normalise_setting(LCR, "branching-self_correct", "qa7-parallel3-self_correct")
        with pytest.raises(UnknownLabel, match=r"known raw codes: \[.*'B-Noise'\]; .*'branching' → Branching\)"):
            normalise_setting(LCR, "branching-wrong_answer", "")  # Branching-Drop is no setting
        assert normalise_setting(LCR, *RAW_LABELS["Mixed-Noise"]) == "Mixed-Noise"  # the others read as before
        # the synthetic benchmark, loading and conversion
        assert RAW_LABELS["Branching-Noise"] == TOY.released
        bench = write_benchmark(tmp_path / "bench", per_cell=1)
        items = load_items(bench)
        assert len(items) == 55 and {i.ctx_length for i in items if i.setting == TOY.name} == set(LENGTHS)
        rows = list(iter_rows(bench, AutoTokenizer.from_pretrained(tiny_model_dir), cap=10_000))
        toy_rows = [r for r in rows if r["extra_info"]["setting"] == TOY.name]
        assert sorted(r["data_source"] for r in toy_rows) == sorted(f"memrm/LCR/Branching-Noise/{length}/official"
                                                                     for length in LENGTHS)
        assert {r["prompt"][0]["content"] for r in toy_rows} == {OUR_PROMPTS.pair}
        # scoring, aggregation per cell, the report
        records = tmp_path / "records.jsonl"
        for row in rows:
            compute_score(row["data_source"], "[[A]] because", row["reward_model"]["ground_truth"], row["extra_info"],
                          records_path=str(records), model="judge")
        result = write_report(records, tmp_path / "report")
        strict = result["summary"]["strict"]
        assert strict["overall_micro"]["n"] == 55 and "Branching-Noise" in strict["settings_present"]
        assert all(strict["setting_x_length"][f"Branching-Noise/{length}"]["n"] == 1 for length in LENGTHS)
        expected = sum(r["reward_model"]["ground_truth"] == "A" for r in toy_rows) / 5
        assert strict["setting"]["Branching-Noise"] == {**strict["setting"]["Branching-Noise"], "n": 5,
                                                        "accuracy": expected}
        assert result["summary"]["settings"][LCR][-1] == "Branching-Noise"
        assert "| Branching-Noise | " in (tmp_path / "report" / "results.md").read_text()
        assert "| LCR | Branching-Noise | pattern Branching, error Noise |" in settings_markdown()
    assert _state() == before  # gone again, and nothing else changed
    with pytest.raises(UnknownLabel):
        normalise_setting(LCR, "B-Noise", "")


def test_a_toy_task_is_one_more_entry_and_names_its_prompt(tmp_path):
    task = Task("Toy_Recall", "TR", "longform", (Part("depth", (Word("shallow", "Shallow"), Word("deep", "Deep"))),))
    deep = Setting("Deep-Recall", "Toy_Recall", (1, 0, 0, 0, 0), {"depth": "Deep"}, ("Toy_Recall", "toy_deep_v2"))
    with registered(deep, task):  # any order: tasks go first
        assert SETTINGS["Toy_Recall"] == ("Deep-Recall",) and schema.TASK_SHORT["Toy_Recall"] == "TR"
        items = [i for i in load_items(write_benchmark(tmp_path)) if i.task == "Toy_Recall"]
        assert [(i.pair_id, i.setting) for i in items] == [(f"TR-{k}", "Deep-Recall") for k in range(5)]
        assert judge_messages(items[0], (0, 1))[0]["content"] == LONGFORM_SYSTEM_PROMPT
    assert "Toy_Recall" not in schema.TASKS
    with pytest.raises(ValueError, match=r"task 'Toy_Recall' is not one of \['Long-context_Reasoning'"):
        OUR_PROMPTS.system("Toy_Recall")


@pytest.mark.parametrize("entries,match", [
    ((SETTING_ENTRIES[0],), "setting 'Sequential-Noise' is already registered; unregister it first"),
    ((dataclasses.replace(TOY, task="Nope"),), "task 'Nope' is not registered"),
    ((dataclasses.replace(TOY, words={}),), "no label word of Long-context_Reasoning names its pattern 'Branching'"),
    ((dataclasses.replace(TOY, words={"pattern": ("qa7",)}),),  # would steal Sequential-Noise's subtask label
     "setting 'Sequential-Noise': its labels .* read as an error .*fix its released labels"),
    ((dataclasses.replace(TOY, parts={"pattern": "Mixed", "error": "Noise"}, words={}),), "both made of"),
    ((dataclasses.replace(TOY, raw_codes=("p-noise",)),), "raw code 'p-noise' names both 'Mixed-Noise'"),
    ((dataclasses.replace(TOY, parts={"pattern": "Branching"}),), r"must give one value for each part .*\['pattern', "
                                                                  r"'error'\]"),
    ((TOY, dataclasses.replace(TOY, raw_codes=())), "setting 'Branching-Noise' is already registered"),
])
def test_entries_that_do_not_fit_are_refused_and_change_nothing(entries, match):
    before = _state()
    with pytest.raises(RegistryError, match=match):
        register(*entries)
    assert _state() == before


def test_entries_validate_themselves():
    with pytest.raises(ValueError, match=r"counts \(1, 2\) must be 5 non-negative integers"):
        dataclasses.replace(TOY, counts=(1, 2))
    with pytest.raises(ValueError, match=r"prompt 'essay' is not one of \['pair', 'longform'\]"):
        Task("Toy", "T", "essay", (Part("p", ()),))
    with pytest.raises(ValueError, match="words \\['parallel'\\] name another value than its pattern 'Branching'"):
        dataclasses.replace(TOY, words={"pattern": (Word("parallel", "Mixed"),)})
    with pytest.raises(ValueError, match="searched in the lower-cased label; write it in lower case"):
        Word("Branching", "Branching")
    assert set(PROMPT_FAMILIES) <= {f.name for f in dataclasses.fields(PromptSet)}  # every family has a prompt


def test_unregister_removes_only_what_it_is_given():
    before = _state()
    with pytest.raises(RegistryError, match="'Branching-Noise' is not registered as given"):
        unregister(TOY)
    with pytest.raises(RegistryError, match=r"would lose their task"):
        unregister(REGISTRY.index.tasks[LCR])
    with pytest.raises(KeyError):
        with registered(TOY):
            raise KeyError("the block fails")
    assert _state() == before


def test_readme_tables_are_the_entries():
    text = README.read_text()
    assert README_BEGIN in text
    assert readme_tables(text) == settings_markdown(), (
        "recipes/memoryrewardbench/README.md's settings tables differ from verl_ext/memrm/settings.py; run "
        "python -m verl_ext.memrm.registry --readme recipes/memoryrewardbench/README.md")
