"""Per-sample MemoryRewardBench results, appended as JSON lines and keyed for resume.

A record's ``key`` is sha256(model, prompt, sampling, order): the same judge call always gets the same key, so a
restarted run skips every key already on disk. Appends hold an exclusive file lock and end with a flush + fsync, so
concurrent writers (verl's reward workers) never interleave lines; a run killed mid-write leaves at most one
partial line, which loading skips and counts (its item is recomputed). Duplicate keys keep the last record.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Iterable

# Fault injection for resume tests: once the records file holds this many lines, the writer that appended stops
# there (sleeps until the run is interrupted or killed), so "the run was stopped mid-evaluation" holds by construction
# instead of depending on how fast the machine judges the rest.
HOLD_ENV = "VERL_EXT_MEMRM_HOLD_AFTER"


def record_key(model: str, prompt_sha: str, sampling: str, order: Iterable[int]) -> str:
    payload = json.dumps([model, prompt_sha, sampling, list(order)])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def prompt_sha(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, ensure_ascii=False).encode()).hexdigest()[:32]


def _plain(value):
    # Rows read back from parquet carry numpy scalars and arrays.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class RecordStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.partial_lines = 0

    def load(self) -> dict[str, dict]:
        """key -> record; partial lines (killed writers) are skipped and counted in ``partial_lines``."""
        records: dict[str, dict] = {}
        if not self.path.exists():
            return records
        lines = self.path.read_text().splitlines()
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                # A writer killed mid-line: its item has no complete record, so a resumed run recomputes it.
                self.partial_lines += 1
                continue
            if "key" not in record:
                raise ValueError(f"{self.path} line {number + 1} has no 'key'.")
            records[record["key"]] = record
        return records

    def done_keys(self) -> set[str]:
        return set(self.load())

    def append(self, record: dict) -> None:
        if "key" not in record:
            raise ValueError("a record needs its 'key' (record_key(model, prompt_sha, sampling, order)).")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, ensure_ascii=False, default=_plain) + "\n"
        with open(self.path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.seek(0, os.SEEK_END)
                if f.tell() > 0:
                    f.seek(f.tell() - 1)
                    if f.read(1) != "\n":  # a killed writer left a partial line: start ours on a fresh one
                        f.write("\n")
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        self._hold_if_asked()

    def _hold_if_asked(self) -> None:
        hold = os.environ.get(HOLD_ENV)
        if not hold:
            return
        try:
            after = int(hold)
        except ValueError as err:
            raise ValueError(f"{HOLD_ENV}={hold!r} must be a whole number of records") from err
        if len(self.path.read_text().splitlines()) >= after:
            logging.getLogger(__name__).warning("verl_ext: %s=%d reached: this writer holds until the run is stopped",
                                                HOLD_ENV, after)
            while True:
                time.sleep(1.0)
