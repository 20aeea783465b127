"""A run a test leaves alive is stopped with every process it started (the suite does it after each test)."""

import sys

import psutil

from verl_ext.testing.watched_run import WatchedRun

SPAWNS = ("import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
          "print(c.pid, flush=True); time.sleep(600)")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stop_all_ends_a_live_run_and_its_children(tmp_path):
    run = WatchedRun([sys.executable, "-c", SPAWNS], cwd=tmp_path)
    run.wait_for(lambda: run.log().strip() != "", what="the child's pid")
    child = int(run.log().split()[0])
    assert psutil.pid_exists(child)
    stopped = WatchedRun.stop_all()
    assert len(stopped) == 1 and sys.executable in stopped[0]
    assert run.proc.poll() is not None and _gone(child)
    assert WatchedRun.stop_all() == []  # nothing left to stop


def test_a_finished_run_is_not_reported_as_stopped(tmp_path):
    run = WatchedRun([sys.executable, "-c", "print('done')"], cwd=tmp_path)
    assert run.wait() == 0
    assert WatchedRun.stop_all() == []
