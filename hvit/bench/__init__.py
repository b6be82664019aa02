"""Benchmarks: ``python -m hvit.bench {model,train,explain,app,browser,classroom,space}``.

Every benchmark compares against a reference measured in the same process (timm, the fused path, ...)
by alternating the two and reporting medians and their ratio: absolute times on a shared 2-core
machine are noise, ratios are not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def alternating_times(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Every timed run of each function, calling them in turn after ``warmup`` calls each, so a burst of
    load from other processes hits all of them alike. The order rotates every round (A B C, B C A,
    C A B, ...) so that no function always runs right after the same neighbour (a neighbour that
    leaves the caches or the allocator in a bad state would otherwise always penalise the same one)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def alternating_medians(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median of `alternating_times` for each function."""
    return {name: statistics.median(ts) for name, ts in alternating_times(fns, repeats, warmup).items()}
