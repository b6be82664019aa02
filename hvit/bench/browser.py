"""Latency of the classroom app where people feel it: in a real browser, from click to settled page.

    python -m hvit.bench browser [--quiet-s 0.4] [--short]

Starts ``streamlit run app/main.py`` on a free loopback port and drives Debian's Chromium (headless,
through Playwright with ``executable_path``) through a scripted lesson:

- the server's start: from ``streamlit run`` to its health check answering (the app imports torch and
  hvit and loads the model before it answers anyone);
- every page's first load, each in a new browser session (the first ones also wait for what the app
  imports in the background: torchvision, Captum);
- the attention page: another sample, a click on the image, another stage, another head, one
  attribution (another class explained);
- every step of the classroom walkthrough (Next, five times);
- the architecture explorer: another preset, then one parameter (the image size, one step up);
- moving between pages in the sidebar of the home page's tab (as a student does after opening the app
  once): to the attention page, the walkthrough and the explorer.

Each action is timed from the click to the page's last change once it has settled: the server has
answered it (a script run seen in the app's script state, or messages on the page's WebSocket: a busy
page may apply a whole run in one render, and its script state then never leaves "notRunning"), the
script state is "notRunning", no running indicator, no stale element left, no loading skeleton, and
neither the page nor the server has changed anything for ``--quiet-s`` seconds (the figures drawn). A
MutationObserver in the page records when the page last changed, so the quiet wait itself is not
counted. It prints one row per action, with when the server's reply was complete (its last message read
by the page) and the 1-minute load average when it ran (the machine may be shared: read the figures
with it), and last one line: ``browser: first load max X s, interaction median Y s, p95 Z s, errors N``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("HVIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--metrics-recording-only",
]
VIEWPORT = {"width": 1366, "height": 768}
PAGES = {"home": "/", "architecture": "/architecture", "training": "/training"}
PAGES |= {"attention": "/attention", "classroom": "/classroom?step=1"}
PROBLEMS = '[data-testid="stException"], [data-testid="stAlertContentError"]'

# Installed before any page script. It counts the script runs the page has seen (the app root's
# ``data-test-script-state`` leaving "notRunning", or seen leaving a running state in a batch of
# records: a rerun was requested or runs, fragments included;
# Streamlit's running indicator is hidden by ``toolbarMode = "minimal"``) and remembers when the app's
# content (the main area or the sidebar) last changed (performance.now(), ms since the navigation).
OBSERVER_JS = """(() => {
    // loads: how often this tab has (re)loaded the app (a reload starts the counts above from 0 again).
    const loads = Number(sessionStorage.getItem('__hvit_loads') || 0) + 1;
    try { sessionStorage.setItem('__hvit_loads', String(loads)); } catch (e) {}
    window.__hvit = {runs: 0, ended: 0, running: false, last: performance.now(), loads: loads, what: '',
        replies: 0, replied: 0};
    // Every message the server sends (a script run's start, its elements, its end) is counted as it
    // reaches the page. On a busy page React may apply a whole run's messages in one render, and the
    // script state attribute then never leaves "notRunning": the messages still show the server answered.
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
        constructor(...args) {
            super(...args);
            this.addEventListener('message', () => {
                window.__hvit.replies += 1;
                window.__hvit.replied = performance.now();
            });
        }
    };
    const idle = (s) => !s || s === 'notRunning' || s === 'initial';
    new MutationObserver((records) => {
        const app = document.querySelector('[data-testid="stApp"]');
        const state = app ? app.getAttribute('data-test-script-state') : 'initial';
        const running = !idle(state);
        if (running && !window.__hvit.running) window.__hvit.runs += 1;
        window.__hvit.running = running;
        // A short run can start and end within one batch of records (a busy page): the attribute is
        // then idle again when this callback reads it. Its old values still show it ran.
        for (const r of records) {
            if (r.attributeName === 'data-test-script-state' && !idle(r.oldValue)) window.__hvit.ended += 1;
        }
        window.__hvit.runs = Math.max(window.__hvit.runs, window.__hvit.ended);
        for (const r of records) {
            const el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
            if (el && el.closest('[data-testid="stMain"], [data-testid="stSidebar"]')) {
                window.__hvit.last = performance.now();
                // What changed last, for a page that never settles: the nearest Streamlit element, the
                // kind of change and, for an attribute, its name.
                const owner = el.closest('[data-testid]');
                const cls = el.getAttribute('class');
                window.__hvit.what = (owner ? owner.getAttribute('data-testid') : el.tagName) + ' > '
                    + el.tagName.toLowerCase() + (cls ? '.' + String(cls).split(' ')[0] : '')
                    + ' ' + r.type + (r.attributeName ? ' ' + r.attributeName : '');
                break;
            }
        }
    }).observe(document, {subtree: true, childList: true, attributes: true, attributeOldValue: true,
        characterData: true});
})()"""
STATE_JS = """() => ({
    answered: !!document.querySelector('[data-testid="stApp"][data-test-script-state="notRunning"]'),
    ready: !!document.querySelector('[data-testid="stMain"] h1')
        && !!document.querySelector('[data-testid="stApp"][data-test-script-state="notRunning"]')
        && !document.querySelector('[data-testid="stStatusWidget"]')
        && !document.querySelector('[data-stale="true"]')
        && !document.querySelector('[data-testid="stSkeleton"]'),
    runs: window.__hvit ? window.__hvit.runs : 0,
    last: window.__hvit ? window.__hvit.last : 0,
    replies: window.__hvit ? window.__hvit.replies : 0,
    replied: window.__hvit ? window.__hvit.replied : 0,
    now: performance.now(),
})"""
# The page's clock, script runs and server messages just before an action (see `settle_times`).
BEFORE_JS = "() => ({t: performance.now(), runs: window.__hvit.runs, replies: window.__hvit.replies})"
NEXT_FRAMES_JS = "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"
NAVIGATION = {"t": 0.0, "runs": 0, "replies": 0}  # the same, for a page just opened: its navigation start
WHY_JS = """() => ({
    script: (document.querySelector('[data-testid="stApp"]') || {getAttribute: () => 'no app'})
        .getAttribute('data-test-script-state'),
    runs: window.__hvit ? window.__hvit.runs : 0,
    replies: window.__hvit ? window.__hvit.replies : 0,
    quiet_ms: window.__hvit ? performance.now() - window.__hvit.last : 0,
    loads: window.__hvit ? window.__hvit.loads : 0,
    what: window.__hvit ? window.__hvit.what : '',
    url: location.pathname + location.search,
    stale: document.querySelectorAll('[data-stale="true"]').length,
    status: !!document.querySelector('[data-testid="stStatusWidget"]'),
    title: !!document.querySelector('[data-testid="stMain"] h1'),
})"""


@dataclass
class Step:
    """One timed action.

    Attributes:
        page: the page it happened on.
        action: what was done ("first load", "Next → step 3", ...).
        seconds: from the action to the page's last change once settled (NaN when it failed).
        load: the 1-minute load average when it ended.
        error: what went wrong (an error shown on the page, a timeout), or ``None``.
        answered: from the action to the end of the server's reply (its last message read by the page,
            or the script run seen finished; drawing may still go on). NaN if unknown.
    """

    page: str
    action: str
    seconds: float
    load: float
    error: str | None = None
    answered: float = math.nan

    @property
    def first_load(self) -> bool:
        return self.action == "first load"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method (NaN for no values).

    Nearest rank, not interpolation: with a dozen clicks the p95 is then a click that happened.
    """
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary_line(steps: Sequence[Step]) -> str:
    """``browser: first load max X s, interaction median Y s, p95 Z s, errors N``."""
    loads = [s.seconds for s in steps if s.first_load and s.error is None]
    clicks = [s.seconds for s in steps if not s.first_load and s.error is None]
    errors = sum(s.error is not None for s in steps)
    first = max(loads) if loads else math.nan
    median = statistics.median(clicks) if clicks else math.nan
    return (
        f"browser: first load max {first:.2f} s, interaction median {median:.2f} s, "
        f"p95 {percentile(clicks, 95):.2f} s, errors {errors}"
    )


