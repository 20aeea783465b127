"""Re² advantages: GRPO normalisation within each prefix group, plus the official redo-advantage rebalancing.

Registered with verl as ``algorithm.adv_estimator=re2`` (paper) and ``re2_rebalanced`` (plus the official code's
rebalancing below). verl passes a registered estimator only
``token_level_rewards``, ``response_mask``, ``config`` and ``index`` (each row's ``uid``), so Re² rows carry their
prefix group and their class in the uid: ``<question>/p<k>`` for an answer, ``<question>/p<k>#redo`` for a redo
(``row_uid`` / ``parse_row_uid``). Plain uids (no ``#redo``) work too: then this is exactly verl's GRPO.

Rebalancing (official code's ``scale_advantages``, not in the paper, off by default): over all redo rows of the
batch, let P = sum of positive advantages and N = sum of |negative advantages|, M = sqrt(P * N); scale positives so
they sum to M * sqrt(r) and negatives to M / sqrt(r). With the released setting r = 1 this equalises the positive and
negative advantage mass on redo rows, so batch imbalance neither encourages nor discourages redo on its own.
Skipped when there is no redo row or one sign is missing.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Optional, Sequence

import numpy as np
import torch

REDO_SUFFIX = "#redo"


def row_uid(group_uid: str, is_redo: bool) -> str:
    return group_uid + (REDO_SUFFIX if is_redo else "")


def parse_row_uid(uid: str) -> tuple[str, bool]:
    """(prefix-group uid, is_redo)."""
    uid = str(uid)
    if uid.endswith(REDO_SUFFIX):
        return uid[: -len(REDO_SUFFIX)], True
    return uid, False


def group_normalised_scores(scores: torch.Tensor, groups: Sequence, epsilon: float = 1e-6,
                            norm_by_std: bool = True) -> torch.Tensor:
    """(score - group mean) / (group std + eps) per row; singleton groups use mean 0, std 1 (verl's GRPO).

    scores (B,) float; groups: B hashable group ids. std is the unbiased sample std, as torch.std.
    """
    members: dict = defaultdict(list)
    for row, group in enumerate(groups):
        members[group].append(row)
    out = torch.empty_like(scores)
    for rows in members.values():
        values = scores[rows]
        if len(rows) == 1:
            mean, std = torch.tensor(0.0, dtype=scores.dtype), torch.tensor(1.0, dtype=scores.dtype)
        else:
            mean, std = values.mean(), values.std()
        out[rows] = (values - mean) / (std + epsilon) if norm_by_std else values - mean
    return out


def rebalance_redo_advantages(advantages: torch.Tensor, redo: torch.Tensor, ratio: float = 1.0) -> torch.Tensor:
    """Rescale redo rows' positive / negative advantage mass to M*sqrt(ratio) / M/sqrt(ratio), M = sqrt(P*N).

    advantages (B,) per-row scalar; redo (B,) bool. Non-redo rows are unchanged.
    """
    if ratio <= 0:
        raise ValueError(f"rebalance ratio={ratio} must be > 0 (released setting: 1).")
    out = advantages.clone()
    pos = redo & (advantages > 0)
    neg = redo & (advantages < 0)
    p, n = advantages[pos].sum(), -advantages[neg].sum()
    if not bool(pos.any()) or not bool(neg.any()) or p <= 0 or n <= 0:
        return out
    m = torch.sqrt(p * n)
    out[pos] = advantages[pos] * (m * ratio**0.5 / p)
    out[neg] = advantages[neg] * (m / ratio**0.5 / n)
    return out


def compute_re2_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
    rebalance_redo: bool = False,
    rebalance_ratio: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outcome advantages per prefix group.

    token_level_rewards, response_mask: (B, L); index: (B,) row uids (see ``row_uid``).
    Returns (advantages, returns), both (B, L), zero outside the response mask.
    """
    if token_level_rewards.shape != response_mask.shape:
        raise ValueError(f"token_level_rewards {tuple(token_level_rewards.shape)} and response_mask "
                         f"{tuple(response_mask.shape)} must have the same (B, L) shape.")
    if len(index) != token_level_rewards.shape[0]:
        raise ValueError(f"index has {len(index)} uids for {token_level_rewards.shape[0]} rows.")
    parsed = [parse_row_uid(uid) for uid in index]
    groups = [g for g, _ in parsed]
    redo = torch.tensor([r for _, r in parsed], dtype=torch.bool)
    with torch.no_grad():
        scores = token_level_rewards.sum(dim=-1)
        advantages = group_normalised_scores(scores, groups, epsilon, norm_adv_by_std_in_grpo)
        if rebalance_redo:
            advantages = rebalance_redo_advantages(advantages, redo, rebalance_ratio)
        advantages = advantages.unsqueeze(-1) * response_mask
    return advantages, advantages


def _norm_by_std(config) -> bool:
    if config is None:
        return True
    getter = getattr(config, "get", None)
    value = getter("norm_adv_by_std_in_grpo", True) if getter is not None else getattr(config, "norm_adv_by_std_in_grpo", True)
    return True if value is None else bool(value)


def re2_advantage_estimator(token_level_rewards, response_mask, config=None, index: Optional[np.ndarray] = None,
                            **kwargs):
    """verl entry point for ``algorithm.adv_estimator=re2`` (paper: GRPO per prefix group, no rebalancing)."""
    if index is None:
        raise ValueError("adv_estimator=re2 needs each row's uid (prefix group); the batch has no 'uid' field.")
    return compute_re2_advantage(token_level_rewards, response_mask, index, norm_adv_by_std_in_grpo=_norm_by_std(config))


def re2_rebalanced_advantage_estimator(token_level_rewards, response_mask, config=None,
                                       index: Optional[np.ndarray] = None, **kwargs):
    """``algorithm.adv_estimator=re2_rebalanced``: ``re2`` plus the official code's redo rebalancing (r = 1)."""
    if index is None:
        raise ValueError("adv_estimator=re2_rebalanced needs each row's uid; the batch has no 'uid' field.")
    return compute_re2_advantage(token_level_rewards, response_mask, index, norm_adv_by_std_in_grpo=_norm_by_std(config),
                                 rebalance_redo=True, rebalance_ratio=1.0)
