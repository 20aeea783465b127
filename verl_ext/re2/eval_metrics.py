"""Re² evaluation: accuracy under the redo rule, test-time scaling by majority vote, and the Section-3 analyses.

Pure functions over per-sample records ``Sample(question, answer, correct, redo, length)``; the command-line front
end is ``python -m verl_ext.re2.eval``.

- avg@k under the redo rule (official ``cal_redo_v2``): per question, the mean correctness of its non-redo samples
  (all samples if every one is a redo), averaged over questions: the accuracy with unlimited fresh restarts.
- Test-time scaling (official ``cal_redo_mv``): at budget k, draw k samples per question without replacement
  (redo samples count against k), majority-vote the boxed answers of the non-redo ones (ties: shorter string, then
  lexicographic); with none, vote over every boxed answer; with no boxed answer at all, score the mean correctness.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter, defaultdict
from typing import Optional, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Sample:
    question: str
    answer: Optional[str]  # last \boxed{} content, None if absent
    correct: bool
    redo: bool
    length: int = 0


def by_question(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    grouped: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        grouped[s.question].append(s)
    return dict(grouped)


def question_accuracy_redo_rule(samples: Sequence[Sample]) -> float:
    answered = [s for s in samples if not s.redo]
    pool = answered if answered else list(samples)
    return float(np.mean([s.correct for s in pool]))


def avg_at_k(samples: Sequence[Sample]) -> dict[str, float]:
    """avg@k under the redo rule, plain accuracy (redo counted wrong), redo rate, rounds, 95% interval."""
    groups = by_question(samples)
    if not groups:
        raise ValueError("no samples to evaluate.")
    per_question = np.array([question_accuracy_redo_rule(g) for g in groups.values()])
    redo_rate = float(np.mean([s.redo for s in samples]))
    half_width = 1.96 * per_question.std(ddof=1) / math.sqrt(len(per_question)) if len(per_question) > 1 else 0.0
    return {
        "avg_redo_rule": float(per_question.mean()),
        "avg_redo_rule_ci95": float(half_width),
        "avg_plain": float(np.mean([np.mean([s.correct for s in g]) for g in groups.values()])),
        "redo_rate": redo_rate,
        "avg_rounds": 1.0 / (1.0 - redo_rate) if redo_rate < 1 else math.inf,
        "questions": len(groups),
        "samples": len(samples),
    }


def majority_vote(draw: Sequence[Sample]) -> float:
    """Correctness (0/1, or the mean score when nothing is boxed) of one budget-k draw."""
    answered = [s for s in draw if not s.redo and s.answer is not None]
    pool = answered or [s for s in draw if s.answer is not None]
    if not pool:
        return float(np.mean([s.correct for s in draw]))
    counts = Counter(s.answer for s in pool)
    best = max(counts.values())
    winner = sorted((a for a, c in counts.items() if c == best), key=lambda a: (len(a), a))[0]
    return float(next(s.correct for s in pool if s.answer == winner))


def majority_vote_per_question(samples: Sequence[Sample], budgets: Sequence[int], resamples: int = 500,
                               seed: int = 0) -> dict[int, np.ndarray]:
    """Per budget k (k <= samples per question): each question's mean majority-vote accuracy over ``resamples``
    draws of k of its samples, (Q,)."""
    groups = by_question(samples)
    rng = random.Random(seed)
    smallest = min(len(g) for g in groups.values())
    out = {}
    for k in budgets:
        if not 1 <= k <= smallest:
            raise ValueError(f"budget k={k} must be in [1, {smallest}] (the fewest samples any question has).")
        out[k] = np.array([np.mean([majority_vote(rng.sample(g, k)) for _ in range(resamples)])
                           for g in groups.values()])
    return out


def majority_vote_curve(samples: Sequence[Sample], budgets: Sequence[int], resamples: int = 500,
                        seed: int = 0) -> dict[int, float]:
    """Mean majority-vote accuracy per budget k over questions."""
    return {k: float(v.mean()) for k, v in majority_vote_per_question(samples, budgets, resamples, seed).items()}


def mean_ci95(values: Sequence[float]) -> float:
    """Half-width of the normal 95% interval of the mean over ``values`` (questions), 0 for a single value."""
    values = np.asarray(values, dtype=float)
    return float(1.96 * values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


def default_budgets(samples_per_question: int) -> list[int]:
    budgets, k = [], 1
    while k <= samples_per_question:
        budgets.append(k)
        k *= 2
    return budgets


def accuracy_by_bins(values: Sequence[float], correct: Sequence[bool], bins: int = 10) -> list[dict]:
    """Accuracy per equal-count bin of ``values`` (length vs accuracy; prefix fraction vs accuracy)."""
    if len(values) != len(correct):
        raise ValueError("values and correct must have one entry per sample.")
    order = np.argsort(values, kind="stable")
    chunks = [c for c in np.array_split(order, min(bins, len(order))) if len(c)]
    values, correct = np.asarray(values, dtype=float), np.asarray(correct, dtype=float)
    return [{"low": float(values[c].min()), "high": float(values[c].max()), "mean": float(values[c].mean()),
             "accuracy": float(correct[c].mean()), "n": int(len(c))} for c in chunks]


def accuracy_by_prefix_fraction(fractions: Sequence[float], correct: Sequence[bool],
                                grid: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)) -> list[dict]:
    """Continuation accuracy at each prefix fraction of the grid (each record goes to its nearest grid point)."""
    grid = np.asarray(grid, dtype=float)
    buckets: dict[float, list[bool]] = defaultdict(list)
    for f, c in zip(fractions, correct, strict=True):
        buckets[float(grid[np.abs(grid - f).argmin()])].append(bool(c))
    return [{"fraction": f, "accuracy": float(np.mean(v)), "n": len(v)} for f, v in sorted(buckets.items())]
