"""Load MemoryRewardBench pairs from local JSONL / parquet files or a ``datasets`` folder.

Accepted layouts: a folder with one file per task (``Long-context_Reasoning.jsonl`` ...), as on the Hub; a single
file whose rows carry their task config in ``task_config`` / ``config``; a ``datasets`` folder saved with
``save_to_disk``. Rows follow the Hugging Face 6-field schema (task, chosen, rejected, subtask, ctx_length,
question) or the official evaluator's raw schema (task codes such as ``S-Drop``, ``Mem0-MEM``). Every bad row is an
error naming the file, the row (1-based: the file line of JSON lines, the row of parquet and datasets) and the field
or labels; when all 2,400 pairs are loaded, the per-cell counts are checked
against the published table.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

from verl_ext.memrm.schema import (
    LENGTHS,
    PUBLISHED_COUNTS,
    TASKS,
    PairItem,
    UnknownLabel,
    check_length,
    full_size,
    normalise_setting,
    task_from_name,
)

TEXT_FIELDS = ("question", "chosen", "rejected")


def _rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(location, row): "line N" (1-based file line) of JSON lines, "row N" (1-based) of parquet."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=64):
            for row in batch.to_pylist():
                number += 1
                yield f"row {number}", row
        return
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield f"line {number}", json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path} line {number} is not JSON ({exc.msg}).") from exc


def parse_row(row: dict, index: int, task: str, where: str) -> PairItem:
    """One validated item (``index``: its position in its task); errors start with ``where`` (file and line)."""
    for field in TEXT_FIELDS:
        value = row.get(field)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError(f"{where}: field {field!r} is missing or empty; every pair needs question, chosen and "
                             "rejected.")
        if not isinstance(value, str):
            raise ValueError(f"{where}: field {field!r} is a {type(value).__name__}, not a string; serialise "
                             "trajectories to text before loading.")
    if row.get("ctx_length") in (None, ""):
        raise ValueError(f"{where}: field 'ctx_length' is missing; expected one of {list(LENGTHS)}.")
    try:
        setting = normalise_setting(task, str(row.get("task", "")), str(row.get("subtask", "")))
    except UnknownLabel as err:
        raise type(err)(f"{where}: {err}") from err
    return PairItem(task=task, setting=setting, ctx_length=check_length(row["ctx_length"], where),
                    question=row["question"], chosen=row["chosen"], rejected=row["rejected"], index=index,
                    raw_task=str(row.get("task", "")), raw_subtask=str(row.get("subtask", "")))


def _task_of(row: dict, file_task: str | None, where: str) -> str:
    task = file_task or task_from_name(str(row.get("task_config") or row.get("config") or ""))
    if task is None:
        raise ValueError(f"{where}: cannot tell its task config; name the file after it ({list(TASKS)}) or add a "
                         "'task_config' field.")
    return task


def load_file(path: Path) -> Iterator[PairItem]:
    file_task = task_from_name(path.stem)
    counters: Counter = Counter()
    for location, row in _rows(path):
        where = f"{path} {location}"
        task = _task_of(row, file_task, where)
        yield parse_row(row, counters[task], task, where)
        counters[task] += 1


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        return []
    files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".json", ".parquet"))
    if not files:
        raise FileNotFoundError(f"{path} holds no .jsonl / .parquet task files.")
    return files


def _load_datasets_folder(path: Path) -> Iterator[PairItem]:
    from datasets import DatasetDict, load_from_disk

    data = load_from_disk(str(path))
    splits = data.items() if isinstance(data, DatasetDict) else [(path.name, data)]
    for name, split in splits:
        task = task_from_name(name)
        for index, row in enumerate(split):
            where = f"{path}/{name} row {index + 1}"
            yield parse_row(row, index, _task_of(row, task, where), where)


def iter_items(path: str | Path) -> Iterator[PairItem]:
    """Stream validated pairs from ``path`` (no count check: that needs them all)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"benchmark data {path} does not exist.")
    files = _files(path)
    if not files:
        yield from _load_datasets_folder(path)
        return
    for f in files:
        yield from load_file(f)


def load_items(path: str | Path, check_counts: bool = True) -> list[PairItem]:
    """All pairs under ``path``; checks the published counts when the full set is present."""
    items = list(iter_items(path))
    if check_counts and len(items) == full_size():
        check_published_counts(items)
    return items


def cell_counts(items: Iterable[PairItem]) -> Counter:
    return Counter((i.setting, i.ctx_length) for i in items)


def check_published_counts(items: Iterable[PairItem]) -> None:
    """Raise if any setting x length cell differs from the published table."""
    counts = cell_counts(items)
    wrong = [f"{setting}/{length}: {counts[(setting, length)]} (published {expected[k]})"
             for setting, expected in PUBLISHED_COUNTS.items() for k, length in enumerate(LENGTHS)
             if counts[(setting, length)] != expected[k]]
    if wrong:
        raise ValueError("the loaded benchmark differs from the published per-cell counts: " + "; ".join(wrong[:10]))