def format_table(steps: Sequence[Step]) -> str:
    """One row per action: page, action, seconds until drawn and until answered, load average, error."""
    lines = [f"{'page':<13} {'action':<34} {'seconds':>8} {'answered':>9} {'load 1m':>8}  error"]
    for s in steps:
        seconds, answered = ("-" if math.isnan(v) else f"{v:.2f}" for v in (s.seconds, s.answered))
        lines.append(
            f"{s.page:<13} {s.action:<34} {seconds:>8} {answered:>9} {s.load:>8.2f}  {s.error or ''}"
        )
    return "\n".join(lines)


# ----- the server ---------------------------------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def app_server(
    env: dict[str, str] | None = None, log: Path | None = None, timeout_s: float = 180.0
) -> Iterator[str]:
    """Run ``streamlit run app/main.py`` on a free loopback port; yields its URL and stops it after.

    Args:
        env: extra environment variables for the server (e.g. the training queue's settings).
        log: where the server's output goes (a temporary file when ``None``).
        timeout_s: how long to wait for the health check.
    """
    port = free_port()
    log = log or Path(tempfile.mkstemp(prefix="hvit-streamlit-", suffix=".log")[1])
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app/main.py",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                        if r.read().strip() == b"ok":
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start within {timeout_s:.0f} s; see {log}")
                time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ----- timing one action -----------------------------------------------------------------------------------


