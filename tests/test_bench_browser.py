"""The browser benchmark: its table and summary line (fast), and a very short lesson end to end (slow)."""

from __future__ import annotations

import asyncio
import math

import pytest

from hvit.bench.browser import Step, app_server, format_table, percentile, run_lesson, summary_line


def test_percentile_is_nearest_rank():
    values = [0.5, 0.1, 0.3, 0.2, 0.4]
    assert percentile(values, 50) == 0.3
    assert percentile(values, 95) == 0.5  # ceil(0.95 * 5) = 5th smallest
    assert percentile(values, 20) == 0.1
    assert math.isnan(percentile([], 95))


def test_summary_line_separates_first_loads_from_clicks_and_counts_errors():
    steps = [
        Step("home", "first load", 1.5, 0.3),
        Step("attention", "first load", 2.25, 0.4, answered=1.1),
        Step("attention", "another head", 0.2, 0.4),
        Step("attention", "click on the image", 0.4, 0.4),
        Step("classroom", "Next → step 2", 0.1, 0.5),
        Step("classroom", "Next → step 3", math.nan, 0.5, "TimeoutError: did not settle"),
    ]
    assert summary_line(steps) == (
        "browser: first load max 2.25 s, interaction median 0.20 s, p95 0.40 s, errors 1"
    )
    table = format_table(steps).splitlines()
    assert table[0].split() == ["page", "action", "seconds", "answered", "load", "1m", "error"]
    assert len(table) == 1 + len(steps)
    assert table[2].split() == ["attention", "first", "load", "2.25", "1.10", "0.40"]
    assert table[-1].split()[:7] == ["classroom", "Next", "→", "step", "3", "-", "-"]
    assert table[-1].endswith("TimeoutError: did not settle")


@pytest.mark.slow
def test_a_short_lesson_runs_end_to_end_without_errors():
    with app_server() as url:
        steps = asyncio.run(run_lesson(url, quiet_s=0.3, short=True))
    assert [(s.page, s.action) for s in steps] == [
        ("home", "first load"),
        ("attention", "first load"),
        ("classroom", "first load"),
        ("attention", "click on the image"),
        ("classroom", "Next → step 2"),
    ]
    assert all(s.error is None for s in steps), [s.error for s in steps if s.error]
    assert all(s.seconds > 0 for s in steps)
    assert summary_line(steps).endswith("errors 0")


def test_classroom_summary_reports_the_largest_k_that_held_and_the_training_checks():
    from hvit.bench.classroom import Round, round_line
    from hvit.bench.classroom import summary_line as classroom_summary

    ok = Round(
        4,
        [
            Step("1:classroom", "first load", 9.0, 0.5, answered=3.0),
            Step("1:classroom", "Next → 2", 0.9, 0.5, answered=0.2),
        ],
    )
    ok.join_order, ok.finish_order, ok.handover_s = [1, 2, 3], [1, 2, 3], 1.5
    bigger = Round(8, [Step("1:classroom", "Next → 2", 0.4, 0.5, answered=0.3)])
    bigger.join_order, bigger.finish_order, bigger.handover_s = [1, 2, 3], [1, 3, 2], None
    bigger.training_errors.append("TimeoutError: no slot")
    assert ok.held and ok.in_order and not bigger.held and not bigger.in_order
    assert classroom_summary([ok, bigger]) == (
        "classroom: largest K held 4, clicks answered p50 0.20 s, p95 0.20 s, drawn p50 0.90 s, "
        "p95 0.90 s (at K=4), trainings in order no, closed tab stopped no"
    )
    assert classroom_summary([ok]).endswith("trainings in order yes, closed tab stopped yes")
    line = round_line(bigger)
    assert line.startswith("K=8   FAILED errors 1") and "finished [1, 3, 2] (queued [1, 2, 3])" in line


def test_a_round_does_not_hold_when_the_server_answers_late():
    from hvit.bench.classroom import Round, round_line

    late = Round(8, [Step("2:classroom", "Next → 3", 70.0, 9.0, answered=61.0)], answer_limit_s=60.0)
    unknown = Round(8, [Step("2:classroom", "Next → 3", 5.0, 9.0)], answer_limit_s=60.0)  # never answered
    drawn_late = Round(8, [Step("2:classroom", "Next → 3", 170.0, 9.0, answered=2.0)], answer_limit_s=60.0)
    assert (late.late, late.held) == (1, False)
    assert (unknown.late, unknown.held) == (1, False)
    assert (drawn_late.late, drawn_late.held) == (0, True)  # slow drawing on the shared cores only
    assert "late 1" in round_line(late)


def test_reading_times_are_reproducible_and_around_the_mean():
    from hvit.bench.classroom import Pace

    pace = Pace(arrive_s=2.0, think_s=4.0, seed=0)
    first, again, other = pace.reading_times(1, 50), pace.reading_times(1, 50), pace.reading_times(2, 50)
    assert first == again and first != other  # fixed per student, different between students
    assert all(2.0 <= t <= 6.0 for t in first)
    assert 3.0 < sum(first) / len(first) < 5.0


def test_the_trainings_finish_order_comes_from_the_servers_clock_on_each_page():
    from hvit.bench.classroom import finish_order

    texts = {
        1: "Training completed at 10:12:09, after 6 s: 1 epoch, validation accuracy 40%.",
        2: "Training completed at 10:12:03, after 5 s: 1 epoch.",
        3: "Training completed at 10:12:09, after 4 s: 1 epoch.",
    }
    assert finish_order(texts) == [2, 1, 3]  # same second: by number
    across_midnight = {1: "completed at 23:59:58", 2: "completed at 00:00:04"}
    assert finish_order(across_midnight) == [1, 2]
    with pytest.raises(ValueError, match="trainer 2's page does not say when"):
        finish_order({1: "completed at 10:00:00", 2: "Training completed."})
