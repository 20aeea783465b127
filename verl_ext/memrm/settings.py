"""MemoryRewardBench tasks and settings as data: one ``Task`` entry per task file, one ``Setting`` entry per setting.

Everything else is derived from these entries by ``registry``: ``schema.TASKS``, ``TASK_SHORT``, ``SETTINGS``,
``ALL_SETTINGS``, ``PUBLISHED_COUNTS``, ``FULL_SIZE``, the raw evaluator codes, label normalisation and its error
messages, ``synthetic.RAW_LABELS``, the judge prompt each task gets, and the settings tables of
recipes/memoryrewardbench/README.md (``python -m verl_ext.memrm.registry --readme ...`` writes them).

A new setting is one ``Setting`` in ``SETTING_ENTRIES`` (or ``registry.register(Setting(...))`` from outside the
package); a new task is one ``Task`` in ``TASK_ENTRIES`` plus its settings. Registration checks every entry against
the others and reads every setting's released labels and raw codes back, so an entry that would break another
setting's labels is refused with the reason.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Union

LENGTHS = ("8k", "16k", "32k", "64k", "128k")
PROMPT_FAMILIES = ("pair", "longform")  # the system prompts of prompts.PromptSet, one per family


@dataclasses.dataclass(frozen=True)
class Word:
    """A label word naming ``value`` of a part: ``text`` is searched as a plain substring of the lower-cased label;
    a ``pattern`` (regular expression) is searched instead where a plain substring would read too much, and
    ``text`` then only names the word in messages and in the README."""

    text: str
    value: str
    pattern: str = ""

    def __post_init__(self):
        if not self.text or not self.value or "/" in self.value:
            raise ValueError(f"{self!r}: a label word needs its text and the value it names (without '/', which "
                             "marks a label naming two values).")
        if not self.pattern and self.text != self.text.lower():
            raise ValueError(f"label word {self.text!r} is searched in the lower-cased label; write it in lower case.")
        try:
            re.compile(self.regex)
        except re.error as err:
            raise ValueError(f"label word {self.text!r}: pattern {self.pattern!r} is no regular expression ({err}).")

    @property
    def regex(self) -> str:
        return self.pattern or re.escape(self.text)


@dataclasses.dataclass(frozen=True)
class Part:
    """One part of a task's setting names (LCR: pattern and error) and the words naming its values, in reading
    order. A label naming two values of the part contradicts itself, unless ``first_wins``: then the first word in
    reading order that the label contains decides."""

    name: str
    words: tuple[Word, ...]
    first_wins: bool = False

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(w.value for w in self.words))


@dataclasses.dataclass(frozen=True)
class Task:
    """One task config (one file of the benchmark) and the label vocabulary of its settings.

    ``parts`` are read from a label in this order, and the words one part finds are removed from the label before
    the next part reads it (so the system ``a-mem`` is not read again as the side ``mem``)."""

    name: str  # the task config and its file name
    short: str  # pair ids ("LCR-7") and data sources ("memrm/LCR/...")
    prompt: str  # the judge system prompt family: one of PROMPT_FAMILIES
    parts: tuple[Part, ...]

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.name) or not re.fullmatch(r"[A-Za-z0-9]+", self.short):
            raise ValueError(f"task {self.name!r} / short name {self.short!r}: both name files and data sources; use "
                             "letters, digits, '_' and '-' (the short name: letters and digits).")
        if self.prompt not in PROMPT_FAMILIES:
            raise ValueError(f"task {self.name!r}: prompt {self.prompt!r} is not one of {list(PROMPT_FAMILIES)}.")
        names = [p.name for p in self.parts]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"task {self.name!r}: parts {names} must be one or more distinct names.")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting of a task: what it is made of, how the release labels it, and its published size."""

    name: str  # as the paper's tables write it
    task: str  # a registered Task's name
    counts: tuple[int, ...]  # published pairs per length bucket, 8k..128k
    parts: Mapping[str, str]  # part -> value, one for every part of the task
    released: tuple[str, str]  # (task, subtask) labels as the release writes them; the synthetic benchmark writes these
    raw_codes: tuple[str, ...] = ()  # the official evaluator's codes (read case-insensitively)
    # Words for a part value its task's vocabulary does not name (a setting bringing a new value brings the words
    # for it): part -> texts (plain lower-case substrings) or Words; read after the task's own words of that part.
    words: Mapping[str, tuple[Union[str, Word], ...]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.name or "/" in self.name:
            raise ValueError(f"setting {self.name!r}: the name keys cells and data sources ('memrm/<task>/<setting>/"
                             "<length>'); it must be non-empty, without '/'.")
        if len(self.counts) != len(LENGTHS) or any(not isinstance(n, int) or n < 0 for n in self.counts):
            raise ValueError(f"setting {self.name!r}: counts {self.counts!r} must be {len(LENGTHS)} non-negative "
                             f"integers, one per length {list(LENGTHS)}.")
        if len(self.released) != 2 or not all(isinstance(label, str) for label in self.released):
            raise ValueError(f"setting {self.name!r}: released {self.released!r} must be the (task, subtask) labels.")
        words = {}
        for part, given in self.words.items():
            if part not in self.parts:
                raise ValueError(f"setting {self.name!r}: words for part {part!r}, which is not one of its parts "
                                 f"{list(self.parts)}.")
            given = (given,) if isinstance(given, (str, Word)) else tuple(given)
            words[part] = tuple(w if isinstance(w, Word) else Word(w, self.parts[part]) for w in given)
            wrong = [w.text for w in words[part] if w.value != self.parts[part]]
            if wrong:
                raise ValueError(f"setting {self.name!r}: words {wrong} name another value than its {part} "
                                 f"{self.parts[part]!r}; a setting brings words for its own values only.")
        object.__setattr__(self, "words", words)

    @property
    def size(self) -> int:
        return sum(self.counts)


LCR, MDU, LFG = "Long-context_Reasoning", "Multi-turn_Dialogue_Understanding", "Long-form_Generation"

TASK_ENTRIES = (
    Task(LCR, "LCR", "pair", (
        Part("pattern", (Word("sequential", "Sequential"), Word("parallel", "Mixed"))),
        Part("error", (Word("self_correct", "Noise"), Word("wrong_answer", "Drop"))),
    )),
    Task(MDU, "MDU", "pair", (
        Part("system", (Word("a-mem", "A-Mem", r"a[-_]?mem"), Word("mem0", "Mem0")), first_wins=True),
        # "out" begins a word ("locomo_out"); "mem" is a whole word, so "memory" names no side
        Part("side", (Word("out", "Out", r"(^|[^a-z])out"), Word("mem", "Mem", r"(^|[^a-z0-9])mem($|[^a-z0-9])")),
             first_wins=True),
    )),
    Task(LFG, "LFG", "longform", (
        Part("pattern", (Word("sequ", "Sequential"), Word("parallel", "Parallel"))),  # the release spells "sequantial"
    )),
)

SETTING_ENTRIES = (
    Setting("Sequential-Noise", LCR, (101, 44, 43, 36, 31), {"pattern": "Sequential", "error": "Noise"},
            ("sequential-self_correct", "qa7-sequential-self_correct"), ("S-Noise",)),
    Setting("Sequential-Drop", LCR, (35, 22, 22, 40, 15), {"pattern": "Sequential", "error": "Drop"},
            ("sequential-wrong_answer", "longmit-sequential-wrong_answer"), ("S-Drop",)),
    Setting("Mixed-Noise", LCR, (22, 33, 49, 46, 34), {"pattern": "Mixed", "error": "Noise"},
            ("parallel-self_correct", "qa7-parallel3-self_correct"), ("P-Noise",)),
    Setting("Mixed-Drop", LCR, (19, 65, 72, 43, 28), {"pattern": "Mixed", "error": "Drop"},
            ("parallel-wrong_answer", "longmit-parallel2-wrong_answer"), ("P-Drop",)),
    Setting("Mem0-Out", MDU, (27, 27, 42, 48, 23), {"system": "Mem0", "side": "Out"},
            ("Mem0-OUT", "mem0_locomo_out"), ("Mem0-OUT",)),
    Setting("Mem0-Mem", MDU, (25, 25, 41, 47, 21), {"system": "Mem0", "side": "Mem"},
            ("Mem0-MEM", "mem0_locomo_hard"), ("Mem0-MEM",)),
    Setting("A-Mem-Out", MDU, (42, 42, 48, 50, 47), {"system": "A-Mem", "side": "Out"},
            ("A-Mem-OUT", "amem_locomo_out"), ("A-Mem-OUT",)),
    Setting("A-Mem-Mem", MDU, (48, 45, 49, 53, 50), {"system": "A-Mem", "side": "Mem"},
            ("A-Mem-MEM", "amem_locomo_mem"), ("A-Mem-MEM",)),
    Setting("Sequential", LFG, (49, 152, 147, 67, 42), {"pattern": "Sequential"},
            ("Long-form_Generation", "longgenbench_short_sequantial")),
    Setting("Parallel", LFG, (51, 48, 53, 133, 58), {"pattern": "Parallel"},
            ("Long-form_Generation", "longgenbench_short_parallel")),
)