async def settle_times(
    page, before: dict, quiet_s: float = 0.4, timeout_s: float = 120.0
) -> tuple[float, float]:  # noqa: ANN001 - a Playwright page
    """Wait until the server has answered the action and the page has settled.

    Args:
        page: the Playwright page.
        before: the page's state just before the action (``BEFORE_JS``), or ``NAVIGATION`` for a page
            just opened. The page counts as answered only once the server has sent something since (a
            script run seen, or a message on its WebSocket): a hover label drawn by the mouse is a
            change, not an answer.
        quiet_s: how long without a change (to the page, and from the server) counts as settled.
        timeout_s: the most to wait; raises ``TimeoutError`` beyond it.

    Returns:
        (settled, answered): seconds from the action to the page's last change, and to the end of the
        server's reply (its last message, or the first moment the script run was seen finished), its
        figures perhaps still drawing.
    """
    t0_ms = before["t"]
    deadline = time.monotonic() + timeout_s
    answered = math.nan
    while True:
        state = await page.evaluate(STATE_JS)
        replied = state["replies"] > before["replies"]
        ran = state["runs"] > before["runs"] or replied
        quiet = state["now"] - max(state["last"], state["replied"]) >= quiet_s * 1000
        if math.isnan(answered) and state["answered"] and state["runs"] > before["runs"]:
            answered = max(0.0, (state["now"] - t0_ms) / 1000)
        if state["ready"] and ran and quiet:
            settled = max(0.0, (state["last"] - t0_ms) / 1000)
            if replied:  # the server's last message: exact, where the polling above is 50 ms coarse
                answered = max(0.0, (state["replied"] - t0_ms) / 1000)
            return settled, min(answered, settled) if not math.isnan(answered) else settled
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the page did not settle within {timeout_s:.0f} s ({await _why(page, before)})"
            )
        await asyncio.sleep(0.05)


async def _why(page, before: dict) -> str:  # noqa: ANN001
    """What kept a page from settling, in a few words (and a screenshot of it in the temp folder)."""
    state = await page.evaluate(WHY_JS)  # before the screenshot, which could change the page
    shot = Path(tempfile.mkstemp(prefix="hvit-unsettled-", suffix=".png")[1])
    try:
        await page.screenshot(path=str(shot))
    except Exception:  # a screenshot is a bonus; the words below are the report
        shot = None
    return (
        f"script {state['script']}, runs {state['runs']} (before the action {before['runs']}), server "
        f"messages {state['replies']} (before {before['replies']}), last change "
        f"{state['quiet_ms'] / 1000:.1f} s ago, stale {state['stale']}, status widget {state['status']}, "
        f"title {state['title']}, tab loaded {state['loads']}x, at {state['url']}, last changed: "
        f"{state['what'] or '-'}" + (f"; screenshot {shot}" if shot else "")
    )


