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


class ContradictoryLabels(UnknownLabel):
    """A row whose task and subtask labels name different settings; the message names both."""


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


def _components(task: str, label: str) -> dict[str, str]:
    """What one label says about a row's setting: {"setting": ...} for a full name or raw code, else the parts it
    names (LCR: pattern, error; MDU: system, side; LFG: pattern)."""
    if label in SETTINGS[task]:
        return {"setting": label}
    if label.lower() in _RAW_CODES and _RAW_CODES[label.lower()] in SETTINGS[task]:
        return {"setting": _RAW_CODES[label.lower()]}
    low = label.lower()
    found = {}
    if task == "Long-context_Reasoning":
        patterns = {v for k, v in _LCR_PATTERN.items() if k in low}
        errors = {v for k, v in _LCR_ERROR.items() if k in low}
        for key, values in (("pattern", patterns), ("error", errors)):
            if len(values) == 1:
                found[key] = values.pop()
            elif values:
                found[key] = "/".join(sorted(values))  # one label naming both: contradicts itself
    elif task == "Multi-turn_Dialogue_Understanding":
        low = low.replace("_", "-")
        if re.search(r"a-?mem", low):
            found["system"] = "A-Mem"
        elif "mem0" in low:
            found["system"] = "Mem0"
        rest = re.sub(r"a-?mem|mem0", "", low)  # the side is read from what the system name leaves
        if re.search(r"(^|[^a-z])out", rest):
            found["side"] = "Out"
        elif re.search(r"(^|[^a-z0-9])mem($|[^a-z0-9])", rest):
            found["side"] = "Mem"
    else:
        names = {v for k, v in (("sequ", "Sequential"), ("parallel", "Parallel")) if k in low}  # "sequantial" too
        if names:
            found["pattern"] = "/".join(sorted(names))
    return found


def _from_components(task: str, parts: dict[str, str]) -> Optional[str]:
    if "setting" in parts:
        return parts["setting"]
    if task == "Long-context_Reasoning" and {"pattern", "error"} <= set(parts):
        return f"{parts['pattern']}-{parts['error']}"
    if task == "Multi-turn_Dialogue_Understanding" and {"system", "side"} <= set(parts):
        return f"{parts['system']}-{parts['side']}"
    if task == "Long-form_Generation" and "pattern" in parts:
        return parts["pattern"]
    return None


def normalise_setting(task: str, raw_task: str, raw_subtask: str) -> str:
    """The setting name for a row of ``task`` with labels ``raw_task`` / ``raw_subtask``.

    Each label is read on its own; what they say is combined, and where both say something about the same part
    (or one label names two values of it) and they disagree, the row is refused (``ContradictoryLabels``)."""
    t, s = (raw_task or "").strip(), (raw_subtask or "").strip()
    parts_t, parts_s = _components(task, t), _components(task, s)
    full = [_from_components(task, p) for p in (parts_t, parts_s) if "setting" in p]
    merged: dict[str, str] = {}
    for parts in (parts_t, parts_s):
        for key, value in parts.items():
            if key == "setting":
                continue
            if "/" in value or merged.get(key, value) != value:
                raise ContradictoryLabels(
                    f"task={raw_task!r} and subtask={raw_subtask!r} contradict each other on the {key} of this "
                    f"{task} row ({merged.get(key, value)} vs {value}); fix one of the two labels.")
            merged[key] = value
    derived = _from_components(task, merged)
    candidates = set(full) | ({derived} if derived else set())
    if len(candidates) > 1:
        raise ContradictoryLabels(f"task={raw_task!r} and subtask={raw_subtask!r} name different settings "
                                  f"({sorted(candidates)}) for this {task} row; fix one of the two labels.")
    if candidates:
        return candidates.pop()
    raise UnknownLabel(
        f"task={raw_task!r}, subtask={raw_subtask!r} in {task} maps to no setting. Known settings: "
        f"{list(SETTINGS[task])}; known raw codes: {sorted(_RAW_CODES)}; LCR labels combine "
        "sequential|parallel with self_correct|wrong_answer, MDU labels name mem0|a-mem and out|mem, "
        "LFG labels name sequential|parallel."
    )


def check_length(value: str, where: str) -> str:
    label = str(value).strip().lower()
    if label not in LENGTHS:
        raise ValueError(f"{where}: ctx_length={value!r} is not one of {list(LENGTHS)}.")
    return label
