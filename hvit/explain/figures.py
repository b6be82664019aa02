"""Plotly figures of attention, attributions and their checks, shared by the Streamlit pages and the
Gradio demo (both render a ``go.Figure``; neither does any tensor maths of its own).

Conventions:
- Images are (H, W, 3) arrays in [0, 1] (or uint8); maps are (H, W) arrays or tensors.
- Overlays draw the map as a heat map over the image; an in-figure slider sets its opacity (the
  "transparency control"), so it works the same in both apps without a callback.
- Signed maps use a diverging scale centred on zero; unsigned maps a sequential one.
- Panels that are compared with each other (the heads of a layer, the stages of a rollout) share one
  colour scale by default: normalising each panel on its own would hide a near-silent head.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

if TYPE_CHECKING:
    from hvit.explain.views import AttentionViews

SEQUENTIAL = "Inferno"
DIVERGING = "RdBu_r"
OPACITY_STEPS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def _np(a: np.ndarray | torch.Tensor) -> np.ndarray:
    return (
        a.detach().float().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=np.float32)
    )


def _uint8_image(image: np.ndarray | torch.Tensor) -> np.ndarray:
    img = (
        _np(image)
        if isinstance(image, torch.Tensor) or np.asarray(image).dtype != np.uint8
        else np.asarray(image)
    )
    if img.dtype != np.uint8:
        img = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return img


def _scale(maps: Sequence[np.ndarray], signed: bool) -> dict:
    """zmin / zmax (and zmid) shared by ``maps``; symmetric around 0 for signed maps."""
    lo = min(float(np.nanmin(m)) for m in maps)
    hi = max(float(np.nanmax(m)) for m in maps)
    if signed:
        r = max(abs(lo), abs(hi)) or 1.0
        return {"zmin": -r, "zmax": r, "zmid": 0.0}
    if hi <= lo:
        hi = lo + 1e-12  # a flat map keeps a valid colour range (and stays visibly flat)
    return {"zmin": lo, "zmax": hi}


def _opacity_slider(heat_traces: list[int], opacity: float) -> list[dict]:
    """A layout slider restyling the opacity of the heat-map traces."""
    steps = [
        {"label": f"{o:.1f}", "method": "restyle", "args": [{"opacity": o}, heat_traces]}
        for o in OPACITY_STEPS
    ]
    active = min(range(len(OPACITY_STEPS)), key=lambda i: abs(OPACITY_STEPS[i] - opacity))
    return [{"active": active, "currentvalue": {"prefix": "map opacity: "}, "pad": {"t": 30}, "steps": steps}]


def _image_axes(fig: go.Figure) -> None:
    """Image orientation (row 0 at the top) and no ticks, on every axis of the figure."""
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed")


def overlay_figure(
    image: np.ndarray | torch.Tensor | None,
    heat: np.ndarray | torch.Tensor,
    opacity: float = 0.5,
    title: str = "",
    signed: bool = False,
    colorscale: str | None = None,
    opacity_slider: bool = True,
    height: int = 420,
) -> go.Figure:
    """A map laid over the image it explains.

    Args:
        image: (H, W, 3) in [0, 1] or uint8, or ``None`` for the map alone.
        heat: (H, W) map at the image's resolution.
        opacity: initial opacity of the map (0: image only, 1: map only).
        title: figure title.
        signed: diverging colours centred on 0 (for signed attributions).
        colorscale: override the colour scale.
        opacity_slider: add a slider that changes the opacity in the figure itself.
        height: figure height in pixels.

    Returns:
        ``go.Figure`` with an ``Image`` trace (when ``image`` is given) and a ``Heatmap`` trace.
    """
    z = _np(heat)
    fig = go.Figure()
    if image is not None:
        fig.add_trace(go.Image(z=_uint8_image(image), hoverinfo="skip"))
    fig.add_trace(
        go.Heatmap(
            z=z,
            opacity=opacity,
            colorscale=colorscale or (DIVERGING if signed else SEQUENTIAL),
            hovertemplate="y %{y}, x %{x}: %{z:.4g}<extra></extra>",
            **_scale([z], signed),
        )
    )
    fig.update_layout(title=title, height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    if opacity_slider:
        fig.update_layout(sliders=_opacity_slider([len(fig.data) - 1], opacity))
    _image_axes(fig)
    return fig


def panel_grid_figure(
    maps: Sequence[np.ndarray | torch.Tensor],
    titles: Sequence[str] | None = None,
    image: np.ndarray | torch.Tensor | None = None,
    cols: int = 4,
    opacity: float = 0.6,
    shared_scale: bool = True,
    signed: bool = False,
    title: str = "",
    opacity_slider: bool = True,
    panel_height: int = 220,
) -> go.Figure:
    """Facets: one panel per map, optionally over the same image, on one shared colour scale.

    Maps may have different shapes (e.g. the key grids of a multi-scale layer's head groups); an image
    is only drawn under maps of its own size.

    Args:
        maps: the maps, one per panel.
        titles: one title per panel.
        image: (H, W, 3) drawn under every map of the same size.
        cols: panels per row.
        opacity: initial map opacity (when an image is drawn).
        shared_scale: one colour range for all panels (default), else one per panel.
        signed: diverging colours centred on 0.
        title: figure title.
        opacity_slider: add the opacity slider (when an image is drawn).
        panel_height: pixels per row.

    Returns:
        ``go.Figure`` whose heat-map traces follow the order of ``maps``.
    """
    zs = [_np(m) for m in maps]
    n = len(zs)
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=list(titles) if titles else None,
        horizontal_spacing=0.02,
        vertical_spacing=0.08,
    )
    img = _uint8_image(image) if image is not None else None
    shared = _scale(zs, signed) if shared_scale else None
    heat_traces = []
    for i, z in enumerate(zs):
        r, c = i // cols + 1, i % cols + 1
        under = img is not None and img.shape[:2] == z.shape
        if under:
            fig.add_trace(go.Image(z=img, hoverinfo="skip"), row=r, col=c)
        scale = shared or _scale([z], signed)
        fig.add_trace(
            go.Heatmap(
                z=z,
                opacity=opacity if under else 1.0,
                colorscale=DIVERGING if signed else SEQUENTIAL,
                showscale=(i == 0) if shared_scale else False,
                name=titles[i] if titles else f"panel {i}",
                hovertemplate="y %{y}, x %{x}: %{z:.4g}<extra></extra>",
                **scale,
            ),
            row=r,
            col=c,
        )
        heat_traces.append(len(fig.data) - 1)
    fig.update_layout(
        title=title, height=rows * panel_height + 80, margin={"l": 10, "r": 10, "t": 60, "b": 10}
    )
    if img is not None and opacity_slider:
        fig.update_layout(sliders=_opacity_slider(heat_traces, opacity))
    _image_axes(fig)
    return fig


def head_grid_figure(
    views: AttentionViews,
    stage: int,
    block: int = -1,
    kind: str = "received",
    pixel: tuple[int, int] | None = None,
    **kwargs: Any,
) -> go.Figure:
    """Every head of one layer over the input (an `AttentionViews`), titled with each head's key grid.

    ``kind`` is "received" or "query" (the attention of the query at ``pixel``); further keyword
    arguments go to `panel_grid_figure`.
    """
    maps = views.head_maps(stage, block, kind, pixel)
    titles = []
    for h in range(maps.shape[0]):
        record, _ = views.head_group(stage, block, h)
        titles.append(f"head {h} · keys {record.key_grid[0]}x{record.key_grid[1]}")
    kwargs.setdefault("title", f"Stage {stage + 1}, block {block % views.num_blocks(stage) + 1}: every head")
    return panel_grid_figure(list(maps), titles, image=views.images[0], **kwargs)


def stage_panels_figure(
    image: np.ndarray | torch.Tensor | None,
    maps: Sequence[np.ndarray | torch.Tensor],
    titles: Sequence[str] | None = None,
    **kwargs: Any,
) -> go.Figure:
    """One panel per stage (e.g. `AttentionViews.stage_maps` or `AttentionRollout` maps at image size)."""
    titles = list(titles) if titles else [f"stage {i + 1}" for i in range(len(maps))]
    kwargs.setdefault("cols", len(maps))
    return panel_grid_figure(maps, titles, image=image, **kwargs)


def footprint_figure(
    image: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    key: int | None = None,
    key_grid: tuple[int, int] | None = None,
    opacity: float = 0.45,
    title: str = "Key footprints",
) -> go.Figure:
    """Which pixels each reduced key summarises: a label image over the input, one key highlighted.

    Args:
        image: (H, W, 3).
        labels: (H, W) key index of each pixel (-1: no key), from `AttentionViews.footprint`.
        key: key to highlight (its footprint 1, the rest 0).
        key_grid: (h, w) of the keys; colours the footprints as a checkerboard so every boundary shows
            (otherwise neighbouring keys get neighbouring colours of one scale).
    """
    lab = _np(labels)
    if key is not None:
        z = np.where(lab == key, 1.0, 0.0)
        fig = overlay_figure(image, z, opacity, title, colorscale="Blues")
        fig.data[-1].hovertemplate = "y %{y}, x %{x}: in key " + str(key) + ": %{z}<extra></extra>"
        return fig
    if key_grid is not None:
        z = np.where(lab < 0, np.nan, (lab // key_grid[1] + lab % key_grid[1]) % 2)
    else:
        z = np.where(lab < 0, np.nan, lab)
    fig = overlay_figure(image, z, opacity, title, colorscale="Viridis")
    fig.data[-1].update(
        customdata=lab, hovertemplate="y %{y}, x %{x}: key %{customdata}<extra></extra>", showscale=False
    )
    return fig


def curves_figure(curves: Mapping[str, Mapping[str, Sequence[float]]], title: str = "") -> go.Figure:
    """Deletion and insertion curves, one line per method (`EvaluationReport.curves`).

    Each method's legend entry carries its AUCs; lines of one method share a legend group, so a click
    hides both.
    """
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["Deletion (lower is better)", "Insertion (higher is better)"]
    )
    for i, (name, c) in enumerate(curves.items()):
        x = np.asarray(c["fractions"], dtype=float)
        for col, kind in ((1, "deletion"), (2, "insertion")):
            y = np.asarray(c[kind], dtype=float)
            auc = float(np.trapezoid(y, x))
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines",
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    hovertemplate=f"{name} ({kind} AUC {auc:.3f})<br>%{{x:.2f}} of pixels: p=%{{y:.3f}}<extra></extra>",
                    line={"color": _palette(i)},
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="fraction of pixels", range=[0, 1])
    fig.update_yaxes(title_text="probability of the class", range=[0, 1], col=1)
    fig.update_layout(title=title, height=420)
    return fig


def _palette(i: int) -> str:
    import plotly.express as px

    colours = px.colors.qualitative.Dark24
    return colours[i % len(colours)]


def head_stats_figure(rows: Sequence, title: str = "Near and far heads") -> go.Figure:
    """Mean attention distance and normalised entropy of every head, stage by stage.

    Args:
        rows: `HeadStat` objects or the dicts of `hvit.explain.head_stats.summarize_by_stage`.
    """
    recs = [r if isinstance(r, Mapping) else r.to_dict() for r in rows]
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["Mean attention distance (pixels)", "Normalised entropy"]
    )
    heads = sorted({r["head"] for r in recs})
    for i, h in enumerate(heads):
        mine = [r for r in recs if r["head"] == h]
        x = [r["stage"] + 1 + 0.06 * (i - (len(heads) - 1) / 2) for r in mine]  # jitter heads apart
        text = [
            f"stage {r['stage'] + 1}, head {h}" + (f", block {r['block'] + 1}" if "block" in r else "")
            for r in mine
        ]
        for col, key in ((1, "mean_distance"), (2, "normalized_entropy")):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=[r[key] for r in mine],
                    mode="markers",
                    name=f"head {h}",
                    legendgroup=f"head {h}",
                    showlegend=col == 1,
                    text=text,
                    marker={"color": _palette(i), "size": 9},
                    hovertemplate="%{text}: %{y:.3g}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    stages = sorted({r["stage"] + 1 for r in recs})
    fig.update_xaxes(title_text="stage", tickvals=stages)
    fig.update_yaxes(range=[0, 1.05], col=2)
    fig.update_layout(title=title, height=400)
    return fig


def ablation_figure(results: Sequence, title: str = "Switching one head off") -> go.Figure:
    """Change of the class probability when each head is switched off (`head_ablation_scan`)."""
    recs = [r if isinstance(r, Mapping) else r.to_dict() for r in results]
    labels = [f"S{r['stage'] + 1} h{','.join(str(h) for h in r['heads'])}" for r in recs]
    deltas = [r["delta"] for r in recs]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=deltas,
            marker={"color": [_palette(r["stage"]) for r in recs]},
            hovertemplate="%{x}: Δp = %{y:+.4f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title, yaxis_title="Δ probability of the class", xaxis_title="stage, head", height=380
    )
    return fig


def attribution_grid_figure(
    image: np.ndarray | torch.Tensor,
    maps: Mapping[str, np.ndarray | torch.Tensor],
    signed: Mapping[str, bool] | None = None,
    cols: int = 4,
    opacity: float = 0.6,
) -> go.Figure:
    """Several methods' maps of one image side by side.

    Methods measure different things in different units, so each panel keeps its own colour range
    (symmetric around 0 for signed methods) and its title states that range: a near-zero map is
    then visibly near zero instead of being stretched to look like the others.
    """
    names = list(maps)
    zs = [_np(maps[n]) for n in names]
    titles = [
        f"{n} [{float(np.nanmin(z)):.2g}, {float(np.nanmax(z)):.2g}]" for n, z in zip(names, zs, strict=True)
    ]
    signed = signed or {}
    fig = panel_grid_figure(zs, titles, image=image, cols=cols, opacity=opacity, shared_scale=False)
    # Signed panels: diverging colours centred on 0, each with its own symmetric range.
    heat = [t for t in fig.data if isinstance(t, go.Heatmap)]
    for trace, name, z in zip(heat, names, zs, strict=True):
        if signed.get(name, False):
            trace.update(colorscale=DIVERGING, **_scale([z], True))
    return fig
