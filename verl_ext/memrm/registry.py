"""The registry of MemoryRewardBench tasks and settings, and the reading of row labels against it.

    python -m verl_ext.memrm.registry --readme recipes/memoryrewardbench/README.md   (rewrite its settings tables)

``REGISTRY`` starts with the entries of ``settings``; ``register`` / ``unregister`` / ``registered`` (a context
manager) add and remove entries, never clearing the others. Every change is checked as a whole before it takes
effect: each setting's task is registered, its parts are values its task's label words name, no two settings share
a name, parts or raw code, and every setting's released labels and raw codes read back to it. A refused change
leaves the registry as it was.

Reading a row's labels (``Index.normalise``): each label on its own is a setting name, a raw code (any case), or a
text whose parts are read with the task's label words, part by part (the words one part finds are removed before
the next part reads); what the two labels say is merged, and where they disagree on a part or name different
settings, the row is refused (``ContradictoryLabels``).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

from verl_ext.memrm.settings import LENGTHS, SETTING_ENTRIES, TASK_ENTRIES, Part, Setting, Task, Word


class UnknownLabel(ValueError):
    """A task / subtask label that maps to no setting; the message lists the known forms."""


class ContradictoryLabels(UnknownLabel):
    """A row whose task and subtask labels name different settings; the message names both."""


class RegistryError(ValueError):
    """An entry that does not fit the registered ones; the message names the entry, the clash and the fix."""


Entry = Union[Task, Setting]


class Index:
    """Everything derived from one set of entries, checked when built and never changed after (a registry change
    builds a new one)."""

    def __init__(self, tasks: dict[str, Task], settings: dict[str, Setting]):
        self.tasks, self.settings = dict(tasks), dict(settings)
        shorts = [t.short for t in tasks.values()]
        if len(set(shorts)) != len(shorts):
            raise RegistryError(f"task short names {shorts} repeat; each task needs its own (pair ids use it).")
        by_task: dict[str, list[str]] = {name: [] for name in tasks}
        for s in settings.values():
            if s.task not in tasks:
                raise RegistryError(f"setting {s.name!r}: task {s.task!r} is not registered ({list(tasks)}); "
                                    "register its Task first.")
            by_task[s.task].append(s.name)
        self.by_task = {task: tuple(names) for task, names in by_task.items()}
        self.all_settings = tuple(name for task in tasks for name in self.by_task[task])
        self.short = {name: t.short for name, t in tasks.items()}
        self.counts = {name: tuple(settings[name].counts) for name in self.all_settings}
        self.released = {name: tuple(settings[name].released) for name in self.all_settings}
        self.raw_codes: dict[str, str] = {}  # lower-cased code -> setting
        for name in self.all_settings:
            for code in settings[name].raw_codes:
                other = self.raw_codes.setdefault(code.lower(), name)
                if other != name:
                    raise RegistryError(f"raw code {code!r} names both {other!r} and {name!r}; give one of them "
                                        "another code.")
        self.vocabulary = {task: tuple(self._part(t, part) for part in t.parts) for task, t in tasks.items()}
        self._readers = {task: tuple((p, tuple((w.value, re.compile(w.regex)) for w in p.words),
                                      re.compile("|".join(f"(?:{w.regex})" for w in p.words)))
                                     for p in parts if p.words)
                         for task, parts in self.vocabulary.items()}
        self.combinations: dict[str, dict[frozenset, str]] = {task: {} for task in tasks}
        for name in self.all_settings:
            self._check_parts(settings[name])
        for name in self.all_settings:
            self._check_reads_back(settings[name])

    def _part(self, task: Task, part: Part) -> Part:
        """The task's part with the words its settings bring for new values appended (in registration order)."""
        brought = []
        for name in self.by_task[task.name]:
            words = self.settings[name].words.get(part.name, ())
            known = [w.text for w in words if w.value in part.values]
            if known:
                raise RegistryError(f"setting {name!r} brings words {known} for the {part.name} "
                                    f"{self.settings[name].parts[part.name]!r}, which {task.name} already names; "
                                    "add them to the task's vocabulary instead.")
            brought.extend(words)
        return Part(part.name, part.words + tuple(brought), part.first_wins)

    def _check_parts(self, s: Setting) -> None:
        parts = self.vocabulary[s.task]
        names = [p.name for p in parts]
        if set(s.parts) != set(names):
            raise RegistryError(f"setting {s.name!r}: parts {dict(s.parts)} must give one value for each part of "
                                f"{s.task}: {names}.")
        for p in parts:
            if s.parts[p.name] not in p.values:
                raise RegistryError(f"setting {s.name!r}: no label word of {s.task} names its {p.name} "
                                    f"{s.parts[p.name]!r} (named: {list(p.values)}); give the setting `words` for "
                                    "it, or add them to the task's vocabulary.")
        key = frozenset(s.parts.items())
        other = self.combinations[s.task].setdefault(key, s.name)
        if other != s.name:
            raise RegistryError(f"settings {other!r} and {s.name!r} of {s.task} are both made of {dict(s.parts)}; "
                                "labels could not tell them apart.")

    def _check_reads_back(self, s: Setting) -> None:
        for raw_task, raw_subtask in [s.released] + [(code, "") for code in s.raw_codes]:
            try:
                read = repr(self.normalise(s.task, raw_task, raw_subtask))
            except UnknownLabel as err:
                read = f"an error ({err})"
            if read != repr(s.name):
                raise RegistryError(f"setting {s.name!r}: its labels task={raw_task!r}, subtask={raw_subtask!r} read "
                                    f"as {read}; fix its released labels, raw codes or words, or the words that now "
                                    "read them otherwise.")

    # Reading labels ------------------------------------------------------------------------------------------------

    def _components(self, task: str, label: str) -> dict[str, str]:
        """What one label says: {"setting": name} for a setting name or raw code of ``task``, else the parts it
        names; a part named twice (where the first word does not win) reads "A/B", which contradicts itself."""
        if label in self.by_task[task]:
            return {"setting": label}
        code = self.raw_codes.get(label.lower())
        if code is not None and self.settings[code].task == task:
            return {"setting": code}
        text, found = label.lower(), {}
        for part, words, consumed in self._readers[task]:
            values = [value for value, regex in words if regex.search(text)]
            text = consumed.sub("", text)  # the next part reads what this one leaves
            if values:
                found[part.name] = values[0] if part.first_wins else "/".join(sorted(set(values)))
        return found

    def _setting_of(self, task: str, parts: dict[str, str]) -> Optional[str]:
        if "setting" in parts:
            return parts["setting"]
        return self.combinations[task].get(frozenset(parts.items()))

    def normalise(self, task: str, raw_task: str, raw_subtask: str) -> str:
        """The setting of a ``task`` row labelled ``raw_task`` / ``raw_subtask`` (see the module docstring)."""
        if task not in self.tasks:
            raise ValueError(f"task {task!r} is not one of the registered tasks {list(self.tasks)}.")
        t, s = (raw_task or "").strip(), (raw_subtask or "").strip()
        parts_t, parts_s = self._components(task, t), self._components(task, s)
        full = [p["setting"] for p in (parts_t, parts_s) if "setting" in p]
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
        derived = self._setting_of(task, merged)
        candidates = set(full) | ({derived} if derived else set())
        if len(candidates) > 1:
            raise ContradictoryLabels(f"task={raw_task!r} and subtask={raw_subtask!r} name different settings "
                                      f"({sorted(candidates)}) for this {task} row; fix one of the two labels.")
        if candidates:
            return candidates.pop()
        codes = [c for name in self.by_task[task] for c in self.settings[name].raw_codes]
        words = ", then ".join(f"the {p.name} (" + ", ".join(f"{w.text!r} → {w.value}" for w in p.words) + ")"
                               for p in self.vocabulary[task])
        raise UnknownLabel(f"task={raw_task!r}, subtask={raw_subtask!r} in {task} maps to no setting. Known settings: "
                           f"{list(self.by_task[task])}; known raw codes: {codes}; its labels name {words}.")


