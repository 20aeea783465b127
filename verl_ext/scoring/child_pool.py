"""A pool of math-verify child processes with a warm spare: concurrent calls, hard per-call timeouts, restarts
off the critical path.

Each child (``_grader_child``) answers one ``[gold, predicted]`` line at a time. A call takes an idle child, and
if the answer is not back within the timeout the child is killed (sympy may be stuck in C code that no signal
reaches) and the warm spare, already past its imports, takes its place at once; a new spare starts in the
background. So a timed-out item costs its timeout and nothing more, and the other children keep grading.
"""

from __future__ import annotations

import json
import queue
import select
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Optional

STARTUP_TIMEOUT_S = 120.0
CHILD_SCRIPT = Path(__file__).with_name("_grader_child.py")


class _Child:
    def __init__(self):
        self.killed = False
        # Run as a file, not ``-m verl_ext...``: importing the package would import verl (and its plugins) first.
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD_SCRIPT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
        )
        # Importing math-verify and sympy takes ~0.5 s (more on a cold disk); it is charged to no item.
        ready, _, _ = select.select([self.proc.stdout], [], [], STARTUP_TIMEOUT_S)
        if not ready or json.loads(self.proc.stdout.readline() or "[null]")[0] != "ready":
            self.kill()
            raise RuntimeError(
                f"the math-verify grading process did not start within {STARTUP_TIMEOUT_S}s; check that math-verify "
                "imports in this environment (python -c 'import math_verify')."
            )

    def call(self, gold: str, predicted: str, timeout_s: float) -> tuple[str, object]:
        """('ok', bool) | ('timeout', None) | ('error', message); after timeout or error the child is dead."""
        try:
            self.proc.stdin.write(json.dumps([gold, predicted]) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.kill()
            return "error", "math-verify child process died"
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            self.kill()
            return "timeout", None
        line = self.proc.stdout.readline()
        if not line:
            self.kill()
            return "error", "math-verify child process died"
        kind, value = json.loads(line)
        return kind, value

    @property
    def alive(self) -> bool:
        # A killed process may not have exited yet: what we killed counts as dead at once.
        return not self.killed and self.proc.poll() is None

    def kill(self) -> None:
        self.killed = True
        if self.proc.poll() is None:
            self.proc.kill()
        # Reap without waiting on the caller's time: a killed process exits at once.
        threading.Thread(target=self.proc.wait, daemon=True).start()


class ChildPool:
    """``size`` children serve calls concurrently; one more waits, started, as the spare."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"grader pool size={size} must be >= 1.")
        self.size = size
        self.stats: Counter = Counter()
        self._idle: "queue.Queue[_Child]" = queue.Queue()
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._started = False
        self._spare: Optional[_Child] = None
        self._spare_ready = threading.Event()
        self._generation = 0  # bumped by close(): background starts of an older generation are discarded

    def _new_child(self) -> _Child:
        child = _Child()
        with self._lock:
            self.stats["grader_starts"] += 1
        return child

    def _start(self) -> None:
        """Start the children on first use (concurrent first calls wait for all of them)."""
        if self._started:
            return
        with self._start_lock:
            if self._started:
                return
            for _ in range(self.size):
                self._idle.put(self._new_child())
            self._refill_spare()
            self._started = True

    def _refill_spare(self) -> None:
        """Start a new spare in the background."""
        self._spare_ready.clear()
        generation = self._generation

        def make():
            child = self._new_child()
            with self._lock:
                if generation != self._generation:
                    child.kill()
                    return
                self._spare = child
            self._spare_ready.set()

        threading.Thread(target=make, daemon=True).start()

    def _replace(self, dead: _Child) -> None:
        """Put the spare in the dead child's place (waiting for it only if it is still starting); runs in the
        background, so the call that lost its child returns at once."""
        generation = self._generation
        dead.kill()
        self._spare_ready.wait(STARTUP_TIMEOUT_S)
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is None:  # the spare failed to start: start a replacement here
            spare = self._new_child()
        with self._lock:
            if generation != self._generation:
                spare.kill()
                return
            self._idle.put(spare)
        self._refill_spare()

    def call(self, gold: str, predicted: str, timeout_s: float) -> tuple[str, object]:
        self._start()
        child = self._idle.get()
        with self._lock:
            self.stats["calls"] += 1
        kind, value = child.call(gold, predicted, timeout_s)
        if child.alive:
            self._idle.put(child)
        else:
            with self._lock:
                self.stats["restarts"] += 1
            threading.Thread(target=self._replace, args=(child,), daemon=True).start()
        return kind, value

    def close(self) -> None:
        """Kill every child; the pool starts afresh on its next call."""
        with self._lock:
            self._generation += 1
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.kill()
        while True:
            try:
                self._idle.get_nowait().kill()
            except queue.Empty:
                break
        with self._lock:
            self._started = False
