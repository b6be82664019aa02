"""The benchmark harness: alternating runs whose order rotates, so no candidate always follows the same one."""

from __future__ import annotations

import pytest

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


def test_time_to_target_stops_at_the_first_epoch_that_reaches_it():
    # The training benchmark times the shipped command line until validation accuracy first reaches
    # the target. A target of 0 is reached after epoch 1, so a 3-epoch run must stop there; an
    # unreachable one runs every epoch and says so.
    import torch

    from hvit.bench.train import time_to_target
    from hvit.train.cli import build_parser

    args = build_parser().parse_args(
        ["--model", "hvit_nano_stem", "--img-size", "16", "--train-size", "48", "--val-size", "24",
         "--epochs", "3", "--batch-size", "16", "--no-progress"]
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reached = time_to_target(args, target=0.0, max_epochs=None)
        missed = time_to_target(args, target=1.01, max_epochs=2)
    finally:
        torch.set_num_threads(threads)
    assert reached["reached"] and reached["target_epoch"] == 1 and len(reached["curve"]) == 1
    assert reached["target_seconds"] > 0 and reached["curve"][0]["seconds"] == round(
        reached["target_seconds"], 2
    )
    assert not missed["reached"] and len(missed["curve"]) == 2 and "target_seconds" not in missed
    assert args.epochs == 3  # the caller's namespace is not modified


def test_space_summary_counts_percentiles_and_slow_cases_per_endpoint():
    # `python -m hvit.bench space`: rows per (endpoint, case), then the endpoint's "all" row; p95 by
    # nearest rank (a call that happened), over-the-limit calls counted and named in the summary line.
    from hvit.bench.space import Row, rotated, summarise, summary_line, table

    times = {
        ("/attention", "query"): [0.2, 0.4, 0.3],
        ("/predict", "saliency"): [0.5, 0.7, 0.6, 0.9],
        ("/predict", "occlusion"): [1.5, 1.2, 0.8, 2.0],
    }
    rows = summarise(times, limit_s=1.0)
    assert [(r.endpoint, r.case) for r in rows] == [
        ("/predict", "saliency"), ("/predict", "occlusion"), ("/predict", "all"),
        ("/attention", "query"), ("/attention", "all"),
    ]  # fmt: skip
    by = {(r.endpoint, r.case): r for r in rows}
    occlusion = by["/predict", "occlusion"]
    assert occlusion == Row("/predict", "occlusion", 4, pytest.approx(1.35), 2.0, 2.0, 3)
    assert by["/predict", "saliency"].median_s == pytest.approx(0.65) and by["/predict", "saliency"].over == 0
    everything = by["/predict", "all"]
    assert (everything.calls, everything.p95_s, everything.over) == (8, 2.0, 3)
    assert everything.median_s == pytest.approx(0.85)
    assert by["/attention", "all"].p95_s == 0.4  # nearest rank of 3 values: the largest
    line = summary_line(rows, limit_s=1.0)
    assert line == (
        "space: /predict median 0.85 s, p95 2.00 s; /attention median 0.30 s, p95 0.40 s; "
        "over 1 s: 3 of 11 calls (/predict occlusion)"
    )
    assert table(rows).count("\n") == 2 + len(rows) - 1 and "| /predict | **all** | 8 |" in table(rows)
    assert rotated(["a", "b", "c"], 4) == ["b", "c", "a"] and rotated([], 3) == []


@pytest.mark.slow
def test_space_benchmark_calls_every_endpoint_of_the_launched_demo(capsys):
    # One round end to end: the demo starts on a loopback port, every method and view is called through
    # gradio_client, and the server is stopped (no timing asserted: the machine may be busy).
    from hvit.bench.space import main

    assert main(["--repeats", "1", "--images", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith("| /")]
    assert len([r for r in rows if "**all**" in r]) == 3
    assert {r.split("|")[2].strip() for r in rows} >= {
        "occlusion",
        "grad_cam",
        "query",
        "rollout",
        "received",
    }
    assert all(r.split("|")[3].strip() == "1" for r in rows if "**all**" not in r)  # one timed call each
    assert out[-1].startswith("space: /predict median ") and " of 17 calls" in out[-1]
