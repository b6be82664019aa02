"""The benchmark harness: alternating runs whose order rotates, so no candidate always follows the same one."""

from __future__ import annotations

from hvit.bench import alternating_medians, alternating_times


def test_alternating_times_rotates_the_order_and_times_every_run():
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = alternating_times(fns, repeats=4, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # one warm-up call each
    assert calls[3:] == list("abcbcacababc")
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t >= 0 for ts in times.values() for t in ts)


def test_alternating_medians_returns_one_median_per_candidate():
    medians = alternating_medians({"x": lambda: None, "y": lambda: sum(range(1000))}, repeats=5)
    assert set(medians) == {"x", "y"} and all(m >= 0 for m in medians.values())
