"""Static head masks for ``elastic_miniature.py``: the baseline a routed model has to beat (the same heads full for
every input, as DuoAttention and PruLong learn them) and the check that a fixed mask *can* lose on the task at all.

A static mask with k full heads is chosen greedily on a calibration draw (never the held-out sequences): start with
every head sparse and add, one at a time, the head whose full attention raises retrieval accuracy the most (ties:
the earlier head). Greedy gives a nested order, so one pass yields the best-known static mask at every budget
k = 0..H: the static curve. The heads retrieval *needs* are the shortest prefix of that order that reaches dense
retrieval accuracy (within ``tolerance``) on the calibration draw. If that many heads fit in the static mask at the
routed model's mean Omega_MSR, a static mask keeps every head retrieval needs and ties with routing by
construction (``oracle_keeps_all``): the task cannot show the paper's claim.
"""

from __future__ import annotations

import math
from typing import Callable

import torch


def mask_of(order: list[int], k: int, shape: tuple[int, int]) -> torch.Tensor:
    """(L, H) mask with the first ``k`` heads of ``order`` (flat indices) full."""
    mask = torch.zeros(shape[0] * shape[1], dtype=torch.long)
    mask[order[:k]] = 1
    return mask.view(shape)


def frequency_mask(rate_retrieval: torch.Tensor, n_full: int) -> torch.Tensor:
    """(L, H) mask with the ``n_full`` heads the routers send to full attention most often on retrieval inputs (ties
    by position): the first miniature's static baseline."""
    order = torch.argsort(rate_retrieval.flatten(), descending=True, stable=True).tolist()
    return mask_of(order, n_full, tuple(rate_retrieval.shape))


def greedy_order(accuracy: Callable[[torch.Tensor], float], shape: tuple[int, int], target: float) -> dict:
    """Greedy forward selection of full heads.

    accuracy: mask (L, H) -> retrieval accuracy on the calibration draw.
    Returns {"order": flat head indices, best first; "acc": accuracy with the first k heads full, k = 0..H (the heads
    after the target is reached are appended by their last single-head gain and their accuracies measured);
    "needed": the smallest k whose accuracy is >= target (H + 1 if none)}.
    """
    n = shape[0] * shape[1]
    order: list[int] = []
    accs = [accuracy(mask_of(order, 0, shape))]
    gains: dict[int, float] = {}
    while len(order) < n and accs[-1] < target:
        scores = {h: accuracy(mask_of(order + [h], len(order) + 1, shape)) for h in range(n) if h not in order}
        best = max(scores, key=lambda h: (scores[h], -h))
        gains = scores
        order.append(best)
        accs.append(scores[best])
    rest = sorted((h for h in range(n) if h not in order), key=lambda h: (-gains.get(h, 0.0), h))
    for h in rest:
        order.append(h)
        accs.append(accuracy(mask_of(order, len(order), shape)))
    needed = next((k for k, a in enumerate(accs) if a >= target), n + 1)
    return {"order": order, "acc": accs, "needed": needed}


def static_full_heads(mean_msr: float, n_heads: int) -> int:
    """Full heads of a static mask at ``mean_msr``: the nearest whole number (what the routed model's mean sparsity
    buys a fixed mask)."""
    if not 0.0 <= mean_msr <= 1.0:
        raise ValueError(f"mean Omega_MSR must be in [0, 1], got {mean_msr}")
    return int(math.floor((1.0 - mean_msr) * n_heads + 0.5))


def static_at(curve: list[dict], mean_msr: float) -> dict:
    """The static-curve point a routed model at ``mean_msr`` is compared with. The curve is measured at whole head
    counts; between two of them the static point is interpolated linearly in Omega_MSR."""
    points = sorted(curve, key=lambda p: p["msr"])
    for lo, hi in zip(points, points[1:]):
        if lo["msr"] <= mean_msr <= hi["msr"]:
            w = 0.0 if hi["msr"] == lo["msr"] else (mean_msr - lo["msr"]) / (hi["msr"] - lo["msr"])
            return {key: lo[key] + w * (hi[key] - lo[key]) for key in lo if isinstance(lo[key], float)}
    raise ValueError(f"mean Omega_MSR {mean_msr} outside the static curve's range")
