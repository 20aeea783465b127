import json

import pytest

from verl_ext.memrm.loaders import check_published_counts, load_items
from verl_ext.memrm.schema import ALL_SETTINGS, PUBLISHED_COUNTS, ContradictoryLabels, UnknownLabel, normalise_setting
from verl_ext.memrm.synthetic import RAW_LABELS, write_benchmark


@pytest.mark.parametrize("setting", ALL_SETTINGS)
def test_released_labels_map_to_the_ten_settings(setting):
    from verl_ext.memrm.synthetic import _pair  # noqa: F401  (labels live next to the generator)

    task = next(t for t, s in __import__("verl_ext.memrm.schema", fromlist=["SETTINGS"]).SETTINGS.items() if setting in s)
    assert normalise_setting(task, *RAW_LABELS[setting]) == setting


@pytest.mark.parametrize("task,raw,setting", [
    ("Long-context_Reasoning", "S-Drop", "Sequential-Drop"), ("Long-context_Reasoning", "P-Noise", "Mixed-Noise"),
    ("Multi-turn_Dialogue_Understanding", "Mem0-MEM", "Mem0-Mem"),
    ("Multi-turn_Dialogue_Understanding", "A-Mem-OUT", "A-Mem-Out"),
])
def test_raw_evaluator_codes(task, raw, setting):
    assert normalise_setting(task, raw, "") == setting


def test_unknown_label_lists_known_ones():
    with pytest.raises(UnknownLabel, match=r"maps to no setting. Known settings: \['Sequential-Noise'"):
        normalise_setting("Long-context_Reasoning", "mystery", "x")


@pytest.mark.parametrize("task,raw_task,raw_subtask,part", [
    ("Long-context_Reasoning", "sequential-self_correct", "qa7-parallel3-wrong_answer", "pattern"),
    ("Long-context_Reasoning", "sequential-self_correct", "qa7-sequential-wrong_answer", "error"),
    ("Long-context_Reasoning", "S-Drop", "qa7-parallel3-self_correct", "settings"),
    ("Multi-turn_Dialogue_Understanding", "Mem0-OUT", "amem_locomo_out", "settings"),
    ("Multi-turn_Dialogue_Understanding", "mem0", "amem_locomo_mem", "system"),
    ("Long-form_Generation", "Long-form_Generation", "longgenbench_sequential_parallel", "pattern"),
])
def test_contradictory_labels_name_both(task, raw_task, raw_subtask, part):
    with pytest.raises(ContradictoryLabels, match=rf"task={raw_task!r} and subtask={raw_subtask!r} .*{part}"):
        normalise_setting(task, raw_task, raw_subtask)


def test_labels_that_complete_each_other():
    assert normalise_setting("Multi-turn_Dialogue_Understanding", "mem0", "locomo_out") == "Mem0-Out"
    assert normalise_setting("Long-context_Reasoning", "sequential", "qa7-self_correct") == "Sequential-Noise"


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_label_errors_name_the_file_and_its_1_based_line(tmp_path, suffix):
    import pandas as pd

    path = write_benchmark(tmp_path / "b") / "Long-context_Reasoning.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[2]["subtask"] = "mystery"
    rows[2]["task"] = "mystery"
    rows[4]["task"], rows[4]["subtask"] = "sequential-self_correct", "qa7-parallel3-wrong_answer"
    if suffix == ".jsonl":  # a blank line first: line numbers count it
        path.write_text("\n" + "\n".join(json.dumps(r) for r in rows))
        first, second = "line 4", "line 6"
    else:
        path.unlink()
        path = path.with_suffix(".parquet")
        pd.DataFrame(rows).to_parquet(path)
        first, second = "row 3", "row 5"
    with pytest.raises(UnknownLabel, match=rf"{path} {first}: task='mystery', subtask='mystery' .* maps to no setting"):
        load_items(path)
    rows[2]["task"], rows[2]["subtask"] = "S-Drop", ""
    if suffix == ".jsonl":
        path.write_text("\n" + "\n".join(json.dumps(r) for r in rows))
    else:
        pd.DataFrame(rows).to_parquet(path)
    with pytest.raises(ContradictoryLabels, match=rf"{path} {second}: task='sequential-self_correct' and "
                                                  r"subtask='qa7-parallel3-wrong_answer' contradict"):
        load_items(path)


def test_synthetic_benchmark_covers_every_cell(tmp_path):
    items = load_items(write_benchmark(tmp_path, per_cell=2))
    cells = {(i.setting, i.ctx_length) for i in items}
    assert len(items) == 100 and len(cells) == 50
    assert {i.pair_id for i in items} == {f"{t}-{k}" for t in ("LCR", "MDU", "LFG") for k in range(40 if t != "LFG" else 20)}


def test_count_check_against_the_published_table(tmp_path):
    items = load_items(write_benchmark(tmp_path, per_cell=1))
    with pytest.raises(ValueError, match="differs from the published per-cell counts: Sequential-Noise/8k: 1 \\(published 101\\)"):
        check_published_counts(items)
    assert sum(sum(v) for v in PUBLISHED_COUNTS.values()) == 2400


@pytest.mark.parametrize("patch,match", [
    ({"chosen": ""}, "line 1: field 'chosen' is missing or empty"),
    ({"rejected": ["a", "b"]}, "line 1: field 'rejected' is a list, not a string"),
    ({"ctx_length": "256k"}, "line 1: ctx_length='256k' is not one of"),
    ({"ctx_length": None}, "line 1: field 'ctx_length' is missing"),
])
def test_bad_rows_name_the_row_and_field(tmp_path, patch, match):
    path = write_benchmark(tmp_path / "b") / "Long-form_Generation.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0].update(patch)
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ValueError, match=match):
        load_items(path)


def test_datasets_folder(tmp_path):
    import datasets

    bench = write_benchmark(tmp_path / "b")
    splits = {p.stem: datasets.Dataset.from_json(str(p)) for p in sorted(bench.glob("*.jsonl"))}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "ds"))
    items = load_items(tmp_path / "ds")
    assert len(items) == 50 and {i.task for i in items} == {"Long-context_Reasoning", "Multi-turn_Dialogue_Understanding",
                                                            "Long-form_Generation"}
