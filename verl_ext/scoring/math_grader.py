"""Math answer grading with math-verify, with a hard per-item timeout that works in any thread or Ray worker.

math-verify's own timeouts use ``signal.alarm``, which only works in the main thread, and sympy can spin for
minutes on pathological LaTeX. Here every math-verify call runs in a child process; a call that outlives its
budget gets the child killed (and restarted on next use), and the item is graded ``timeout`` with score 0 and
counted, so one bad answer never stalls a training step.

``grade(response, ground_truth)`` looks for the last ``\\boxed{...}`` of the response; an exact string match with
the ground truth is accepted without math-verify.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import threading
from collections import Counter
from typing import Optional

DEFAULT_TIMEOUT_S = float(os.environ.get("VERL_EXT_GRADE_TIMEOUT_S", "5"))

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


def _verify_in_child(conn) -> None:
    # Runs in the grading process: the main thread of its own process, so math-verify's signals are usable,
    # but the parent enforces the budget by killing us, which also covers C-level hangs.
    from math_verify import parse, verify

    while True:
        try:
            gold, predicted = conn.recv()
        except EOFError:
            return
        try:
            gold_parsed = parse(gold, parsing_timeout=None)
            pred_parsed = parse(predicted, parsing_timeout=None)
            conn.send(("ok", bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))))
        except Exception as exc:  # noqa: BLE001 - reported to the parent as an explicit `error` grade
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class MathGrader:
    """Grades answers in a child process; thread-safe; counts outcomes in ``stats``."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s} must be > 0.")
        self.timeout_s = timeout_s
        self.stats: Counter = Counter()
        self._lock = threading.Lock()
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_verify_in_child, args=(child,), daemon=True, name="verl_ext-math-grader")
        self._proc.start()
        child.close()
        self._conn = parent

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=5)
        self._proc = self._conn = None

    def close(self) -> None:
        with self._lock:
            self._kill()

    def verify(self, gold: str, predicted: str) -> tuple[str, object]:
        """('ok', bool) | ('timeout', None) | ('error', message). Holds the lock for at most ~timeout_s."""
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                self._start()
            self._conn.send((gold, predicted))
            # The first call also pays the child's import of math-verify/sympy (~1-2 s): not the item's fault.
            budget = self.timeout_s + (15.0 if self.stats["calls"] == 0 else 0.0)
            self.stats["calls"] += 1
            if not self._conn.poll(budget):
                self._kill()
                return "timeout", None
            return self._conn.recv()

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
