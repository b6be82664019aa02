"""The classroom app in a real headless browser: every page renders without an error, its figures are
readable (no overlapping or clipped text, map panels at least `MIN_PANEL_PX` wide), with screenshots.

Starts ``streamlit run app/main.py`` on a free loopback port and drives Debian's Chromium through
Playwright (``executable_path="/usr/bin/chromium"``; Playwright's own browser downloads are not used).
Screenshots of every page at 1366x768 and 1440x900 land in ``tests/artifacts/`` (git-ignored): look
at them. The app must work with no network at all, so every request a page makes (and every icon, image,
script and style sheet its document links to) must stay on this machine. CI installs Chromium with ``.ci/install-browser.sh``; when the browser is missing this test
fails, it never skips.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hvit.bench.browser import CHROMIUM, CHROMIUM_ARGS, app_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
PAGES = {  # name -> path; the classroom link carries its step in the URL, as a teacher's link would
    "home": "/",
    "architecture": "/architecture",
    "training": "/training",
    "attention": "/attention",
    "classroom": "/classroom?step=2",
    "classroom_pyramid": "/classroom?step=4",  # the pyramid diagram and four stage panels
}
VIEWPORTS = [(1366, 768), (1440, 900)]
PROBLEMS = '[data-testid="stException"], [data-testid="stAlertContentError"]'
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# Everything the document links to, the page icon included (a headless browser may never fetch it).
LINKED_URLS_JS = """() => Array.from(
    document.querySelectorAll('link[href], script[src], img[src], iframe[src], source[src]'),
    e => e.href || e.src
)"""
STREAMLIT_CHARTS = '[data-testid="stPlotlyChart"]'
MIN_PANEL_PX = 240  # a map panel narrower than this is unreadable from the back of a classroom
# Every visible Plotly figure of the page: its SVG text boxes (each must lie inside the figure and
# overlap no other) and its map panels (heat maps and images, each drawn as an SVG <image>).
FIGURES_JS = """(charts) => {
    const visible = (el) => {
        for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
            const st = getComputedStyle(e);
            if (st.display === 'none' || st.visibility === 'hidden' || parseFloat(st.opacity) === 0) return false;
        }
        return true;
    };
    const box = (r) => ({x: r.x, y: r.y, w: r.width, h: r.height});
    return [...document.querySelectorAll(charts)].map((chart, index) => {
        const plot = chart.querySelector('.js-plotly-plot');
        const frame = plot ? plot.getBoundingClientRect() : chart.getBoundingClientRect();
        const texts = [...chart.querySelectorAll('svg text')]
            .filter((t) => t.textContent.trim() && visible(t))
            .map((t) => ({text: t.textContent.trim(), ...box(t.getBoundingClientRect())}))
            .filter((t) => t.w > 0 && t.h > 0);
        const panels = [...chart.querySelectorAll('svg image')]
            .filter(visible)
            .map((i) => box(i.getBoundingClientRect()))
            .filter((b) => b.w > 0 && b.h > 0);
        const title = chart.querySelector('.gtitle');
        return {index, frame: box(frame), texts, panels, title: title ? title.textContent : ''};
    }).filter((f) => f.frame.w > 0 && f.frame.h > 0);
}"""
# A snapshot of the page's state: settled when the script has drawn (a title, no loading skeletons, no
# "running" indicator) and the number of elements has stopped changing.
STATE_JS = """() => {
    const main = document.querySelector('[data-testid="stMain"]');
    return {
        ready: !!main && !!main.querySelector('h1')
            && !document.querySelector('[data-testid="stStatusWidget"]')
            && !document.querySelector('[data-testid="stSpinner"]')
            && document.querySelectorAll('[data-testid="stSkeleton"]').length === 0,
        elements: document.querySelectorAll('[data-testid]').length,
    };
}"""


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        with app_server(log=ARTIFACTS / "streamlit.log") as url:
            yield url
    except RuntimeError as err:  # it did not start: the message names the log
        pytest.fail(str(err))


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: run .ci/install-browser.sh (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _settle(page, timeout_s: float = 180.0) -> None:  # noqa: ANN001 - a Playwright page
    """Wait until the page's script has run and every element has drawn (stable for two seconds)."""
    deadline, stable, last = time.monotonic() + timeout_s, 0, None
    while stable < 4:
        if time.monotonic() > deadline:
            raise AssertionError(f"the page did not settle within {timeout_s:.0f} s")
        state = page.evaluate(STATE_JS)
        stable = stable + 1 if state["ready"] and state["elements"] == last else 0
        last = state["elements"]
        page.wait_for_timeout(500)


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname in LOCAL_HOSTS


def _record_requests(page) -> tuple[list[str], list[str]]:  # noqa: ANN001
    """Lists that fill with every URL the page requests and every request that fails."""
    requested: list[str] = []
    failed: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.on("requestfailed", lambda r: failed.append(f"{r.url} ({r.failure})"))
    return requested, failed


def _problems(page) -> list[str]:  # noqa: ANN001
    return [e.inner_text()[:300] for e in page.query_selector_all(PROBLEMS)]


def _overlap(a: dict, b: dict, tolerance: float = 1.0) -> bool:
    """Whether two boxes share more than a sliver (``tolerance`` pixels) in both directions."""
    dx = min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"])
    dy = min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"])
    return dx > tolerance and dy > tolerance