class Registry:
    """The registered entries; ``index`` holds what is derived from them. Changes are all-or-nothing."""

    def __init__(self, entries: Sequence[Entry] = ()):
        self.index = Index({}, {})
        self.register(*entries)

    @staticmethod
    def _table(entry: Entry, tasks: dict, settings: dict) -> tuple[str, dict]:
        if isinstance(entry, Task):
            return "task", tasks
        if isinstance(entry, Setting):
            return "setting", settings
        raise TypeError(f"{entry!r} is neither a Task nor a Setting (verl_ext.memrm.settings).")

    def register(self, *entries: Entry) -> None:
        """Add ``entries`` (tasks and settings, in any order); all or none."""
        tasks, settings = dict(self.index.tasks), dict(self.index.settings)
        for entry in sorted(entries, key=lambda e: isinstance(e, Setting)):  # tasks first
            kind, table = self._table(entry, tasks, settings)
            if entry.name in table:
                raise RegistryError(f"{kind} {entry.name!r} is already registered; unregister it first or choose "
                                    "another name.")
            table[entry.name] = entry
        self.index = self._checked(tasks, settings, "registering", entries)

    def unregister(self, *entries: Entry) -> None:
        """Remove exactly ``entries`` (as registered); a task goes only with all its settings."""
        tasks, settings = dict(self.index.tasks), dict(self.index.settings)
        for entry in entries:
            kind, table = self._table(entry, tasks, settings)
            if table.get(entry.name) != entry:
                raise RegistryError(f"{kind} {entry.name!r} is not registered as given; pass the entry that was "
                                    "registered.")
            del table[entry.name]
        orphans = [s.name for s in settings.values() if s.task not in tasks]
        if orphans:
            raise RegistryError(f"settings {orphans} would lose their task; unregister them together with it.")
        self.index = self._checked(tasks, settings, "unregistering", entries)

    @staticmethod
    def _checked(tasks: dict, settings: dict, change: str, entries: Sequence[Entry]) -> Index:
        try:
            return Index(tasks, settings)
        except RegistryError as err:
            raise RegistryError(f"{change} {[e.name for e in entries]} is refused: {err}") from None

    @contextlib.contextmanager
    def registered(self, *entries: Entry) -> Iterator[None]:
        """``entries`` registered for the ``with`` block, unregistered after it (the others untouched)."""
        self.register(*entries)
        try:
            yield
        finally:
            self.unregister(*entries)


