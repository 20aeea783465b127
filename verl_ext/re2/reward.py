"""Re²'s three-way reward (paper Eq. 1) and the DAPO overlong penalty.

For continuation j of prefix group i of a question with outcome C_ij:

    r_ij = 1                                               C_ij = correct
    r_ij = 0                                               C_ij = incorrect (no parsable answer included)
    r_ij = P(c) * (1 - P(r)^R) / (1 - P(r))                C_ij = redo

with P(c), P(r) the correct / redo frequencies over the *out-of-group* continuations: every continuation of the
same question whose prefix group is not i (each continuation counted once; the official code's loop bug is not
reproduced). The redo reward is the chance that up to R fresh attempts yield a first non-redo attempt that is
correct. When no out-of-group continuation exists or all of them are redo, the redo reward is -1 (official code),
which keeps "always redo" from paying.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Sequence

import numpy as np

from verl_ext.re2.redo import CORRECT, INCORRECT, OUTCOMES, REDO

DEGENERATE_REDO_REWARD = -1.0


def redo_reward(p_correct: float, p_redo: float, max_rounds: int) -> float:
    """P(c) * sum_{k<R} P(r)^k = P(c) * (1 - P(r)^R) / (1 - P(r)); -1 when P(r) == 1.

    ``max_rounds`` R >= 1. Tends to P(c) / (1 - P(r)) as R grows; equals P(c) at R = 1.
    """
    if max_rounds < 1:
        raise ValueError(f"max_rounds R={max_rounds} must be >= 1 (paper: 5).")
    if not (0 <= p_correct <= 1 and 0 <= p_redo <= 1 and p_correct + p_redo <= 1 + 1e-9):
        raise ValueError(f"P(correct)={p_correct}, P(redo)={p_redo} are not frequencies of one distribution.")
    if p_redo >= 1.0:
        return DEGENERATE_REDO_REWARD
    return p_correct * (1.0 - p_redo**max_rounds) / (1.0 - p_redo)


def three_way_rewards(
    outcomes: Sequence[str], question_ids: Sequence[str], group_ids: Sequence[str], max_rounds: int = 5
) -> np.ndarray:
    """Eq. 1 per row. outcomes, question_ids, group_ids: one entry per continuation (any order). Returns (N,) float."""
    if not len(outcomes) == len(question_ids) == len(group_ids):
        raise ValueError(f"outcomes ({len(outcomes)}), question_ids ({len(question_ids)}) and group_ids "
                         f"({len(group_ids)}) must have one entry per continuation.")
    bad = sorted({o for o in outcomes if o not in OUTCOMES})
    if bad:
        raise ValueError(f"unknown outcome(s) {bad}; expected one of {OUTCOMES}.")
    per_question: dict[str, Counter] = defaultdict(Counter)
    per_group: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for outcome, q, g in zip(outcomes, question_ids, group_ids):
        per_question[q][outcome] += 1
        per_group[(q, g)][outcome] += 1
    rewards = np.zeros(len(outcomes), dtype=np.float64)
    cache: dict[tuple[str, str], float] = {}
    for row, (outcome, q, g) in enumerate(zip(outcomes, question_ids, group_ids)):
        if outcome == CORRECT:
            rewards[row] = 1.0
        elif outcome == INCORRECT:
            rewards[row] = 0.0
        else:
            key = (q, g)
            if key not in cache:
                outside = per_question[q] - per_group[key]
                total = sum(outside.values())
                if total == 0:
                    cache[key] = DEGENERATE_REDO_REWARD
                else:
                    cache[key] = redo_reward(outside[CORRECT] / total, outside[REDO] / total, max_rounds)
            rewards[row] = cache[key]
    return rewards


def overlong_penalty(response_lengths: Sequence[int], max_response_length: int, buffer_length: int,
                     penalty_factor: float = 1.0, scale: float = 0.5) -> np.ndarray:
    """DAPO soft overlong punishment, times ``scale`` (official Re² code: 0.5; DAPO: 1.0).

    penalty = scale * min(0, -(L - (max - buffer)) / buffer * factor): 0 up to max - buffer tokens, falling
    linearly to -scale * factor at max tokens. Lengths are continuation lengths (prefix excluded).
    """
    if not 0 < buffer_length <= max_response_length:
        raise ValueError(f"overlong buffer length {buffer_length} must be in (0, max_response_length="
                         f"{max_response_length}].")
    lengths = np.asarray(response_lengths, dtype=np.float64)
    expected = max_response_length - buffer_length
    return scale * np.minimum(0.0, -(lengths - expected) / buffer_length * penalty_factor)
