"""MemoryRewardBench: tasks, the 10 settings, length buckets, the published per-cell counts, label normalisation.

The released Hugging Face rows carry ``task``/``subtask`` labels that do not match the README's setting names
(e.g. ``task="parallel-self_correct"``, ``subtask="qa7-parallel3-self_correct"``); the official evaluator's raw
files use codes (``S-Drop``, ``P-Noise``, ``Mem0-MEM``). ``normalise_setting`` maps every known form to the 10
names; the mapping is written out in recipes/memoryrewardbench/README.md.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

SPEC_VERSION = "memrm-2026.1"  # bump when prompts, parsing or aggregation change

TASKS = ("Long-context_Reasoning", "Multi-turn_Dialogue_Understanding", "Long-form_Generation")
TASK_SHORT = {"Long-context_Reasoning": "LCR", "Multi-turn_Dialogue_Understanding": "MDU", "Long-form_Generation": "LFG"}
LENGTHS = ("8k", "16k", "32k", "64k", "128k")
SETTINGS = {
    "Long-context_Reasoning": ("Sequential-Noise", "Sequential-Drop", "Mixed-Noise", "Mixed-Drop"),
    "Multi-turn_Dialogue_Understanding": ("Mem0-Out", "Mem0-Mem", "A-Mem-Out", "A-Mem-Mem"),
    "Long-form_Generation": ("Sequential", "Parallel"),
}
ALL_SETTINGS = tuple(s for task in TASKS for s in SETTINGS[task])

# Published per-cell counts (README table): setting -> counts for 8k..128k. 2,400 pairs in total.
PUBLISHED_COUNTS = {
    "Sequential-Noise": (101, 44, 43, 36, 31),
    "Sequential-Drop": (35, 22, 22, 40, 15),
    "Mixed-Noise": (22, 33, 49, 46, 34),
    "Mixed-Drop": (19, 65, 72, 43, 28),
    "Mem0-Out": (27, 27, 42, 48, 23),
    "Mem0-Mem": (25, 25, 41, 47, 21),
    "A-Mem-Out": (42, 42, 48, 50, 47),
    "A-Mem-Mem": (48, 45, 49, 53, 50),
    "Sequential": (49, 152, 147, 67, 42),
    "Parallel": (51, 48, 53, 133, 58),
}
FULL_SIZE = sum(sum(c) for c in PUBLISHED_COUNTS.values())

# Raw evaluator codes and HF row labels -> setting names.
_RAW_CODES = {
    "s-noise": "Sequential-Noise", "s-drop": "Sequential-Drop", "p-noise": "Mixed-Noise", "p-drop": "Mixed-Drop",
    "mem0-out": "Mem0-Out", "mem0-mem": "Mem0-Mem", "a-mem-out": "A-Mem-Out", "a-mem-mem": "A-Mem-Mem",
}
_LCR_PATTERN = {"sequential": "Sequential", "parallel": "Mixed"}
_LCR_ERROR = {"self_correct": "Noise", "wrong_answer": "Drop"}


class UnknownLabel(ValueError):
    """A task / subtask label that maps to no setting; the message lists the known forms."""


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
    """The setting name for a row of ``task`` with labels ``raw_task`` / ``raw_subtask``."""
    t, s = (raw_task or "").strip(), (raw_subtask or "").strip()
    for label in (t, s):
        if label in ALL_SETTINGS and label in SETTINGS[task]:
            return label
        code = label.lower()
        if code in _RAW_CODES and _RAW_CODES[code] in SETTINGS[task]:
            return _RAW_CODES[code]
    if task == "Long-context_Reasoning":
        label = (t + " " + s).lower()
        pattern = next((v for k, v in _LCR_PATTERN.items() if k in label), None)
        error = next((v for k, v in _LCR_ERROR.items() if k in label), None)
        if pattern and error:
            return f"{pattern}-{error}"
    elif task == "Multi-turn_Dialogue_Understanding":
        label = (t + " " + s).lower().replace("_", "-")
        system = "A-Mem" if re.search(r"a-?mem", label) else "Mem0" if "mem0" in label else None
        side = "Out" if re.search(r"(^|[^a-z])out", label) else "Mem" if re.search(r"-mem($|[^a-z0-9])", label) else None
        if system and side:
            return f"{system}-{side}"
    else:
        label = (t + " " + s).lower()
        if "sequ" in label:  # the released labels spell it "sequantial"
            return "Sequential"
        if "parallel" in label:
            return "Parallel"
    raise UnknownLabel(
        f"task={raw_task!r}, subtask={raw_subtask!r} in {task} maps to no setting. Known settings: "
        f"{list(SETTINGS[task])}; known raw codes: {sorted(_RAW_CODES)}; LCR labels combine "
        "sequential|parallel with self_correct|wrong_answer, MDU labels name mem0|a-mem and out|mem, "
        "LFG labels name sequential|parallel."
    )


def check_length(value: str, row: int, source: str) -> str:
    label = str(value).strip().lower()
    if label not in LENGTHS:
        raise ValueError(f"{source} row {row}: ctx_length={value!r} is not one of {list(LENGTHS)}.")
    return label