REGISTRY = Registry(TASK_ENTRIES + SETTING_ENTRIES)
register, unregister, registered = REGISTRY.register, REGISTRY.unregister, REGISTRY.registered


class LiveTuple(Sequence):
    """A read-only tuple that reads the registry on every use, so an import of it never goes stale."""

    def __init__(self, read: Callable[[], tuple]):
        self._read = read

    def __getitem__(self, i):
        return self._read()[i]

    def __len__(self):
        return len(self._read())

    def __iter__(self):
        return iter(self._read())

    def __contains__(self, value):
        return value in self._read()

    def __eq__(self, other):
        return tuple(self) == (tuple(other) if isinstance(other, Sequence) and not isinstance(other, str) else other)

    __hash__ = None

    def __repr__(self):
        return repr(self._read())


class LiveMapping(Mapping):
    """A read-only dict that reads the registry on every use."""

    def __init__(self, read: Callable[[], dict]):
        self._read = read

    def __getitem__(self, key):
        return self._read()[key]

    def __iter__(self):
        return iter(self._read())

    def __len__(self):
        return len(self._read())

    def __repr__(self):
        return repr(self._read())


# The README's settings tables ------------------------------------------------------------------------------------

README_BEGIN = ("<!-- settings tables: generated from verl_ext/memrm/settings.py by `python -m verl_ext.memrm.registry "
                "--readme recipes/memoryrewardbench/README.md`; tests/memrm check them -->")
README_END = "<!-- end of the generated settings tables -->"


def _word(w: Word) -> str:
    regex = w.pattern.replace("|", "\\|")  # a bare | would split the table cell
    return f"`{w.text}`" + (f" (regex `{regex}`)" if w.pattern else "") + f" → {w.value}"


def settings_markdown(index: Optional[Index] = None) -> str:
    """The settings and label-vocabulary tables of the registered entries (as the README holds them)."""
    ix = index or REGISTRY.index
    lengths = " / ".join(LENGTHS)
    lines = [f"| task | setting | made of | released labels (HF `task` / `subtask`) | raw code | published pairs "
             f"({lengths}) |", "|---|---|---|---|---|---|"]
    for name in ix.all_settings:
        s = ix.settings[name]
        parts = ", ".join(f"{p.name} {s.parts[p.name]}" for p in ix.vocabulary[s.task])
        codes = ", ".join(f"`{c}`" for c in s.raw_codes) or "–"
        lines.append(f"| {ix.short[s.task]} | {name} | {parts} | `{s.released[0]}` / `{s.released[1]}` | {codes} | "
                     f"{' / '.join(map(str, s.counts))} ({s.size:,}) |")
    totals = [sum(c[k] for c in ix.counts.values()) for k in range(len(LENGTHS))]
    lines += [f"| | **all** | | | | {' / '.join(f'{n:,}' for n in totals)} ({sum(totals):,}) |", "",
              "| task | judge prompt | label words → value, part by part in reading order |", "|---|---|---|"]
    for task in ix.tasks.values():
        parts = "; ".join(f"{p.name}{' (first word found wins)' if p.first_wins else ''}: "
                          + ", ".join(_word(w) for w in p.words) for p in ix.vocabulary[task.name])
        lines.append(f"| {task.name} ({task.short}) | {task.prompt} | {parts} |")
    return "\n".join(lines) + "\n"


def readme_tables(text: str) -> str:
    """The generated block of a README's text (between the two markers)."""
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"the README has no generated settings tables; put the lines\n{README_BEGIN}\n{README_END}\n"
                         "where they go and run python -m verl_ext.memrm.registry --readme README.")
    return text.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip("\n") + "\n"


def write_readme(path: str | Path) -> bool:
    """Rewrite the generated block of ``path``; True if it changed."""
    path = Path(path)
    text = path.read_text()
    old = readme_tables(text)
    new = settings_markdown()
    if old == new:
        return False
    head, rest = text.split(README_BEGIN, 1)
    path.write_text(head + README_BEGIN + "\n\n" + new + "\n" + README_END + rest.split(README_END, 1)[1])
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", help="rewrite the generated settings tables of this README")
    args = parser.parse_args(argv)
    if args.readme:
        print(f"{args.readme}: {'rewritten' if write_readme(args.readme) else 'already up to date'}")
    else:
        print(settings_markdown(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
