"""Shared by the benchmarks: the median wall time of a callable over repeats, after one warm-up call."""

import statistics
import time


def median_seconds(fn, repeats: int = 3, warmup: bool = True) -> float:
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
