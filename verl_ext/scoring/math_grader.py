"""Math answer grading with math-verify, with a hard per-item timeout that works in any thread or Ray worker.

math-verify's own timeouts use ``signal.alarm``, which only works in the main thread, and sympy can spin for
minutes on pathological LaTeX. Here every math-verify call runs in one of a pool of child processes
(``child_pool.py``: several at once, a warm spare replacing a killed child); a call that outlives its budget gets
its child killed, and the item is graded ``timeout`` with score 0 and counted, so one bad answer never stalls a
training step. Answers certain to be pathological are refused before any parsing (``caps.py``), score 0, counted.

``grade(response, ground_truth)`` looks for the last ``\\boxed{...}`` of the response; an exact string match, or two
plain decimal numbers, are compared without math-verify (the common case for integer-answer math data).
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

from verl_ext.scoring.caps import refusal_reason
from verl_ext.scoring.child_pool import ChildPool

DEFAULT_TIMEOUT_S = float(os.environ.get("VERL_EXT_GRADE_TIMEOUT_S", "5"))
# Concurrent math-verify children per grader (plus one warm spare); each is a process of ~100 MB.
DEFAULT_WORKERS = int(os.environ.get("VERL_EXT_GRADE_WORKERS", "2"))

STATUS_CORRECT = "correct"
STATUS_WRONG = "wrong"
STATUS_NO_ANSWER = "no_answer"
STATUS_TIMEOUT = "timeout"
STATUS_ERROR = "error"
STATUS_REFUSED = "refused"  # certain to be pathological (``caps.py``): never parsed


@dataclasses.dataclass(frozen=True)
class Grade:
    """``status`` is one of correct / wrong / no_answer / refused / timeout / error; only ``correct`` scores 1."""

    status: str
    answer: Optional[str]
    detail: str = ""
    seconds: float = 0.0  # wall time this item took to grade

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
    """Grades answers; thread-safe and concurrent (``workers`` math-verify children plus a warm spare, see
    ``child_pool.py``); counts outcomes in ``stats``."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, workers: int = DEFAULT_WORKERS):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s} must be > 0.")
        self.timeout_s = timeout_s
        self.workers = workers
        self._pool = ChildPool(workers)
        self._outcomes: Counter = Counter()
        self._lock = threading.Lock()

    @property
    def stats(self) -> Counter:
        """Outcome counts (correct, wrong, no_answer, refused, timeout, error) and the pool's calls / starts."""
        with self._lock:
            return self._outcomes + self._pool.stats

    def close(self) -> None:
        self._pool.close()

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()

    def verify(self, gold: str, predicted: str) -> tuple[str, object]:
        """('ok', bool) | ('timeout', None) | ('error', message), in a child within ``timeout_s``."""
        return self._pool.call(gold, predicted, self.timeout_s)

    def grade(self, response: str, ground_truth: str) -> Grade:
        start = time.perf_counter()
        status, answer, detail = self._grade(response, ground_truth)
        with self._lock:
            self._outcomes[status] += 1
        return Grade(status, answer, detail, time.perf_counter() - start)

    def _grade(self, response: str, ground_truth: str) -> tuple[str, Optional[str], str]:
        if ground_truth is None or str(ground_truth).strip() == "":
            raise ValueError("ground_truth is empty: every row needs reward_model.ground_truth to be graded.")
        answer = last_boxed(response)
        if answer is None:
            return STATUS_NO_ANSWER, None, ""
        if _normalise(answer) == _normalise(str(ground_truth)):
            return STATUS_CORRECT, answer, ""
        predicted_value, truth_value = _plain_number(answer), _plain_number(str(ground_truth))
        if predicted_value is not None and truth_value is not None:
            # Two plain numbers: math-verify would only compare them numerically (rounding to 6 places).
            ok = abs(predicted_value - truth_value) <= 1e-6 * max(1.0, abs(truth_value))
            return (STATUS_CORRECT if ok else STATUS_WRONG), answer, ""
        refused = refusal_reason(answer)
        if refused:
            return STATUS_REFUSED, answer, refused
        kind, value = self.verify(f"${ground_truth}$", f"$\\boxed{{{answer}}}$")
        if kind == "timeout":
            return STATUS_TIMEOUT, answer, f"math-verify exceeded {self.timeout_s}s"
        if kind == "error":
            return STATUS_ERROR, answer, str(value)
        return (STATUS_CORRECT if value else STATUS_WRONG), answer, ""

    def grade_many(self, items: Sequence[tuple[str, str]]) -> list[Grade]:
        """``grade`` over (response, ground_truth) pairs, ``workers`` at a time; results in input order."""
        if len(items) <= 1 or self.workers == 1:
            return [self.grade(r, t) for r, t in items]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda item: self.grade(*item), items))


_default: Optional[MathGrader] = None
_default_lock = threading.Lock()


def default_grader() -> MathGrader:
    """The process-wide grader (one child process per worker process)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MathGrader()
        return _default