def figure_problems(page, where: str, charts: str = STREAMLIT_CHARTS) -> list[str]:  # noqa: ANN001
    """Overlapping or clipped text and too-narrow map panels in every visible Plotly figure.

    ``charts`` selects the figures' containers (Streamlit's by default; the Gradio demo's test passes
    its own).
    """
    found = []
    for fig in page.evaluate(FIGURES_JS, charts):
        name = f"{where}, figure {fig['index'] + 1} ({fig['title'] or 'untitled'})"
        frame, texts = fig["frame"], fig["texts"]
        for t in texts:
            inside = (
                t["x"] >= frame["x"] - 1
                and t["y"] >= frame["y"] - 1
                and t["x"] + t["w"] <= frame["x"] + frame["w"] + 1
                and t["y"] + t["h"] <= frame["y"] + frame["h"] + 1
            )
            if not inside:
                found.append(f"{name}: text {t['text']!r} is clipped by the figure")
        for i, a in enumerate(texts):
            for b in texts[i + 1 :]:
                if _overlap(a, b):
                    found.append(f"{name}: texts {a['text']!r} and {b['text']!r} overlap")
        for p in fig["panels"]:
            if p["w"] < MIN_PANEL_PX - 0.5:
                found.append(f"{name}: a map panel is {p['w']:.0f} px wide (at least {MIN_PANEL_PX})")
    return found


def _screenshot(page, name: str, full: bool = True) -> None:  # noqa: ANN001
    w, h = page.viewport_size["width"], page.viewport_size["height"]
    page.screenshot(path=str(ARTIFACTS / f"{name}_{w}x{h}.png"))
    if full:  # the whole scrolling page, for review
        height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
        page.set_viewport_size({"width": w, "height": max(h, int(height))})
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / f"{name}_{w}x{h}_full.png"))
        page.set_viewport_size({"width": w, "height": h})


@pytest.mark.parametrize("name", list(PAGES))
def test_page_renders_without_errors(server: str, browser, name: str) -> None:  # noqa: ANN001
    for width, height in VIEWPORTS:
        context = browser.new_context(viewport={"width": width, "height": height})
        try:
            page = context.new_page()
            requested, failed = _record_requests(page)
            page.goto(server + PAGES[name])
            _settle(page)
            assert not _problems(page), f"{name} at {width}x{height}: {_problems(page)}"
            assert page.query_selector('[data-testid="stMain"] h1') is not None
            assert not figure_problems(page, f"{name} at {width}x{height}")
            _screenshot(page, name)
            linked = page.evaluate(LINKED_URLS_JS)
            assert requested and linked  # the recording works: at least the page itself and its scripts
            outside = sorted({u for u in requested + linked if not _is_local(u)})
            assert outside == [], f"{name} reaches outside this machine (it must work offline): {outside}"
            assert failed == [], f"{name}: requests failed: {failed}"
        finally:
            context.close()


def test_training_starts_streams_and_stops(server: str, browser) -> None:  # noqa: ANN001
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    try:
        page = context.new_page()
        page.goto(server + "/training")
        _settle(page)
        page.get_by_role("button", name="Start").click()
        page.get_by_text("images/s").first.wait_for(timeout=180_000)  # the live progress bar
        page.wait_for_timeout(2500)
        assert not _problems(page)
        assert not figure_problems(page, "training, live")  # the snapshots: large enough to read
        page.screenshot(path=str(ARTIFACTS / "training_live_1366x768.png"))
        page.get_by_role("button", name="Stop").click()
        page.get_by_text("Training was stopped").wait_for(timeout=120_000)
        _settle(page)
        assert not _problems(page)
        _screenshot(page, "training_stopped")
    finally:
        context.close()


def test_classroom_next_keeps_the_step_in_the_url(server: str, browser) -> None:  # noqa: ANN001
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        page = context.new_page()
        page.goto(server + "/classroom?step=5")
        _settle(page)
        assert page.get_by_text("5 · How the class is decided").count()
        page.get_by_role("button", name="Next").click()
        page.get_by_text("6 · Reading an attribution").wait_for(timeout=120_000)
        _settle(page)
        assert "step=6" in page.url
        assert not _problems(page)
        assert not figure_problems(page, "classroom step 6")  # the trained and random maps
        _screenshot(page, "classroom_step6")
    finally:
        context.close()


def test_a_click_on_the_image_moves_the_query(server: str, browser) -> None:  # noqa: ANN001
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    try:
        page = context.new_page()
        page.goto(server + "/attention")
        _settle(page)

        def query_caption() -> str:
            texts = [c.inner_text() for c in page.query_selector_all('[data-testid="stCaptionContainer"]')]
            return next(t for t in texts if t.startswith("Query token"))

        before = query_caption()
        plot_area = page.query_selector_all('[data-testid="stPlotlyChart"]')[0].query_selector(".nsewdrag")
        box = plot_area.bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.1)  # the top-left token
        page.wait_for_timeout(1000)
        _settle(page)
        after = query_caption()
        row, col, side = (
            int(v) for v in re.match(r"Query token \((\d+), (\d+)\) of the (\d+)x", after).groups()
        )
        assert after != before and row < side // 4 and col < side // 4, after  # the top-left corner
        assert not _problems(page)
    finally:
        context.close()
