"""MemoryRewardBench: tasks, settings, length buckets, the published per-cell counts, label normalisation.

The tasks and settings are data: one entry each in ``settings`` (what a setting is made of, its released labels,
raw codes and published counts; a task's label words and judge prompt). Everything here is derived from the
entries registered in ``registry.REGISTRY``, and read afresh on every use: ``TASKS``, ``TASK_SHORT``, ``SETTINGS``,
``ALL_SETTINGS``, ``PUBLISHED_COUNTS``, ``RAW_CODES`` are live read-only views (an import of one never goes
stale); ``FULL_SIZE`` is an int computed on access (``from ... import FULL_SIZE`` copies it; ``full_size()`` is live).

The released Hugging Face rows carry ``task``/``subtask`` labels that do not match the README's setting names
(e.g. ``task="parallel-self_correct"``, ``subtask="qa7-parallel3-self_correct"``); the official evaluator's raw
files use codes (``S-Drop``, ``P-Noise``, ``Mem0-MEM``). ``normalise_setting`` maps every known form to a setting;
recipes/memoryrewardbench/README.md holds the tables, generated from the entries.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

from verl_ext.memrm.registry import REGISTRY, ContradictoryLabels, LiveMapping, LiveTuple, UnknownLabel
from verl_ext.memrm.settings import LENGTHS, Task

__all__ = ["SPEC_VERSION", "LENGTHS", "TASKS", "TASK_SHORT", "SETTINGS", "ALL_SETTINGS", "PUBLISHED_COUNTS",
           "RAW_CODES", "FULL_SIZE", "UnknownLabel", "ContradictoryLabels", "PairItem", "task_entry", "task_from_name",
           "normalise_setting", "check_length", "full_size"]

SPEC_VERSION = "memrm-2026.1"  # bump when prompts, parsing or aggregation change

TASKS = LiveTuple(lambda: tuple(REGISTRY.index.tasks))
TASK_SHORT = LiveMapping(lambda: REGISTRY.index.short)
SETTINGS = LiveMapping(lambda: REGISTRY.index.by_task)  # task -> its settings
ALL_SETTINGS = LiveTuple(lambda: REGISTRY.index.all_settings)
PUBLISHED_COUNTS = LiveMapping(lambda: REGISTRY.index.counts)  # setting -> published pairs for 8k..128k
RAW_CODES = LiveMapping(lambda: REGISTRY.index.raw_codes)  # lower-cased evaluator code -> setting


def full_size() -> int:
    """The published benchmark's size (2,400 pairs with the built-in settings)."""
    return sum(sum(c) for c in REGISTRY.index.counts.values())


def __getattr__(name: str):
    if name == "FULL_SIZE":  # computed on access, like the views above
        return full_size()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def task_entry(task: str) -> Task:
    """The registered entry of ``task``; an unknown name is an error listing the registered ones."""
    entry = REGISTRY.index.tasks.get(task)
    if entry is None:
        raise ValueError(f"task {task!r} is not one of {list(TASKS)}.")
    return entry


@dataclasses.dataclass(frozen=True)
class PairItem:
    """One benchmark pair. ``index`` is the row's position in its task file."""

    task: str  # one of TASKS
    setting: str  # one of ALL_SETTINGS
    ctx_length: str  # one of LENGTHS
    question: str
    chosen: str
    rejected: str
    index: int
    raw_task: str = ""
    raw_subtask: str = ""

    @property
    def pair_id(self) -> str:
        return f"{TASK_SHORT[self.task]}-{self.index}"


def task_from_name(name: str) -> Optional[str]:
    """The task config a file or label names ("Long-form_Generation.jsonl" -> "Long-form_Generation")."""
    lowered = name.lower().replace(" ", "_")
    for task in TASKS:
        if task.lower() in lowered:
            return task
    for task, short in TASK_SHORT.items():
        if re.search(rf"(^|[^a-z]){short.lower()}([^a-z]|$)", lowered):
            return task
    return None


def normalise_setting(task: str, raw_task: str, raw_subtask: str) -> str:
    """The setting name for a row of ``task`` with labels ``raw_task`` / ``raw_subtask``.

    Each label is read on its own; what they say is combined, and where both say something about the same part
    (or one label names two values of it) and they disagree, the row is refused (``ContradictoryLabels``)."""
    return REGISTRY.index.normalise(task, raw_task, raw_subtask)


def check_length(value: str, where: str) -> str:
    label = str(value).strip().lower()
    if label not in LENGTHS:
        raise ValueError(f"{where}: ctx_length={value!r} is not one of {list(LENGTHS)}.")
    return label