async def settle(page, before: dict, quiet_s: float = 0.4, timeout_s: float = 120.0) -> float:  # noqa: ANN001
    """`settle_times`'s first value: seconds from the action until the page has settled."""
    return (await settle_times(page, before, quiet_s, timeout_s))[0]


async def problems(page) -> list[str]:  # noqa: ANN001
    """Error messages and exceptions shown on the page."""
    return [(await e.inner_text())[:200].replace("\n", " ") for e in await page.query_selector_all(PROBLEMS)]


async def timed(
    page,
    name: str,
    action: str,
    do: Callable[[], Awaitable[object]],
    quiet_s: float,
    timeout_s: float = 120.0,
) -> Step:  # noqa: ANN001
    """Run ``do()`` on ``page`` and time it until the page has settled."""
    error, answered = None, math.nan
    try:
        # The tab a person clicks in is the one in front. Chromium throttles the timers and animation
        # frames of a tab behind others, which would time the throttling, not the app (a stage change
        # "took" 4-9 s with the CPU idle before this).
        await page.bring_to_front()
        before = await page.evaluate(BEFORE_JS)
        await do()
        seconds, answered = await settle_times(page, before, quiet_s, timeout_s)
        shown = await problems(page)
        if shown:
            error = shown[0]
    except Exception as err:  # a failed step is a row with its reason, and the lesson goes on
        seconds, error = math.nan, f"{type(err).__name__}: {str(err).splitlines()[0][:700]}"
    return Step(name, action, seconds, os.getloadavg()[0], error, answered)


async def first_load(context, base: str, name: str, quiet_s: float, timeout_s: float = 180.0) -> tuple:  # noqa: ANN001
    """Open page ``name`` in a new tab of ``context``; returns the tab and its `Step`."""
    page = await context.new_page()
    error, answered = None, math.nan
    try:
        await page.goto(base + PAGES[name], wait_until="commit")
        seconds, answered = await settle_times(page, NAVIGATION, quiet_s, timeout_s)
        shown = await problems(page)
        error = shown[0] if shown else None
    except Exception as err:
        seconds, error = math.nan, f"{type(err).__name__}: {str(err).splitlines()[0][:700]}"
    return page, Step(name, "first load", seconds, os.getloadavg()[0], error, answered)


# ----- widgets -------------------------------------------------------------------------------------------------


def widget(page, testid: str, label: str):  # noqa: ANN001, ANN201
    """The first widget of a kind (``stSelectbox``, ``stNumberInput``, ...) with this exact label."""
    return page.locator(f'[data-testid="{testid}"]').filter(has=page.get_by_text(label, exact=True)).first


async def choose(page, label: str, option: int) -> None:  # noqa: ANN001
    """Pick option ``option`` (0-based) of the selectbox labelled ``label``.

    The list is scrolled into view first, as a person scrolls to it before clicking. Playwright's own
    click scrolls and presses within one frame, and the scroll event that follows closes the list it
    has just opened (seen on the attention page's "Explain the class" list, far down the page: the
    "first click only focuses" glitch of earlier notes; after two frames the list opens at once).
    """
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    box = widget(page, "stSelectbox", label).get_by_role("combobox")
    await box.scroll_into_view_if_needed()
    await page.evaluate(NEXT_FRAMES_JS)
    await box.click()
    try:
        await page.get_by_role("option").first.wait_for(timeout=3000)
    except PlaywrightTimeout:  # not seen since the scroll above; a person would click again, so do we
        await box.click()
    # no_wait_after: the click starts a rerun, not a navigation; Playwright need not wait for one.
    await page.get_by_role("option").nth(option).click(no_wait_after=True)


async def click_button(page, name: str) -> None:  # noqa: ANN001
    await page.get_by_role("button", name=name).first.click()


async def click_chart(page, index: int, fx: float, fy: float) -> None:  # noqa: ANN001
    """Click at a fraction (``fx``, ``fy``) of the plot area of the ``index``-th Plotly chart."""
    area = page.locator('[data-testid="stPlotlyChart"]').nth(index).locator(".nsewdrag").first
    box = await area.bounding_box()
    await page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)


# ----- the lesson -------------------------------------------------------------------------------------------------


