"""Math answer grading with math-verify, with a hard per-item timeout that works in any thread or Ray worker.

math-verify's own timeouts use ``signal.alarm``, which only works in the main thread, and sympy can spin for
minutes on pathological LaTeX. Here every math-verify call runs in a child process; a call that outlives its
budget gets the child killed (and restarted on next use), and the item is graded ``timeout`` with score 0 and
counted, so one bad answer never stalls a training step.

``grade(response, ground_truth)`` looks for the last ``\\boxed{...}`` of the response; an exact string match, or two
plain decimal numbers, are compared without math-verify (the common case for integer-answer math data).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import select
import subprocess
import sys
import threading
from collections import Counter
from typing import Optional

DEFAULT_TIMEOUT_S = float(os.environ.get("VERL_EXT_GRADE_TIMEOUT_S", "5"))
STARTUP_TIMEOUT_S = 120.0

STATUS_CORRECT = "correct"
STATUS_WRONG = "wrong"
STATUS_NO_ANSWER = "no_answer"
STATUS_TIMEOUT = "timeout"
STATUS_ERROR = "error"


@dataclasses.dataclass(frozen=True)
class Grade:
    """``status`` is one of correct / wrong / no_answer / timeout / error; only ``correct`` scores 1."""

    status: str
    answer: Optional[str]
    detail: str = ""

    @property
    def correct(self) -> bool:
        return self.status == STATUS_CORRECT


def last_boxed(text: str) -> Optional[str]:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; None if there is none."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for i in range(brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : i]
    return None


def _normalise(answer: str) -> str:
    return answer.strip().strip("$").replace(" ", "").rstrip(".")


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d*)?$")


def _plain_number(answer: str) -> Optional[float]:
    """The value of a plain decimal literal ("42", "-3.50", "1,000"), else None ("1,2" is a pair, not twelve)."""
    text = _normalise(answer)
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    return float(text) if _NUMBER.match(text) else None


class MathGrader:
    """Grades answers in a child process; thread-safe; counts outcomes in ``stats``."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s} must be > 0.")
        self.timeout_s = timeout_s
        self.stats: Counter = Counter()
        self._lock = threading.Lock()
        self._proc = None

    def _start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "verl_ext.scoring._grader_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        # Importing math-verify and sympy takes ~0.5 s (more on a cold disk); it is not charged to any item.
        ready, _, _ = select.select([self._proc.stdout], [], [], STARTUP_TIMEOUT_S)
        if not ready or json.loads(self._proc.stdout.readline() or "[null]")[0] != "ready":
            self._kill()
            raise RuntimeError(
                f"the math-verify grading process did not start within {STARTUP_TIMEOUT_S}s; "
                "check that math-verify imports in this environment (python -c 'import math_verify')."
            )
        self.stats["grader_starts"] += 1

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None

    def close(self) -> None:
        with self._lock:
            self._kill()

    def __del__(self):
        if getattr(self, "_proc", None) is not None:
            self._proc.kill()

    def verify(self, gold: str, predicted: str) -> tuple[str, object]:
        """('ok', bool) | ('timeout', None) | ('error', message). Holds the lock for at most ~timeout_s."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            self.stats["calls"] += 1
            try:
                self._proc.stdin.write(json.dumps([gold, predicted]) + "\n")
                self._proc.stdin.flush()
            except BrokenPipeError:
                self._kill()
                return "error", "math-verify child process died"
            ready, _, _ = select.select([self._proc.stdout], [], [], self.timeout_s)
            if not ready:
                self._kill()
                return "timeout", None
            line = self._proc.stdout.readline()
            if not line:
                self._kill()
                return "error", "math-verify child process died"
            kind, value = json.loads(line)
            return kind, value

    def grade(self, response: str, ground_truth: str) -> Grade:
        if ground_truth is None or str(ground_truth).strip() == "":
            raise ValueError("ground_truth is empty: every row needs reward_model.ground_truth to be graded.")
        answer = last_boxed(response)
        if answer is None:
            self.stats[STATUS_NO_ANSWER] += 1
            return Grade(STATUS_NO_ANSWER, None)
        if _normalise(answer) == _normalise(str(ground_truth)):
            self.stats[STATUS_CORRECT] += 1
            return Grade(STATUS_CORRECT, answer)
        predicted_value, truth_value = _plain_number(answer), _plain_number(str(ground_truth))
        if predicted_value is not None and truth_value is not None:
            # Two plain numbers: math-verify would only compare them numerically (rounding to 6 places).
            status = STATUS_CORRECT if abs(predicted_value - truth_value) <= 1e-6 * max(1.0, abs(truth_value)) else STATUS_WRONG
            self.stats[status] += 1
            return Grade(status, answer)
        kind, value = self.verify(f"${ground_truth}$", f"$\\boxed{{{answer}}}$")
        if kind == "timeout":
            status, detail = STATUS_TIMEOUT, f"math-verify exceeded {self.timeout_s}s"
        elif kind == "error":
            status, detail = STATUS_ERROR, str(value)
        else:
            status, detail = (STATUS_CORRECT if value else STATUS_WRONG), ""
        self.stats[status] += 1
        return Grade(status, answer, detail)


_default: Optional[MathGrader] = None
_default_lock = threading.Lock()


def default_grader() -> MathGrader:
    """The process-wide grader (one child process per worker process)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MathGrader()
        return _default
