"""How long a visitor of the Gradio Space waits for each answer, measured through its own API.

    python -m hvit.bench space [--repeats 5] [--model LABEL] [--images 3] [--limit-s 1.0]

Starts ``app/gradio_app.py`` (as the Space runs it: one torch thread per request, at most two requests
at once) on a free loopback port and calls it with ``gradio_client``, one call at a time, as a visitor's
browser does:

- ``/predict`` (everything for one image) once per attribution method: the method is what costs;
- ``/attribution`` (another method chosen) once per method;
- ``/attention`` (another query point or view: one model pass) once per view.

Each round calls every case once, the order rotating from round to round (as in
`hvit.bench.alternating_times`), with another sample image, stage (1-4) and query point each time, so
nothing is answered from a cache. One warm-up round is not counted (the model loads on the first call).
Times are round trips: the server's work plus turning the figures into JSON and sending them, what a
visitor waits for before the browser draws. It prints a table (median, p95 and max per endpoint and
case, the calls over ``--limit-s``), the machine's load averages, and last one line:
``space: /predict median X s, p95 Y s; ...; over 1.0 s: N of M calls (...)``.

The issue's target is every answer under a second on a Space's "CPU basic" (2 vCPU). The app's files
live in the repository, not in the package: run this from a clone's root, or pass ``--app``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hvit.bench.browser import ROOT, free_port, percentile

ENDPOINTS = ("/predict", "/attribution", "/attention")
LIMIT_S = 1.0  # the target: each answer under a second on CPU basic


@dataclass(frozen=True)
class Row:
    """The timings of one endpoint and case ("all" for every case of the endpoint together)."""

    endpoint: str
    case: str
    calls: int
    median_s: float
    p95_s: float
    max_s: float
    over: int  # calls slower than the limit


def summarise(times: Mapping[tuple[str, str], Sequence[float]], limit_s: float = LIMIT_S) -> list[Row]:
    """Rows of the table: per (endpoint, case), then per endpoint ("all"), endpoints in `ENDPOINTS` order.

    Args:
        times: seconds of every timed call, by (endpoint, case), e.g. ``("/predict", "occlusion")``.
        limit_s: a call slower than this counts as over the limit.

    Returns:
        For each endpoint, its cases in the order given, then its "all" row; p95 by nearest rank
        (`hvit.bench.browser.percentile`: with a few calls, the p95 is a call that happened).
    """

    def row(endpoint: str, case: str, ts: Sequence[float]) -> Row:
        return Row(
            endpoint, case, len(ts), statistics.median(ts), percentile(ts, 95), max(ts), sum(t > limit_s for t in ts)
        )  # fmt: skip

    rows = []
    order = [e for e in ENDPOINTS if any(k[0] == e for k in times)]
    order += sorted({e for e, _ in times} - set(order))
    for endpoint in order:
        cases = [(case, ts) for (e, case), ts in times.items() if e == endpoint and ts]
        rows += [row(endpoint, case, ts) for case, ts in cases]
        if cases:
            rows.append(row(endpoint, "all", [t for _, ts in cases for t in ts]))
    return rows


def table(rows: Sequence[Row], limit_s: float = LIMIT_S) -> str:
    """The rows as a Markdown table."""
    lines = [
        f"| endpoint | case | calls | median s | p95 s | max s | over {limit_s:g} s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        case = f"**{r.case}**" if r.case == "all" else r.case
        lines.append(
            f"| {r.endpoint} | {case} | {r.calls} | {r.median_s:.2f} | {r.p95_s:.2f} | {r.max_s:.2f} | {r.over} |"
        )
    return "\n".join(lines)


def summary_line(rows: Sequence[Row], limit_s: float = LIMIT_S) -> str:
    """``space: /predict median X s, p95 Y s; ...; over 1 s: N of M calls (endpoint case, ...)``."""
    totals = [r for r in rows if r.case == "all"]
    parts = [f"{r.endpoint} median {r.median_s:.2f} s, p95 {r.p95_s:.2f} s" for r in totals]
    slow = [f"{r.endpoint} {r.case}" for r in rows if r.case != "all" and r.over]
    over = sum(r.over for r in totals)
    calls = sum(r.calls for r in totals)
    tail = f" ({', '.join(slow)})" if slow else ""
    return f"space: {'; '.join(parts)}; over {limit_s:g} s: {over} of {calls} calls{tail}"


def rotated(cases: Sequence[str], round_index: int) -> list[str]:
    """``cases`` starting at ``round_index`` (mod their number): A B C, B C A, C A B, ..."""
    k = round_index % len(cases) if cases else 0
    return list(cases[k:]) + list(cases[:k])


@contextmanager
def space_server(app: Path, timeout_s: float = 180.0) -> Iterator[str]:
    """Run ``python <app>`` on a free loopback port, as the Space does; yields its URL, stops it after.

    Offline (``HF_HUB_OFFLINE``), its example cache in a temporary folder, its output in a temporary
    log file (shown when it fails to start).
    """
    port = free_port()
    cache = tempfile.mkdtemp(prefix="hvit-space-cache-")
    log = Path(tempfile.mkstemp(prefix="hvit-space-", suffix=".log")[1])
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_EXAMPLES_CACHE": cache,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    url = f"http://127.0.0.1:{port}/"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(app)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    with urllib.request.urlopen(f"{url}config", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the Gradio app did not start at {url}; its output:\n{log.read_text()[-3000:]}"
                    )
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def app_choices(app: Path) -> tuple[list[str], list[str]]:
    """The attribution methods and attention views the demo at ``app`` offers (its `METHOD_LABELS` and
    `VIEW_LABELS`), read from the file itself so the benchmark follows the app."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("hvit_bench_gradio_app", app)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import {app}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the app; builds and launches nothing
    return list(module.METHOD_LABELS), list(module.VIEW_LABELS)


