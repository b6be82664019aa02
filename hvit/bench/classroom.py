"""A class on one machine: K browser sessions click through the lesson while some of them train.

    python -m hvit.bench classroom [--k 4,8,12] [--timeout-s 60] [--arrive-s 2] [--think-s 4]

Starts the app once (loopback only) and, for each K in ``--k``, opens K concurrent browser sessions
(Playwright contexts of one headless Chromium). Each session is a student: it opens the classroom
walkthrough and clicks Next through its six steps. Students behave like a class, not like a stress
tool: they arrive ``--arrive-s`` apart (the teacher reads out the address) and read each step before
clicking Next (``--think-s`` on average, drawn from 0.5x to 1.5x of it with a fixed seed, so every run
clicks at the same moments). At the same time four more sessions (each a browser window of its own) use
the training page:

- the first starts a long run (the page's default settings) and closes its tab once the others have
  joined the queue: its run must stop, and the next run must start within seconds;
- the next three start short runs (one epoch of 300 shapes, a few seconds each) one after the other:
  they must finish in the order they joined the queue (by the end time each page shows, the server's
  clock, not by when each browser drew it).

Two times are taken for every action: *answered*, until the last message of the server's reply has
reached the page (what the server costs, plus the page's delay in reading it when busy), and *drawn*,
until the page has also drawn it and settled (what a student waits for). In a class each student's
browser runs on the student's device; here all K run on the server's 2 cores, below the pages' CPU
priority and above training's (``--browser-nice``) so that they do not starve the server they measure,
which makes *drawn* an upper bound. A K "holds" when the server
answered every action within ``--timeout-s``, every page settled within ``--draw-timeout-s`` and no
page showed an error. It prints, per K, both percentiles of the clicks and the first loads, the
trainings' finish order and how soon the closed tab's slot was given to the next run, and last one
line: ``classroom: largest K held H, clicks answered p50 .. s, p95 .. s, drawn p50 .. s, p95 .. s (at
K=H), trainings in order yes/no, closed tab stopped yes/no``. The machine's load averages are printed
with each K: on a shared machine, read the figures with them.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hvit.bench.browser import (
    BEFORE_JS,
    CHROMIUM,
    CHROMIUM_ARGS,
    NAVIGATION,
    OBSERVER_JS,
    VIEWPORT,
    Step,
    app_server,
    click_button,
    first_load,
    percentile,
    settle,
    timed,
    widget,
)

# The short runs' settings: each select slider, how many steps up from its least value, and the value
# the page then shows (``aria-valuetext``). A few seconds per run: apart enough for their ends, which
# the pages show to the second, to give their order.
SHORT_RUN = (("Training images per epoch", 2, "300"), ("Validation images", 0, "30"))


@dataclass
class Round:
    """What happened with K sessions.

    A round holds when no page showed an error or failed to settle and the server answered every action
    within ``answer_limit_s`` (`Step.answered`: the server's reply complete in the browser). The drawing
    that follows is timed too (`Step.seconds`) but is not the server's: here it is the K browsers sharing
    the server's cores at a lower priority, in a class each student's device.
    """

    k: int
    steps: list[Step] = field(default_factory=list)
    finish_order: list[int] = field(default_factory=list)  # short-run trainers, in the order they finished
    join_order: list[int] = field(default_factory=list)  # short-run trainers, in the order they queued
    handover_s: float | None = None  # from the closed tab to the next run starting
    training_errors: list[str] = field(default_factory=list)
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    answer_limit_s: float = 60.0

    @property
    def errors(self) -> int:
        return sum(s.error is not None for s in self.steps) + len(self.training_errors)

    @property
    def late(self) -> int:
        """Actions the server answered after ``answer_limit_s`` (or never)."""
        return sum(s.error is None and not s.answered <= self.answer_limit_s for s in self.steps)

    @property
    def held(self) -> bool:
        return self.errors == 0 and self.late == 0

    @property
    def in_order(self) -> bool:
        return bool(self.join_order) and self.finish_order == self.join_order

    def latencies(self, first_load: bool, answered: bool = False) -> list[float]:
        """Seconds of the clicks (or first loads) without error: until answered, or until drawn."""
        return [
            s.answered if answered else s.seconds
            for s in self.steps
            if s.first_load == first_load and s.error is None
        ]


def _spread(values: list[float]) -> str:
    return f"p50 {percentile(values, 50):5.2f} p95 {percentile(values, 95):5.2f} max {max(values, default=math.nan):5.2f} s"


def round_line(r: Round) -> str:
    """One line per K: errors, answered and drawn percentiles of clicks and first loads, trainings, load."""
    handover = "-" if r.handover_s is None else f"{r.handover_s:.1f} s"
    return (
        f"K={r.k:<3} {'held' if r.held else 'FAILED':<6} errors {r.errors:<3} late {r.late:<3} "
        f"clicks answered {_spread(r.latencies(False, True))}, drawn {_spread(r.latencies(False))} · "
        f"first loads answered {_spread(r.latencies(True, True))}, drawn {_spread(r.latencies(True))} · "
        f"trainings finished {r.finish_order} (queued {r.join_order}) · closed tab's slot handed over in "
        f"{handover} · load " + " ".join(f"{v:.1f}" for v in r.load)
    )


def summary_line(rounds: list[Round]) -> str:
    """``classroom: largest K held H, clicks answered p50 .. p95 .., drawn p50 .. p95 .. (at K=H),
    trainings in order yes/no, closed tab stopped yes/no``."""
    held = [r for r in rounds if r.held]
    best = max(held, key=lambda r: r.k) if held else None
    answered = best.latencies(False, True) if best else []
    drawn = best.latencies(False) if best else []
    in_order = bool(rounds) and all(r.in_order for r in rounds)
    stopped = bool(rounds) and all(r.handover_s is not None for r in rounds)
    k = best.k if best else 0
    return (
        f"classroom: largest K held {k}, clicks answered p50 {percentile(answered, 50):.2f} s, p95 "
        f"{percentile(answered, 95):.2f} s, drawn p50 {percentile(drawn, 50):.2f} s, p95 "
        f"{percentile(drawn, 95):.2f} s (at K={k}), trainings in order {'yes' if in_order else 'no'}, "
        f"closed tab stopped {'yes' if stopped else 'no'}"
    )


@dataclass(frozen=True)
class Pace:
    """How a class moves: ``arrive_s`` between two students opening the lesson, ``think_s`` (mean) spent
    reading a step before clicking Next; ``seed`` fixes the drawn reading times."""

    arrive_s: float = 2.0
    think_s: float = 4.0
    seed: int = 0

    def reading_times(self, student: int, clicks: int) -> list[float]:
        """Seconds student ``student`` reads before each of its ``clicks`` clicks (0.5x to 1.5x ``think_s``)."""
        rng = random.Random(self.seed * 1_000_003 + student)
        return [self.think_s * rng.uniform(0.5, 1.5) for _ in range(clicks)]


async def _student(
    context, base: str, index: int, r: Round, quiet_s: float, timeout_s: float, pace: Pace
) -> None:  # noqa: ANN001
    """Student ``index`` (from 1): arrives, opens the walkthrough and reads each step before Next."""
    await asyncio.sleep((index - 1) * pace.arrive_s)
    page, step = await first_load(context, base, "classroom", quiet_s, timeout_s)
    step.page = f"{index}:classroom"
    r.steps.append(step)
    for target, reading in zip(range(2, 7), pace.reading_times(index, 5), strict=True):
        await asyncio.sleep(reading)
        r.steps.append(
            await timed(
                page,
                f"{index}:classroom",
                f"Next → {target}",
                lambda: click_button(page, "Next"),
                quiet_s,
                timeout_s,
            )
        )
    await page.close()


async def _open_training(context, base: str, quiet_s: float, timeout_s: float):  # noqa: ANN001, ANN202
    page = await context.new_page()
    await page.goto(base + "/training", wait_until="commit")
    await settle(page, NAVIGATION, quiet_s, timeout_s)
    return page


async def _set_short_run(page, quiet_s: float, timeout_s: float) -> None:  # noqa: ANN001
    """One epoch of 300 training and 30 validation images (each change is one rerun); checked."""
    epochs = widget(page, "stNumberInput", "Epochs").locator("input")
    await epochs.fill("1")
    await epochs.press("Enter")
    for label, rights, want in SHORT_RUN:
        slider = widget(page, "stSlider", label).get_by_role("slider")
        for key in ("Home", *["ArrowRight"] * rights):
            value = await slider.get_attribute("aria-valuetext")
            before = await page.evaluate(BEFORE_JS)
            await slider.press(key)
            for _ in range(20):  # the thumb moves at once in the page; no move (at its least): no rerun
                if await slider.get_attribute("aria-valuetext") != value:
                    await settle(page, before, quiet_s, timeout_s)
                    break
                await asyncio.sleep(0.05)
        value = await slider.get_attribute("aria-valuetext")
        if value != want:
            raise RuntimeError(f"the training page's {label!r} reads {value!r}, not {want!r}")


async def _trainers(
    contexts: list, base: str, r: Round, quiet_s: float, timeout_s: float, run_timeout_s: float
) -> None:
    """The long run whose tab closes (``contexts[0]``), then three short runs in ``contexts[1:4]`` (each in
    a browser window of its own) that must finish in order."""
    long_page = await _open_training(contexts[0], base, quiet_s, timeout_s)
    await long_page.get_by_role("button", name="Start").click()
    await long_page.get_by_role("button", name="Stop").wait_for(timeout=timeout_s * 1000)  # it holds the slot

    short = []
    for i in range(1, 4):
        page = await _open_training(contexts[i], base, quiet_s, timeout_s)
        await _set_short_run(page, quiet_s, timeout_s)
        await page.get_by_role("button", name="Start").click()
        await page.get_by_text("Waiting for the training queue").first.wait_for(timeout=timeout_s * 1000)
        short.append(page)
        r.join_order.append(i)

    shot = Path(tempfile.gettempdir()) / f"hvit-classroom-waiting-k{r.k}.png"
    await short[-1].screenshot(path=str(shot))  # the last in the queue: its place and expected wait
    print(f"    screenshot of a waiting tab: {shot}", flush=True)
    closed = time.monotonic()
    await long_page.close()  # the tab goes away, and with it its Streamlit session
    first = short[0]
    await first.get_by_text("Waiting for the training queue").first.wait_for(
        state="detached", timeout=run_timeout_s * 1000
    )
    r.handover_s = time.monotonic() - closed

    async def finished(page) -> str:  # noqa: ANN001
        done = page.get_by_text("Training completed").first
        await done.wait_for(timeout=run_timeout_s * 1000)
        return await done.inner_text()

    # The order comes from the server's clock as each page reports it ("Training completed at 10:12:03,
    # after 14 s"), not from when each page showed it: a busy browser may draw a later run's end first.
    texts = await asyncio.gather(*(finished(p) for p in short))
    r.finish_order = finish_order(dict(zip(r.join_order, texts, strict=True)))


def finish_order(texts: dict[int, str]) -> list[int]:
    """The trainers in the order their runs ended, from each page's "Training completed at HH:MM:SS"
    (the server's clock; runs ending within the same second keep their numbers' order)."""
    ends = {}
    for i, text in texts.items():
        match = re.search(r"completed at (\d\d):(\d\d):(\d\d)", text)
        if match is None:
            raise ValueError(f"trainer {i}'s page does not say when its run ended: {text[:200]!r}")
        h, m, sec = (int(v) for v in match.groups())
        ends[i] = h * 3600 + m * 60 + sec
    # a class across midnight: when the times span more than half a day, the small ones are the next day's
    if ends and max(ends.values()) - min(ends.values()) > 43200:
        ends = {i: t + 86400 if t < 43200 else t for i, t in ends.items()}
    return sorted(ends, key=lambda i: (ends[i], i))


async def run_round(
    browser,
    base: str,
    k: int,
    quiet_s: float,
    timeout_s: float,
    run_timeout_s: float,
    pace: Pace,
    draw_timeout_s: float = 180.0,
) -> Round:  # noqa: ANN001
    """K students at once, four of them also using the training page (see the module docstring).

    ``timeout_s`` is the most the server may take to answer an action; ``draw_timeout_s`` the most any
    page may take to settle (drawing included) before the step counts as an error.
    """
    r = Round(k, answer_limit_s=timeout_s)
    timeout_s = max(timeout_s, draw_timeout_s)  # every wait below: pages, buttons, the queue's texts
    # Four training tabs, then one context per student. Each tab its own context (its own browser
    # window): two tabs of one window would hide each other, and a hidden tab draws nothing, so neither
    # would settle while the other is in front.
    contexts = []
    for _ in range(4 + k):
        context = await browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(timeout_s * 1000)
        await context.add_init_script(OBSERVER_JS)
        contexts.append(context)

    async def trainers() -> None:
        try:
            await _trainers(contexts, base, r, quiet_s, timeout_s, run_timeout_s)
        except Exception as err:  # reported as the round's failure
            r.training_errors.append(f"{type(err).__name__}: {str(err).splitlines()[0][:400]}")

    students = [_student(contexts[3 + i], base, i, r, quiet_s, timeout_s, pace) for i in range(1, k + 1)]
    await asyncio.gather(trainers(), *students)
    for context in contexts:
        await context.close()
    r.load = os.getloadavg()
    return r


async def run_all(
    base: str,
    ks: list[int],
    quiet_s: float,
    timeout_s: float,
    run_timeout_s: float,
    pace: Pace,
    browser_nice: int = 5,
    draw_timeout_s: float = 180.0,
) -> list[Round]:
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).is_file():
        raise FileNotFoundError(f"no Chromium at {CHROMIUM}: install it (apt-get install chromium)")
    # In a class every student's browser runs on the student's own device. Here all of them share the
    # server's cores, and a new tab alone costs Chromium 5-10 s of CPU (parsing and running Streamlit's
    # and plotly.js's bundles), so K of them would starve the server they are meant to measure. The
    # browsers therefore run at a lower CPU priority than the server's pages (nice 0) but above its
    # background work (training runs at 10, the warm-up at 19), which on the students' devices they would
    # not compete with either: this thread's nice value, which the Playwright driver and the Chromium it
    # starts inherit (the server was started before, at 0).
    os.setpriority(os.PRIO_PROCESS, 0, browser_nice)
    rounds = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            # The teacher opens the app once before the class comes in (as anyone checks a projector):
            # the class is not timed against the server's own start, which `python -m hvit.bench
            # browser` reports as the first page's load.
            context = await browser.new_context(viewport=VIEWPORT)
            await context.add_init_script(OBSERVER_JS)
            _, check = await first_load(context, base, "home", quiet_s, 180.0)
            await context.close()
            print(f"the teacher's check (home page, just after the server started): {check.seconds:.1f} s")
            for k in ks:
                r = await run_round(browser, base, k, quiet_s, timeout_s, run_timeout_s, pace, draw_timeout_s)
                print(round_line(r), flush=True)
                loads = sorted(s.seconds for s in r.steps if s.first_load and s.error is None)
                print("    first loads: " + " ".join(f"{v:.1f}" for v in loads) + " s")
                for s in r.steps:
                    if s.error:
                        print(f"    {s.page} {s.action}: {s.error}")
                for e in r.training_errors:
                    print(f"    training: {e}")
                rounds.append(r)
        finally:
            await browser.close()
    return rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hvit.bench classroom", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--k", default="4,8,12", help="comma-separated numbers of concurrent sessions")
    parser.add_argument(
        "--timeout-s", type=float, default=60.0, help="the most the server may take to answer an action"
    )
    parser.add_argument(
        "--draw-timeout-s", type=float, default=180.0, help="a page not drawn and settled by then is an error"
    )
    parser.add_argument("--run-timeout-s", type=float, default=300.0, help="the most a training may take")
    parser.add_argument("--quiet-s", type=float, default=0.4, help="no change for this long = settled")
    parser.add_argument(
        "--arrive-s", type=float, default=2.0, help="seconds between two students opening the lesson"
    )
    parser.add_argument(
        "--think-s", type=float, default=4.0, help="mean seconds a student reads a step before Next"
    )
    parser.add_argument(
        "--browser-nice",
        type=int,
        default=5,
        choices=range(20),
        metavar="0..19",
        help="CPU priority of the browsers (the server's pages run at 0, training at 10, the warm-up at 19)",
    )
    args = parser.parse_args(argv)
    if min(args.arrive_s, args.think_s) < 0:
        parser.error("--arrive-s and --think-s must be >= 0")
    ks = sorted(int(v) for v in args.k.split(","))

    print(
        f"load average at the start: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} cores)"
    )
    with app_server() as url:
        pace = Pace(args.arrive_s, args.think_s)
        print(f"students arrive {pace.arrive_s:g} s apart and read each step {pace.think_s:g} s on average")
        rounds = asyncio.run(
            run_all(
                url,
                ks,
                args.quiet_s,
                args.timeout_s,
                args.run_timeout_s,
                pace,
                args.browser_nice,
                args.draw_timeout_s,
            )
        )
    clicks = [s.seconds for r in rounds for s in r.steps if not s.first_load and s.error is None]
    if clicks:
        print(f"all rounds: {len(clicks)} clicks, median {statistics.median(clicks):.2f} s")
    print(summary_line(rounds))
    return 0 if rounds and all(r.held for r in rounds) else 1


if __name__ == "__main__":
    raise SystemExit(main())
