"""Static head masks for ``elastic_miniature.py``: the baseline a routed model has to beat (the same heads full for
every input, as DuoAttention and PruLong learn them) and the check that a fixed mask *can* lose on the task at all.

The best static mask with k full heads is searched on a calibration draw (never the held-out sequences), two ways:
forward selection (start all sparse, add the head that raises retrieval accuracy most) and backward elimination
(start all full, drop the head whose loss hurts least). Forward alone fails when heads only help together (a chain
of lookups: no single head helps, so its first choices are ties); backward alone can keep a redundant pair. Per k the
better of the two masks is kept (``search``). The heads retrieval *needs* are the fewest full heads whose mask
reaches the all-full accuracy on the calibration draw, within a tolerance.

A static mask has a whole number of full heads, a routed model's mean Omega_MSR need not. Drawing, per input and
independently of it, between the masks with floor and ceil of the heads reaches any mean Omega_MSR between them,
and its accuracy is their mix: the static curve is the upper concave hull of the whole-head points, and a routed
model is compared with the hull at its own mean Omega_MSR (``static_at``). A static mask keeps every head retrieval
needs when the needed count is at most the (fractional) full heads the mean Omega_MSR leaves (``keeps_all``).
"""

from __future__ import annotations

from typing import Callable

import torch

Accuracy = Callable[[torch.Tensor], float]


def mask_of(heads: list[int], shape: tuple[int, int]) -> torch.Tensor:
    """(L, H) long mask with the given flat head indices full."""
    mask = torch.zeros(shape[0] * shape[1], dtype=torch.long)
    mask[list(heads)] = 1
    return mask.view(shape)


def frequency_mask(rate_retrieval: torch.Tensor, n_full: int) -> torch.Tensor:
    """(L, H) mask with the ``n_full`` heads the routers send to full attention most often on retrieval inputs (ties
    by position): the first miniature's static baseline."""
    order = torch.argsort(rate_retrieval.flatten(), descending=True, stable=True).tolist()
    return mask_of(order[:n_full], tuple(rate_retrieval.shape))


def _forward(accuracy: Accuracy, shape: tuple[int, int], target: float) -> dict[int, tuple[list[int], float]]:
    """Forward selection until ``target`` is reached: {k: (heads, accuracy)}."""
    n, chosen = shape[0] * shape[1], []
    found = {0: ([], accuracy(mask_of([], shape)))}
    while len(chosen) < n and found[len(chosen)][1] < target:
        scores = {h: accuracy(mask_of(chosen + [h], shape)) for h in range(n) if h not in chosen}
        best = max(scores, key=lambda h: (scores[h], -h))  # ties: the earlier head
        chosen = chosen + [best]
        found[len(chosen)] = (chosen, scores[best])
    return found


def _backward(accuracy: Accuracy, shape: tuple[int, int]) -> dict[int, tuple[list[int], float]]:
    """Backward elimination down to no head: {k: (heads, accuracy)}."""
    kept = list(range(shape[0] * shape[1]))
    found = {len(kept): (kept, accuracy(mask_of(kept, shape)))}
    while kept:
        scores = {h: accuracy(mask_of([x for x in kept if x != h], shape)) for h in kept}
        drop = max(scores, key=lambda h: (scores[h], h))  # ties: drop the later head
        kept = [x for x in kept if x != drop]
        found[len(kept)] = (kept, scores[drop])
    return found


def search(accuracy: Accuracy, shape: tuple[int, int], tolerance: float) -> dict:
    """Best-known static masks for every k = 0..L*H.

    accuracy: mask (L, H) -> retrieval accuracy on the calibration draw.
    Returns {"heads": [flat indices of the k-head mask] per k, "acc": its calibration accuracy per k, "target": the
    all-full accuracy - ``tolerance``, "needed": the fewest heads whose mask reaches the target}.
    """
    n = shape[0] * shape[1]
    backward = _backward(accuracy, shape)
    target = backward[n][1] - tolerance
    forward = _forward(accuracy, shape, target)
    best = [max((found[k] for found in (forward, backward) if k in found), key=lambda x: x[1]) for k in range(n + 1)]
    accs = [a for _, a in best]
    return {"heads": [sorted(h) for h, _ in best], "acc": accs, "target": target,
            "needed": next(k for k, a in enumerate(accs) if a >= target)}


def static_full_heads(mean_msr: float, n_heads: int) -> float:
    """Full heads (fractional: a per-input draw between two masks) a static mask has at ``mean_msr``."""
    if not 0.0 <= mean_msr <= 1.0:
        raise ValueError(f"mean Omega_MSR must be in [0, 1], got {mean_msr}")
    return (1.0 - mean_msr) * n_heads


def upper_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper concave hull of (x, y) points, by x (Andrew's monotone chain)."""
    hull: list[tuple[float, float]] = []
    for p in sorted(set(points)):
        while len(hull) >= 2 and ((hull[-1][0] - hull[-2][0]) * (p[1] - hull[-2][1])
                                  - (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0])) >= 0:
            hull.pop()
        hull.append(p)
    return hull


def static_at(curve: list[dict], mean_msr: float, key: str) -> float:
    """The static curve's ``key`` (an accuracy) at ``mean_msr``: the upper concave hull of the whole-head points
    (a per-input draw between two static masks reaches every point on it), interpolated linearly."""
    hull = upper_hull([(p["msr"], p[key]) for p in curve])
    for (x0, y0), (x1, y1) in zip(hull, hull[1:]):
        if x0 <= mean_msr <= x1:
            return y0 if x1 == x0 else y0 + (mean_msr - x0) / (x1 - x0) * (y1 - y0)
    if len(hull) == 1 and hull[0][0] == mean_msr:
        return hull[0][1]
    raise ValueError(f"mean Omega_MSR {mean_msr} outside the static curve's range")
