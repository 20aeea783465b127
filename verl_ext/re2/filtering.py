"""DAPO-style dynamic sampling at prefix-group level, and the Re² per-step metrics.

A prefix group whose continuations all score the same has zero GRPO advantage and teaches nothing: it is dropped
("degenerate"), and generation continues (up to ``max_num_gen_batches`` batches) until enough groups survive.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from verl_ext.re2.redo import CORRECT, INCORRECT, REDO


def degenerate_groups(scores: Sequence[float], group_ids: Sequence[str], atol: float = 1e-9) -> set[str]:
    """Groups whose scores are all equal (within ``atol``). Singleton groups are degenerate."""
    by_group: dict[str, list[float]] = defaultdict(list)
    for score, group in zip(scores, group_ids, strict=True):
        by_group[group].append(float(score))
    return {g for g, values in by_group.items() if max(values) - min(values) <= atol}


def keep_mask(scores: Sequence[float], group_ids: Sequence[str]) -> np.ndarray:
    """(N,) bool: rows of non-degenerate groups."""
    dropped = degenerate_groups(scores, group_ids)
    return np.array([g not in dropped for g in group_ids], dtype=bool)


def re2_metrics(outcomes: Sequence[str], lengths: Sequence[int], rewards: Sequence[float],
                group_ids: Sequence[str], kept: Sequence[bool] | None = None) -> dict[str, float]:
    """Per-step metrics over all generated continuations (before filtering).

    re2/redo_rate, re2/acc_non_redo (accuracy among non-redo rows), re2/length/{correct,incorrect,redo},
    re2/degenerate_group_frac, re2/redo_reward_mean, re2/kept_frac. A figure over rows the step does not have (the
    redo reward or length with no redo row, accuracy with every row a redo) is left out, not reported as 0.
    """
    outcomes = list(outcomes)
    n = len(outcomes)
    if n == 0:
        return {}
    lengths = np.asarray(lengths, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64)
    is_redo = np.array([o == REDO for o in outcomes])
    answered = ~is_redo
    metrics = {"re2/redo_rate": float(is_redo.mean()), "re2/num_continuations": float(n)}
    if answered.any():
        metrics["re2/acc_non_redo"] = float(np.mean([o == CORRECT for o in outcomes if o != REDO]))
    if is_redo.any():
        metrics["re2/redo_reward_mean"] = float(rewards[is_redo].mean())
    for name in (CORRECT, INCORRECT, REDO):
        rows = np.array([o == name for o in outcomes])
        if rows.any():
            metrics[f"re2/length/{name}"] = float(lengths[rows].mean())
    groups = set(group_ids)
    metrics["re2/degenerate_group_frac"] = len(degenerate_groups(rewards, group_ids)) / len(groups)
    if kept is not None:
        metrics["re2/kept_frac"] = float(np.mean(kept))
    return metrics
