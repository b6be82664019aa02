"""The Gradio demo in a real headless browser at 1366x768: readable plots, no error, screenshots.

Launches the demo on a free loopback port in this process and drives Debian's Chromium through
Playwright (the browser set-up is tests/test_browser.py's). After the demo's opening analysis and after
a click on the image, every Plotly figure is measured in the page itself with test_browser's
`figure_problems`: no two visible SVG text boxes overlap, none is cut off by its figure, every map panel
is at least 240 px wide. Screenshots land in ``tests/artifacts/`` (git-ignored): look at them.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, FIGURES_JS, MIN_PANEL_PX, figure_problems

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VIEWPORT = {"width": 1366, "height": 768}
CHARTS = ".js-plotly-plot"  # every Plotly figure Gradio draws
ERRORS = '[data-testid="toast-body"].error, [data-testid="toast-body"].warning'


def _load_app():
    spec = importlib.util.spec_from_file_location("gradio_app", ROOT / "app" / "gradio_app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gradio_app"] = module
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ga = _load_app()


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path_factory.mktemp("examples_cache")))
        demo = ga.build_demo(models=[ga.SHIPPED])
        port = _free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            demo.close()


@pytest.fixture(scope="module")
def page(demo_url: str) -> Iterator[object]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: run .ci/install-browser.sh (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.goto(demo_url)
        yield page
        context.close()
        browser.close()


def _wait_for_plots(page, count: int = 3, timeout_ms: int = 180_000) -> None:  # noqa: ANN001
    """Until ``count`` figures with heat maps are drawn and no request is pending."""
    page.wait_for_function(
        f"() => [...document.querySelectorAll('.js-plotly-plot')]"
        f".filter((gd) => (gd._fullData || []).some((d) => d.type === 'heatmap')).length >= {count}",
        timeout=timeout_ms,
    )
    page.wait_for_function("() => !document.querySelector('.progress-text, .eta-bar')", timeout=timeout_ms)
    page.wait_for_timeout(1500)  # Plotly's last relayout


def _check_figures(page, when: str) -> None:  # noqa: ANN001
    problems = figure_problems(page, when, charts=CHARTS)
    assert not problems, "\n".join(problems)
    errors = [e.inner_text()[:300] for e in page.query_selector_all(ERRORS)]
    assert not errors, f"{when}: {errors}"


def test_the_demo_opens_with_readable_plots_and_a_click_moves_the_query(page) -> None:  # noqa: ANN001
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    _wait_for_plots(page)  # the demo analyses its first example as it opens
    page.screenshot(path=str(ARTIFACTS / "gradio_1366x768.png"), full_page=True)
    _check_figures(page, "opening analysis")
    # The checks measured every map: the attribution, every stage and at least one head.
    widths = [p["w"] for fig in page.evaluate(FIGURES_JS, CHARTS) for p in fig["panels"]]
    assert len(widths) >= 1 + 4 + 1 and min(widths) >= MIN_PANEL_PX, widths

    shapes_before = page.evaluate(
        "() => [...document.querySelectorAll('.js-plotly-plot')].map((gd) => JSON.stringify("
        "gd.layout.shapes || []))"
    )
    image = page.locator("#model-view img").first  # the model's view, enlarged
    box = image.bounding_box()
    page.mouse.click(box["x"] + 0.15 * box["width"], box["y"] + 0.15 * box["height"])  # top-left area
    page.wait_for_function(
        "(before) => JSON.stringify([...document.querySelectorAll('.js-plotly-plot')].map((gd) => "
        "JSON.stringify(gd.layout.shapes || []))) !== JSON.stringify(before)",
        arg=shapes_before,
        timeout=120_000,
    )
    _wait_for_plots(page)
    page.screenshot(path=str(ARTIFACTS / "gradio_query_1366x768.png"), full_page=True)
    _check_figures(page, "after a click on the image")
    slider = page.get_by_label("Query point: % from the left").first
    assert float(slider.input_value()) < 30  # the click's position, not the centre any more

    page.get_by_label(ga.VIEW_LABELS["rollout"]).check()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot')].some((gd) => "
        "(gd.layout.title && gd.layout.title.text || '').startsWith('Attention rollout'))",
        timeout=120_000,
    )
    _wait_for_plots(page)
    page.screenshot(path=str(ARTIFACTS / "gradio_rollout_1366x768.png"), full_page=True)
    _check_figures(page, "rollout")


def test_a_photo_example_shows_the_domain_note_beside_the_answer(page) -> None:  # noqa: ANN001
    _wait_for_plots(page)
    photo = next(p for p in ga.example_images() if "photos" in p.parts)
    page.locator(f"button img[src*='{photo.name}']").first.click()  # its example
    note = page.get_by_text("so the answer means nothing here").first
    note.wait_for(timeout=180_000)
    _wait_for_plots(page)
    answer = page.locator("text=answered in").first.bounding_box()
    box = note.bounding_box()
    assert box["y"] - answer["y"] < 200  # right under the answer, not somewhere down the page
    page.screenshot(path=str(ARTIFACTS / "gradio_photo_1366x768.png"), full_page=True)
    _check_figures(page, "a photo example")
