"""Intervals for the figures the reports and plots show (no method-specific knowledge)."""

from __future__ import annotations

import math


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% (``z`` = 1.96) Wilson score interval of a proportion ``successes / n``; (nan, nan) for n = 0."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At p = 0 or 1 a bound equals p analytically; rounding must not put it on the wrong side of p (a negative bar).
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))
