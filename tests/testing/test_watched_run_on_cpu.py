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


def test_an_interrupt_reaches_the_run_even_when_this_process_ignores_it(tmp_path):
    """A CI lane runs as a shell's background job, which starts with SIGINT ignored; the run must still see the
    interrupt a user's terminal would deliver."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run = WatchedRun([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"], cwd=tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)
    run.wait_for(lambda: "up" in run.log(), what="the run's start")
    run.interrupt()
    assert run.wait() != 0 and "KeyboardInterrupt" in run.log()
