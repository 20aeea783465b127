"""Run a training command as a user would (a subprocess), watch every process it starts, and say afterwards what
it left behind: processes still alive and shared-memory segments that nothing uses.

    run = WatchedRun(cmd, cwd=folder, env=env, log=folder / "console.log")
    run.wait_for(lambda: metrics_file.exists(), what="the first step")   # step-capped: no time limit of our own
    run.kill_descendant(lambda p: "EngineCore" in p.name())            # inject a fault
    code = run.wait()
    assert run.leftover_processes() == [] and run.leftover_segments() == []

Descendants are sampled while the run lives (twice a second), so a process that started and ended between two
samples is not seen; every long-lived one (Ray's, vLLM's) is. A run still alive when its test ends (a failed
assertion, a timeout) is stopped with everything it started (``WatchedRun.stop_all``, called by the test suite after
every test), so one failure does not leave a trainer running under the next tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import psutil

from verl_ext.platform import shm


class TreeSampler(threading.Thread):
    """Samples a process tree (the descendants of ``root``, this process by default) every ``period_s``: every
    process seen, by (pid, start time), and the peak of their summed RSS (shared pages counted once per process,
    so an upper bound)."""

    def __init__(self, root: Optional[int] = None, period_s: float = 0.5):
        super().__init__(daemon=True)
        self.root, self.period_s = root or os.getpid(), period_s
        self.seen: dict[tuple[int, float], str] = {}
        self.peak_rss = 0
        self.halt = threading.Event()

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.root).children(recursive=True)
        except psutil.Error:
            return []

    def run(self) -> None:
        while not self.halt.is_set():
            total = 0
            for p in self.descendants():
                try:
                    self.seen.setdefault((p.pid, p.create_time()), p.name())
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_rss = max(self.peak_rss, total)
            self.halt.wait(self.period_s)

    def stop(self) -> None:
        self.halt.set()
        self.join()


def _await_exit(procs: list, bound_s: float = 60.0) -> None:
    """Until every process of ``procs`` (killed) has exited or is a zombie (its parent reaps it, or init does);
    bounded, since a zombie whose parent never reaps it stays one."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        alive = []
        for p in procs:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                continue
        if not alive:
            return
        procs = alive
        time.sleep(0.1)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class WatchedRun:
    _live: list["WatchedRun"] = []

    def __init__(self, cmd: list[str], cwd: Path, env: Optional[dict] = None, log: Optional[Path] = None):
        self.shm_before = shm.snapshot()
        self.log_path = Path(log or Path(cwd) / "console.log")
        self._log = open(self.log_path, "a")
        # SIGINT back to its default in the run: a shell's background job (a CI lane) starts with it ignored, which
        # Python then keeps, and the run would ignore an interrupt a user's terminal delivers.
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=_default_sigint)
        self._sampler = TreeSampler(self.proc.pid)
        self._sampler.start()
        self.seen = self._sampler.seen
        WatchedRun._live.append(self)

    def stop(self) -> bool:
        """Kill the run and every process it started that is still alive; whether it was still running."""
        running = self.proc.poll() is None
        targets = list(self._descendants())  # those started since the last sample too
        for (pid, created) in list(self.seen):
            try:
                p = psutil.Process(pid)
                if p.create_time() == created:
                    targets.append(p)
            except psutil.Error:
                continue
        for p in [*targets, psutil.Process(self.proc.pid)] if running else targets:
            try:
                p.kill()
            except psutil.Error:
                continue
        self.proc.wait()
        _await_exit(targets)
        self._sampler.stop()
        if not self._log.closed:
            self._log.close()
        return running

    @classmethod
    def stop_all(cls) -> list[str]:
        """Stop every run started so far that is still alive (the test suite calls it after each test); their
        commands."""
        stopped = [" ".join(map(str, run.proc.args[:4])) for run in cls._live if run.stop()]
        cls._live.clear()
        return stopped

    def _descendants(self) -> list[psutil.Process]:
        return self._sampler.descendants()

    def wait_for(self, condition: Callable[[], bool], what: str, poll_s: float = 0.5) -> None:
        """Wait until ``condition()`` holds; fail if the run ends first (never on time)."""
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"the run ended (exit {self.proc.returncode}) before {what}; see {self.log_path}")
            time.sleep(poll_s)

    def kill_descendant(self, match: Callable[[psutil.Process], bool], sig: int = signal.SIGKILL) -> psutil.Process:
        """Send ``sig`` to the first live descendant ``match`` accepts; waits until one exists."""
        while True:
            for p in self._descendants():
                try:
                    if match(p):
                        p.send_signal(sig)
                        return p
                except psutil.Error:
                    continue
            if self.proc.poll() is not None:
                raise AssertionError(f"the run ended before a matching process appeared; see {self.log_path}")
            time.sleep(0.2)

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the run's own process (its exit handlers run)."""
        os.kill(self.proc.pid, signal.SIGINT)

    def wait(self) -> int:
        code = self.proc.wait()
        self._sampler.stop()
        if not self._log.closed:
            self._log.close()
        return code

    def leftover_processes(self) -> list[str]:
        """'name (pid)' of every process the run started that is still alive."""
        alive = []
        for (pid, created), name in self.seen.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{name} ({pid})")
            except psutil.Error:
                continue
        return alive

    def leftover_segments(self) -> list[str]:
        """Shared-memory segments that appeared during the run and that no live process uses."""
        return sorted((shm.snapshot() - self.shm_before) - shm.in_use())

    def log(self) -> str:
        return self.log_path.read_text()