async def lesson(
    context, base: str, quiet_s: float, short: bool = False, log: Callable[[Step], None] | None = None
) -> list[Step]:  # noqa: ANN001
    """The scripted lesson in one browser context; returns every timed `Step`.

    Args:
        context: a Playwright browser context (one user).
        base: the app's URL.
        quiet_s: see `settle`.
        short: only the home page's first load, the attention page's first load and one click, and
            one Next in the walkthrough (for a quick end-to-end test).
        log: called with each step as it ends (to print progress).
    """
    steps: list[Step] = []

    def add(step: Step) -> None:
        steps.append(step)
        if log is not None:
            log(step)

    async def act(page, name: str, action: str, do: Callable[[], Awaitable[object]]) -> None:  # noqa: ANN001
        add(await timed(page, name, action, do, quiet_s))

    pages = {}
    for name in ("home", "attention", "classroom") if short else PAGES:
        page, step = await first_load(context, base, name, quiet_s)
        pages[name] = page
        add(step)

    att = pages["attention"]
    if not short:
        await act(att, "attention", "another sample", lambda: choose(att, "Sample", 1))
    await act(att, "attention", "click on the image", lambda: click_chart(att, 0, 0.2, 0.25))
    if not short:
        await act(att, "attention", "another stage", lambda: choose(att, "Stage", 1))
        await act(att, "attention", "another head", lambda: choose(att, "Head", 1))

        async def attribution() -> None:
            await choose(att, "Explain the class", 2)  # inside a form: no rerun until submitted
            await click_button(att, "Compute attributions")

        await act(att, "attention", "attribution (another class)", attribution)

    cls = pages["classroom"]
    for target in range(2, 3 if short else 7):
        await act(cls, "classroom", f"Next → step {target}", lambda: click_button(cls, "Next"))

    if not short:
        arch = pages["architecture"]
        await act(arch, "architecture", "another preset", lambda: choose(arch, "Start from a preset", 2))
        step_up = widget(arch, "stNumberInput", "Image size (px)").locator(
            '[data-testid="stNumberInputStepUp"]'
        )
        await act(arch, "architecture", "image size one step up", step_up.click)

        # A student opens the app once and moves between pages in the sidebar: the browser keeps
        # Streamlit's code and only the page's own script runs. Timed in the home page's tab, left alone
        # until now (its first chart page still loads plotly.js's code once).
        home = pages["home"]
        for title, name in (
            ("Attention and attributions", "attention"),
            ("Classroom walkthrough", "classroom"),
            ("Architecture explorer", "architecture"),
        ):
            link = home.locator('[data-testid="stSidebarNavLink"]').filter(has_text=title).first
            await act(home, "sidebar", f"to the {name} page", link.click)
    for page in pages.values():
        if not page.is_closed():
            await page.close()
    return steps


async def run_lesson(
    base: str, quiet_s: float, short: bool = False, log: Callable[[Step], None] | None = None
) -> list[Step]:
    """Launch Chromium and run `lesson` in one fresh context."""
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).is_file():
        raise FileNotFoundError(f"no Chromium at {CHROMIUM}: install it (apt-get install chromium)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = await browser.new_context(viewport=VIEWPORT)
            context.set_default_timeout(120_000)  # a click waits for a busy page, then counts as an error
            await context.add_init_script(OBSERVER_JS)
            return await lesson(context, base, quiet_s, short, log)
        finally:
            await browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hvit.bench browser", description=__doc__.split("\n")[0])
    parser.add_argument("--quiet-s", type=float, default=0.4, help="no change for this long = settled")
    parser.add_argument("--short", action="store_true", help="a very short lesson (an end-to-end check)")
    args = parser.parse_args(argv)

    print(
        f"load average at the start: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} cores)"
    )
    start = time.perf_counter()
    with app_server() as url:
        print(f"server: answering {time.perf_counter() - start:.2f} s after `streamlit run`", flush=True)
        steps = asyncio.run(
            run_lesson(
                url,
                args.quiet_s,
                args.short,
                log=lambda s: print(format_table([s]).splitlines()[1], flush=True),
            )
        )
    print()
    print(format_table(steps))
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(summary_line(steps))
    return 0 if all(s.error is None for s in steps) else 1


if __name__ == "__main__":
    raise SystemExit(main())
