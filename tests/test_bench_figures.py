"""The figure benchmark: its table (fast), and the apps' figures drawn in Chromium (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvit.bench.figures import format_rows, measure, plotly_js


def test_the_table_has_one_row_per_figure_and_a_summary_line():
    rows = [
        {"figure": "attention: query", "json_kb": 69.25, "draw_ms": 132.1, "draw_ms_min": 115.0},
        {"figure": "rollout", "json_kb": 229.6, "draw_ms": 149.6, "draw_ms_min": 131.3},
    ]
    lines = format_rows(rows).splitlines()
    assert lines[0].split() == ["figure", "JSON", "KB", "draw", "ms", "(median)", "min"]
    assert lines[1].split() == ["attention:", "query", "69.2", "132.1", "115.0"]
    assert lines[-1] == "figures: 2 figures, 299 KB in all, draw median sum 282 ms"


def test_the_benchmark_draws_with_the_plotly_js_of_the_python_package():
    import plotly

    path = plotly_js()
    assert path.name == "plotly.min.js" and path.parent.parent == Path(plotly.__file__).parent


@pytest.mark.slow
def test_figures_are_measured_in_the_browser():
    import numpy as np

    from hvit.explain import figures
    from hvit.explain.geometry import TokenMap

    image = np.zeros((16, 16, 3))
    figs = {
        "pixels": figures.overlay_figure(image, np.arange(256.0).reshape(16, 16)),
        "tokens": figures.overlay_figure(image, TokenMap(np.arange(16.0).reshape(4, 4), 4, (16, 16))),
    }
    rows = measure(figs, runs=2, width=400)
    assert [r["figure"] for r in rows] == ["pixels", "tokens"]
    assert all(r["draw_ms"] >= r["draw_ms_min"] > 0 for r in rows)
    assert rows[1]["json_kb"] < rows[0]["json_kb"]  # 16 cells instead of 256
    assert rows[0]["json_kb"] == pytest.approx(len(figs["pixels"].to_json()) / 1000)
