"""The records file's test hook (the resume tests' fault injection)."""

import pytest

from verl_ext.memrm.records import RecordStore


def test_hold_after_n_records_stops_the_writer_there(tmp_path, monkeypatch):
    """The resume tests' fault injection: with VERL_EXT_MEMRM_HOLD_AFTER=2 the writer that appends the second record
    stops there (until the run is stopped), so a run is mid-evaluation by construction; a bad value is refused."""
    import os
    import sys

    from verl_ext.memrm.records import HOLD_ENV
    from verl_ext.testing.watched_run import WatchedRun

    code = ("from verl_ext.memrm.records import RecordStore; s = RecordStore(%r); "
            "[s.append({'key': str(i)}) for i in range(5)]") % str(tmp_path / "r.jsonl")
    run = WatchedRun([sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ, **{HOLD_ENV: "2"}))
    run.wait_for(lambda: "reached" in run.log(), what="the hold")
    assert run.proc.poll() is None  # held, not finished
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 2
    assert WatchedRun.stop_all()
    monkeypatch.setenv(HOLD_ENV, "ten")
    with pytest.raises(ValueError, match=HOLD_ENV):
        RecordStore(tmp_path / "bad.jsonl").append({"key": "a"})
