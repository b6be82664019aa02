"""Render time of every page of the classroom app with the default (shipped) model.

    python -m hvit.bench app [--repeats 5] [--app app/navigation.py]

Each page is run through Streamlit's ``AppTest`` (the same script run a browser triggers, without the
network and the drawing): once to warm up (imports, model loading, first computations), then
``--repeats`` times; the median is reported. For the attention page it also times the maps after a
"click": moving the query to a new position (a new, uncached query) and switching the head. Target:
every page under 2 s, the attention maps under 1 s after a click.

The app's files live in the repository, not in the package: run it from a clone's root, or name its
script, ``app/navigation.py`` (what ``app/main.py`` serves), with ``--app``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

PAGES = {
    "home": None,
    "architecture": "../pages/1_architecture.py",
    "training": "../pages/2_training.py",
    "attention": "../pages/3_attention.py",
    "classroom (step 1)": "../pages/4_classroom.py",
}
TARGET_PAGE_S, TARGET_CLICK_S = 2.0, 1.0


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _check(at: object, what: str) -> None:
    problems = [e.value for e in at.exception] + [e.value for e in at.error]
    if problems:
        raise RuntimeError(f"{what} rendered with errors: {problems}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hvit.bench app", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per page (median reported)")
    parser.add_argument(
        "--app",
        default="app/navigation.py",
        help="the app's script, served by app/main.py (default: from the current folder)",
    )
    args = parser.parse_args(argv)
    script = Path(args.app).resolve()  # AppTest resolves a relative path against its caller, not the cwd
    if not script.is_file():
        parser.error(
            f"no Streamlit app at {script}; run this from the root of an hvit clone "
            "or pass --app path/to/app/navigation.py"
        )

    from streamlit.testing.v1 import AppTest

    # The scripts' own time, without the app's background warm-up (app/common.py) competing for the CPU.
    os.environ.setdefault("HVIT_WARM_UP", "0")

    rows: list[tuple[str, float, float, float]] = []
    for name, page in PAGES.items():
        at = AppTest.from_file(str(script), default_timeout=300)
        if page is not None:
            at.run()  # the home page loads the model in use into the new session
            at.switch_page(page)
        first = _timed(at.run)
        _check(at, name)
        warm = [_timed(at.run) for _ in range(args.repeats)]
        rows.append((name, first, statistics.median(warm), TARGET_PAGE_S))

        if name == "attention":
            size = at.session_state["model_in_use"].model.preprocessing.img_size
            clicks = []
            for i in range(args.repeats):
                at.slider(key="att_qy").set_value((3 + 7 * i) % size)
                at.slider(key="att_qx").set_value((5 + 11 * i) % size)
                clicks.append(_timed(at.run))
            rows.append(("attention: new query", clicks[0], statistics.median(clicks), TARGET_CLICK_S))
            switches = []
            for i in range(args.repeats):
                at.selectbox(key="att_head").set_value(None if i % 2 else 0)
                switches.append(_timed(at.run))
            rows.append(("attention: switch head", switches[0], statistics.median(switches), TARGET_CLICK_S))
            _check(at, "attention after clicks")

    in_use = at.session_state["model_in_use"]
    print(f"model: {in_use.label}")
    print(f"{'page':<24} {'first (s)':>10} {'median (s)':>11} {'target':>7}  ok")
    ok = True
    for name, first, median, target in rows:
        passed = median <= target
        ok &= passed
        print(f"{name:<24} {first:>10.2f} {median:>11.2f} {target:>7.1f}  {'yes' if passed else 'NO'}")
    print("first: the first render in a fresh session (imports and caches warm up); median: later renders.")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
