"""What the apps' figures cost the browser: JSON size and Plotly drawing time, figure by figure.

    python -m hvit.bench figures [--model hvit_classroom] [--runs 7] [--width 900]

Builds the figures the attention page, the lesson and the Gradio demo draw for the default model's
first sample image, with the same builders and arguments as the apps, and reports for each one:

- **JSON KB**: ``len(fig.to_json())``, what the server sends to the browser for it;
- **draw ms**: the median over ``--runs`` runs of ``JSON.parse`` + ``Plotly.newPlot`` into a fresh
  ``div`` of ``--width`` pixels, until two animation frames later (the figure painted), in headless
  Chromium (Playwright with Debian's chromium, as ``python -m hvit.bench browser``) on a local page
  holding the plotly.js that the Python plotly package ships.

It prints one row per figure and, last, one line: ``figures: N figures, X KB in all, draw median sum Y ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from pathlib import Path

import numpy as np

from hvit.bench.browser import CHROMIUM, CHROMIUM_ARGS, VIEWPORT

# Parse and draw one figure ``runs`` times into a fresh div; returns the milliseconds of each run.
DRAW_JS = """async ([text, runs, width]) => {
    const times = [];
    for (let r = 0; r < runs; r++) {
        const div = document.createElement('div');
        div.style.width = width + 'px';
        document.body.appendChild(div);
        const t0 = performance.now();
        const fig = JSON.parse(text);
        await Plotly.newPlot(div, fig.data, fig.layout, {responsive: false});
        await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
        times.push(performance.now() - t0);
        Plotly.purge(div);
        div.remove();
    }
    return times;
}"""


def plotly_js() -> Path:
    """The plotly.min.js shipped with the Python plotly package (what the apps' front ends draw with)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found at {path}; reinstall the plotly package")
    return path


def app_figures(model_name: str | None = None, sample: int = 0) -> dict:
    """The figures the apps draw for one sample image of a shipped model, built as the apps build them.

    Args:
        model_name: a shipped model (default: the apps' default, `hvit.assets.DEFAULT_MODEL`).
        sample: index into the model's sample images (`hvit.assets.sample_images`).

    Returns:
        figure name -> ``go.Figure``, in the order a reader meets them.
    """
    import torch

    from hvit import demo
    from hvit.assets import DEFAULT_MODEL, SAMPLE_GROUPS, sample_images
    from hvit.explain import AttributionSettings, attention_views, figures
    from hvit.explain.attribution import compute_attribution
    from hvit.explain.head_stats import head_statistics, summarize_by_stage
    from hvit.explain.rollout import attention_rollout

    torch.manual_seed(0)
    name = model_name or DEFAULT_MODEL
    model = demo.load_shipped_model(name)
    group = SAMPLE_GROUPS[0] if name == DEFAULT_MODEL else SAMPLE_GROUPS[1]
    image = demo.load_image(sample_images(group)[sample])
    views = attention_views(model, image)
    shown = views.images[0]
    size = views.image_size[0]
    pixel = (size // 2, size // 2)
    stage, n = 0, views.num_stages
    rollout = attention_rollout(model, image)
    roll_maps = [rollout.token_map(s) for s in range(n)]
    settings = AttributionSettings(n_steps=16, nt_samples=8, shap_samples=8)
    methods = {"Saliency": "saliency", "Integrated gradients": "integrated_gradients", "Grad-CAM": "grad_cam"}
    results = {
        label: compute_attribution(model, image, method=m, stage=-1, settings=settings)
        for label, m in methods.items()
    }
    maps = {label: r.map[0].numpy() for label, r in results.items()}
    signed = {label: bool(r.signed) for label, r in results.items()}
    record = views.groups(stage)[0]

    figs = {
        "attention: query": demo.query_figure(
            shown,
            views.query_attention(stage, -1, None, pixel=pixel, on="tokens"),
            pixel,
            record.query_grid,
            views.strides[stage],
            title="Where the query looks",
            height=420,
            uniform=views.uniform_level(stage),
        ),
        "attention: key grid": demo.key_grid_figure(
            views.query_attention(stage, -1, None, pixel=pixel, on="keys"),
            title="The same query on the key grid",
            height=420,
            uniform=views.uniform_level(stage),
        ),
        "attention: every head": figures.head_grid_figure(
            views, stage, -1, kind="query", pixel=pixel, cols=3, panel_height=290, opacity_slider=False
        ),
        "attention: rollout": figures.stage_panels_figure(
            shown,
            roll_maps,
            cols=2,
            panel_height=300,
            opacity_slider=False,
            uniform=views.rollout_uniform_level,
        ),
        "attention: head stats": figures.head_stats_figure(
            summarize_by_stage(head_statistics(model, image)), title=""
        ),
        "attention: attributions": figures.attribution_grid_figure(shown, maps, signed, cols=3),
        "attention: randomisation": figures.twin_figure(
            shown, {k: (m, np.flip(m, 1).copy()) for k, m in maps.items()}, signed
        ),
        "lesson: patches": demo.patch_grid_figure(shown, record.query_grid, views.strides[0], height=420),
        "lesson: key footprints": figures.footprint_figure(
            shown, views.footprint(stage, -1, 0, on="tokens"), key_grid=record.key_grid
        ),
        "lesson: every stage": figures.stage_panels_figure(
            shown,
            views.stage_maps(kind="query", pixel=pixel, on="tokens"),
            cols=2,
            panel_height=280,
            opacity_slider=False,
            uniform=[views.uniform_level(s) for s in range(n)],
        ),
        "lesson: rollout": figures.overlay_figure(
            shown, roll_maps[-1], opacity=0.6, height=440, uniform=views.rollout_uniform_level
        ),
        "gradio: stages": figures.stage_panels_figure(
            shown,
            views.stage_maps(kind="query", pixel=pixel, on="tokens"),
            cols=min(n, 4),
            panel_height=360,
            uniform=[views.uniform_level(s) for s in range(n)],
        ),
        "gradio: heads": figures.head_grid_figure(
            views, stage, kind="query", pixel=pixel, cols=4, panel_height=360
        ),
        "training: snapshots": demo.snapshot_figure(
            [(e, roll_maps[-1], "circle", 0.9) for e in (0, 1, 2)], shown, views.rollout_uniform_level
        ),
    }
    return figs


async def _draw_times(texts: dict[str, str], runs: int, width: int) -> dict[str, list[float]]:
    from playwright.async_api import async_playwright

    html = f"<html><head><script>{plotly_js().read_text()}</script></head><body></body></html>"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page(viewport=VIEWPORT)
            await page.set_content(html)
            # one warm-up draw, so the first figure does not pay for plotly.js's own start-up
            await page.evaluate(DRAW_JS, [next(iter(texts.values())), 1, width])
            return {name: await page.evaluate(DRAW_JS, [text, runs, width]) for name, text in texts.items()}
        finally:
            await browser.close()


def measure(figs: dict, runs: int = 7, width: int = 900) -> list[dict]:
    """JSON size and median drawing time of every figure (see the module docstring).

    Returns:
        One row per figure: ``figure``, ``json_kb``, ``draw_ms`` (median), ``draw_ms_min``.
    """
    texts = {name: fig.to_json() for name, fig in figs.items()}
    times = asyncio.run(_draw_times(texts, runs, width))
    return [
        {
            "figure": name,
            "json_kb": len(texts[name]) / 1000,
            "draw_ms": statistics.median(times[name]),
            "draw_ms_min": min(times[name]),
        }
        for name in figs
    ]


def format_rows(rows: list[dict]) -> str:
    """The table ``main`` prints, with its summary line last."""
    width = max(len(r["figure"]) for r in rows)
    lines = [f"{'figure':<{width}}  {'JSON KB':>8}  {'draw ms (median)':>16}  {'min':>6}"]
    lines += [
        f"{r['figure']:<{width}}  {r['json_kb']:8.1f}  {r['draw_ms']:16.1f}  {r['draw_ms_min']:6.1f}"
        for r in rows
    ]
    total_kb = sum(r["json_kb"] for r in rows)
    total_ms = sum(r["draw_ms"] for r in rows)
    lines.append(f"figures: {len(rows)} figures, {total_kb:.0f} KB in all, draw median sum {total_ms:.0f} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hvit.bench figures", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model", default=None, help="a shipped model (default: the apps' default)")
    parser.add_argument("--sample", type=int, default=0, help="index of the sample image")
    parser.add_argument("--runs", type=int, default=7, help="draws per figure (the median is reported)")
    parser.add_argument("--width", type=int, default=900, help="width of the figure's div in pixels")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    rows = measure(app_figures(args.model, args.sample), args.runs, args.width)
    print(format_rows(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