def _calls(
    client,
    images: Sequence[str],
    model: str,
    methods: Sequence[str],
    views: Sequence[str],  # noqa: ANN001
) -> dict[tuple[str, str], Callable[[int], object]]:
    """One function per (endpoint, case); its argument (a call number) picks the image, stage and query."""
    from gradio_client import handle_file

    def args(i: int) -> tuple:
        image = handle_file(images[i % len(images)])
        stage = 1 + i % 4
        qx, qy = (17 + 23 * i) % 100, (61 + 37 * i) % 100  # a new query point every call
        return image, stage, qx, qy

    calls: dict[tuple[str, str], Callable[[int], object]] = {}
    for method in methods:

        def predict(i: int, method: str = method) -> object:
            image, stage, qx, qy = args(i)
            return client.predict(image, model, method, stage, "query", qx, qy, api_name="/predict")

        calls[("/predict", method)] = predict
    for method in methods:

        def attribution(i: int, method: str = method) -> object:
            image, stage, _, _ = args(i)
            return client.predict(image, model, method, stage, api_name="/attribution")

        calls[("/attribution", method)] = attribution
    for view in views:

        def attention(i: int, view: str = view) -> object:
            image, stage, qx, qy = args(i)
            return client.predict(image, model, stage, view, qx, qy, api_name="/attention")

        calls[("/attention", view)] = attention
    return calls


def measure(
    url: str, images: Sequence[str], model: str, repeats: int, methods: Sequence[str], views: Sequence[str]
) -> tuple[dict, list[tuple]]:
    """Every case's round-trip times over ``repeats`` rounds (after one warm-up round), and the load
    averages sampled after each round."""
    from gradio_client import Client

    client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    calls = _calls(client, images, model, methods, views)
    keys = list(calls)
    for key in keys:  # warm-up: the model loads, the first figures are built
        calls[key](len(keys))
    times: dict[tuple[str, str], list[float]] = {key: [] for key in keys}
    loads = [os.getloadavg()]
    for r in range(repeats):
        for key in rotated(keys, r):
            t0 = time.perf_counter()
            calls[key](r * len(keys) + keys.index(key))
            times[key].append(time.perf_counter() - t0)
        loads.append(os.getloadavg())
    return times, loads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hvit.bench space", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (every case once per round)")
    parser.add_argument("--model", default=None, help="the model's label in the demo (default: its default)")
    parser.add_argument(
        "--images", type=int, default=3, help="sample images of the model's kind to cycle through"
    )
    parser.add_argument("--limit-s", type=float, default=LIMIT_S, help="count the calls slower than this")
    parser.add_argument(
        "--app", default="app/gradio_app.py", help="the demo's file (default: from the current folder)"
    )
    args = parser.parse_args(argv)
    app = Path(args.app)
    if not app.is_file():
        parser.error(
            f"no Gradio app at {app.resolve()}; run this from the root of an hvit clone or pass --app"
        )
    if args.repeats < 1 or args.images < 1:
        parser.error(f"--repeats and --images must be at least 1, got {args.repeats} and {args.images}")

    from hvit.demo import SHIPPED, sample_images
    from hvit.demo.domain import SHAPES_PAIR_IMAGE, image_kind

    model = args.model or SHIPPED
    pairs = [p for p in sample_images() if image_kind(p) == SHAPES_PAIR_IMAGE]
    # one image per class folder first, so the images differ
    by_class = list({p.parent.name: p for p in reversed(pairs)}.values())
    images = [str(p) for p in (by_class or sample_images())[: args.images]]
    print(f"Starting {app} on a loopback port; model {model!r}; {len(images)} images, {args.repeats} rounds.")
    methods, views = app_choices(app)
    with space_server(app) as url:
        times, loads = measure(url, images, model, args.repeats, methods, views)
    rows = summarise(times, args.limit_s)
    print(table(rows, args.limit_s))
    one_minute = [load[0] for load in loads]
    print(
        f"Load average (1 min) during the run: {min(one_minute):.2f}-{max(one_minute):.2f} "
        f"on {os.cpu_count()} CPUs (other jobs on this machine slow every call alike)."
    )
    print(summary_line(rows, args.limit_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
