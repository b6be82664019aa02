"""Plotly figures of attention, attributions and their checks, shared by the Streamlit pages and the
Gradio demo (both render a ``go.Figure``; neither does any tensor maths of its own).

Conventions:
- Images are (H, W, 3) arrays in [0, 1] (or uint8); maps are (H, W) arrays or tensors at the image's
  resolution, or a `TokenMap` (one value per token, and the pixels each token covers).
- Light for the browser, with nothing lost: an image goes out once as a PNG (a data URI), a map that is
  constant over each token's pixels is drawn one cell per token (the same pixels, 16x fewer cells for
  stride 4) with the token's row, column and pixels in its hover, and values are rounded to the
  `SIGNIFICANT_DIGITS` a reader can see.
- Overlays draw the map as a heat map over the image; an in-figure slider sets its opacity (the
  "transparency control"), so it works the same in both apps without a callback.
- Colours come from `hvit.explain.colors`: sequential maps dark at zero, signed maps diverging around
  zero, attention as a ratio to uniform attention (pass ``uniform``: the level of one key, 1/keys).
- Panels that are compared with each other (the heads of a layer, the stages of a rollout, a map and
  its randomised twin) share one colour scale and one colour bar that says so; panels on their own
  scales get a colour bar each.
- Stages, blocks and heads are 0-based in the arguments and numbered from 1 in everything shown.
- Map panels keep the image's aspect ratio (square pixels).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image
from plotly.subplots import make_subplots

from hvit.explain.colors import ColourScale, attention_scale, map_scale, uniform_ratio
from hvit.explain.geometry import TokenMap

if TYPE_CHECKING:
    from hvit.explain.views import AttentionViews

OPACITY_STEPS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
TITLE_FONT = {"size": 13}
# A colour bar under a single map, as wide as the figure's plot area.
HORIZONTAL_BAR = {"orientation": "h", "x": 0.5, "xanchor": "center", "y": -0.02, "yanchor": "top", "len": 1.0}
# Values sent to the browser keep this many significant digits: more than any hover or colour shows.
SIGNIFICANT_DIGITS = 4
MapLike = np.ndarray | torch.Tensor | TokenMap
# The hover of a map cell drawn per token: the token and the pixels it covers (customdata[0:6]).
TOKEN_HOVER = (
    "token (%{customdata[0]}, %{customdata[1]}) · pixels y %{customdata[2]}–%{customdata[3]}, "
    "x %{customdata[4]}–%{customdata[5]}"
)


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


def rounded(values: np.ndarray | torch.Tensor, digits: int = SIGNIFICANT_DIGITS) -> np.ndarray:
    """``values`` rounded to ``digits`` significant digits (float64; NaN and 0 stay as they are)."""
    a = np.asarray(_np(values), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.floor(np.log10(np.abs(a)))
    unit = np.where(
        np.isfinite(exponent), 10.0 ** (np.nan_to_num(exponent, posinf=0, neginf=0) - digits + 1), 1.0
    )
    return np.round(a / unit) * unit


def image_source(image: np.ndarray | torch.Tensor) -> str:
    """The image as a PNG data URI, for ``go.Image(source=...)``.

    A few KB that the browser decodes once, instead of an (H, W, 3) array that plotly.js paints onto a
    canvas and encodes as a PNG again on every draw.
    """
    buffer = io.BytesIO()
    Image.fromarray(_uint8_image(image)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_trace(image: np.ndarray | torch.Tensor | str, **kwargs: Any) -> go.Image:
    """An ``Image`` trace of ``image`` (an array, or an `image_source` already encoded).

    Pixel (y, x) is centred on the axis coordinates (x, y), as for ``go.Image(z=...)``, so maps drawn
    over it line up. Hovering over it shows nothing (the map on top explains itself).
    """
    source = image if isinstance(image, str) else image_source(image)
    return go.Image(source=source, x0=0, y0=0, dx=1, dy=1, hoverinfo="skip", **kwargs)


def _image_size(m: MapLike) -> tuple[int, int]:
    """The (S_h, S_w) pixels a map covers."""
    if isinstance(m, TokenMap):
        return tuple(m.image_size)
    return tuple(np.shape(m)[-2:])


def _heat(m: MapLike, uniform: float | None) -> tuple[np.ndarray, dict[str, Any]]:
    """The values a map is drawn with, and the ``go.Heatmap`` arguments that place and explain them.

    A pixel map is drawn one cell per pixel, pixel (y, x) centred on (x, y); a `TokenMap` one cell per
    token, over exactly the pixels the token covers, its hover naming the token and those pixels.
    Attention (``uniform`` given) is drawn as a ratio to uniform, its probability in the hover.
    """
    raw = _np(m.values if isinstance(m, TokenMap) else m)
    if raw.ndim != 2:
        raise ValueError(f"a map must be 2-D (rows, columns), got shape {raw.shape}")
    z = rounded(raw if uniform is None else uniform_ratio(raw, uniform))
    if not isinstance(m, TokenMap):
        where, value, custom = "y %{y}, x %{x}", "%{z:.4g}", None
        if uniform is not None:
            value, custom = "%{z:.2f}× uniform (p %{customdata:.3g})", rounded(raw).astype(np.float32)
        return z, {
            "z": z.astype(np.float32),
            "customdata": custom,
            "hovertemplate": f"{where}: {value}<extra></extra>",
        }
    rows, cols = (np.asarray(e) for e in m.edges())
    i, j = np.meshgrid(np.arange(raw.shape[0]), np.arange(raw.shape[1]), indexing="ij")
    # per token: row, column, and its first and last pixel row and column
    cells = [i, j, rows[i], rows[i + 1] - 1, cols[j], cols[j + 1] - 1]
    value = "%{z:.4g}"
    if uniform is not None:
        cells.append(rounded(raw))
        value = "%{z:.2f}× uniform (p %{customdata[6]:.3g})"
    return z, {
        "z": z.astype(np.float32),
        "x": cols - 0.5,  # cell edges: pixel centres sit on integer coordinates
        "y": rows - 0.5,
        "customdata": np.stack(cells, axis=-1).astype(np.float32),  # (H, W, 6 or 7)
        "hovertemplate": f"{TOKEN_HOVER}: {value}<extra></extra>",
    }


def _uniforms(uniform: float | Sequence[float] | None, n: int) -> list[float | None]:
    """One uniform level (or None) per map."""
    if uniform is None or isinstance(uniform, (int, float)):
        return [uniform] * n
    levels = [float(u) for u in uniform]
    if len(levels) != n:
        raise ValueError(f"uniform must give one level per map ({n}), got {len(levels)}")
    return levels


def _scale_of(zs: Sequence[np.ndarray], signed: bool, attention: bool, title: str = "") -> ColourScale:
    if attention:
        return attention_scale(zs, title or "× uniform")
    return map_scale(zs, signed, title)


def _opacity_slider(heat_traces: list[int], opacity: float) -> list[dict]:
    """A layout slider restyling the opacity of the heat-map traces."""
    steps = [
        {"label": f"{o:.1f}", "method": "restyle", "args": [{"opacity": o}, heat_traces]}
        for o in OPACITY_STEPS
    ]
    active = min(range(len(OPACITY_STEPS)), key=lambda i: abs(OPACITY_STEPS[i] - opacity))
    return [{"active": active, "currentvalue": {"prefix": "map opacity: "}, "pad": {"t": 30}, "steps": steps}]


def _image_axes(fig: go.Figure) -> None:
    """Image orientation (row 0 at the top), square pixels and no ticks, on every axis of the figure."""
    fig.update_xaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False, autorange="reversed")
    for name in fig.layout:
        if name.startswith("yaxis"):
            anchor = fig.layout[name].anchor or "x"
            fig.layout[name].update(scaleanchor=anchor, scaleratio=1, constrain="domain")


def overlay_figure(
    image: np.ndarray | torch.Tensor | None,
    heat: MapLike,
    opacity: float = 0.5,
    title: str = "",
    signed: bool = False,
    colorscale: str | None = None,
    opacity_slider: bool = True,
    height: int = 420,
    uniform: float | None = None,
    colorbar_title: str = "",
) -> go.Figure:
    """A map laid over the image it explains.

    Args:
        image: (H, W, 3) in [0, 1] or uint8, or ``None`` for the map alone.
        heat: (H, W) map at the image's resolution, or a `TokenMap` over it (drawn one cell per token).
        opacity: initial opacity of the map (0: image only, 1: map only).
        title: figure title.
        signed: diverging colours centred on 0 (for signed attributions).
        colorscale: override the colour scale (e.g. for a mask that is not a measurement).
        opacity_slider: add a slider that changes the opacity in the figure itself.
        height: figure height in pixels.
        uniform: for attention, the level of uniform attention (1/keys): the map is drawn as a
            ratio to it (`hvit.explain.colors.attention_scale`).
        colorbar_title: what the colour measures (default "× uniform" for attention).

    Returns:
        ``go.Figure`` with an ``Image`` trace (when ``image`` is given) and a ``Heatmap`` trace.
    """
    z, heat_kwargs = _heat(heat, uniform)
    scale = _scale_of([z], signed, uniform is not None, colorbar_title)
    fig = go.Figure()
    if image is not None:
        fig.add_trace(image_trace(image))
    fig.add_trace(
        go.Heatmap(
            **heat_kwargs,
            opacity=opacity,
            # under the map: a single map is often drawn in a narrow column, where a bar beside it
            # would take a third of the width
            **scale.trace_kwargs(**HORIZONTAL_BAR),
        )
    )
    if colorscale is not None:
        fig.data[-1].update(colorscale=colorscale)
    lines = title.count("<br>") + 1 if title else 0
    bar_px, slider_px = 60, 90 if opacity_slider else 0
    top = 12 + 20 * lines
    fig.update_layout(
        title={"text": title, "font": TITLE_FONT, "x": 0.5, "xanchor": "center"},
        height=height,
        margin={"l": 10, "r": 10, "t": top, "b": bar_px + slider_px},
    )
    if opacity_slider:  # below the colour bar, not over it
        (slider,) = _opacity_slider([len(fig.data) - 1], opacity)
        slider.update(
            {"y": -bar_px / max(height - top - bar_px - slider_px, 1), "yanchor": "top", "pad": {"t": 10}}
        )
        fig.update_layout(sliders=[slider])
    _image_axes(fig)
    return fig


def _panel_bar_placement(fig: go.Figure, row: int, col: int) -> dict[str, Any]:
    """Where a panel's own colour bar goes: just right of the panel, as tall as it."""
    sub = fig.get_subplot(row, col)
    (_, x1), (y0, y1) = sub.xaxis.domain, sub.yaxis.domain
    return {"x": x1 + 0.005, "xanchor": "left", "y": (y0 + y1) / 2, "yanchor": "middle", "len": y1 - y0}


def panel_grid_figure(
    maps: Sequence[MapLike],
    titles: Sequence[str] | None = None,
    image: np.ndarray | torch.Tensor | None = None,
    cols: int = 4,
    opacity: float = 0.6,
    shared_scale: bool = True,
    signed: bool | Sequence[bool] = False,
    title: str = "",
    opacity_slider: bool = True,
    panel_height: int = 280,
    uniform: float | Sequence[float] | None = None,
    colorbar_title: str = "",
    share_groups: Sequence[int] | None = None,
) -> go.Figure:
    """Facets: one panel per map, optionally over the same image, on one shared colour scale.

    Maps may have different shapes (e.g. the key grids of a multi-scale layer's head groups); an image
    is only drawn under maps of its own size.

    Args:
        maps: the maps, one per panel: arrays, or `TokenMap` s (drawn one cell per token).
        titles: one title per panel.
        image: (H, W, 3) drawn under every map of the same size.
        cols: panels per row.
        opacity: initial map opacity (when an image is drawn).
        shared_scale: one colour range and one colour bar for all panels (default), else one each.
        signed: diverging colours centred on 0 (one flag for all, or one per map).
        title: figure title.
        opacity_slider: add the opacity slider (when an image is drawn).
        panel_height: pixels per row (panels are square: this also bounds their width).
        uniform: attention maps: the uniform level (1/keys), one for all or one per map; every map is
            then drawn as a ratio to its own uniform level, so panels with different key grids share
            one meaningful scale.
        colorbar_title: what the colour measures.
        share_groups: instead of ``shared_scale``, a group number per map: maps of one group share
            a scale and one colour bar (e.g. a map and its randomised twin).

    Returns:
        ``go.Figure`` whose heat-map traces follow the order of ``maps``.
    """
    n = len(maps)
    flags = [bool(signed)] * n if isinstance(signed, bool) else [bool(f) for f in signed]
    shown = [_heat(m, u) for m, u in zip(maps, _uniforms(uniform, n), strict=True)]
    zs = [z for z, _ in shown]
    if share_groups is None:
        share_groups = [0] * n if shared_scale else list(range(n))
    members: dict[int, list[int]] = {}
    for i, g in enumerate(share_groups):
        members.setdefault(g, []).append(i)
    scales = {
        g: _scale_of([zs[i] for i in idx], flags[idx[0]], uniform is not None, colorbar_title)
        for g, idx in members.items()
    }
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    one_bar = len(members) == 1
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=list(titles) if titles else None,
        horizontal_spacing=0.03 if one_bar else 0.09,  # room for a colour bar beside every panel
        vertical_spacing=min(0.3, 60 / (rows * panel_height)) if rows > 1 else 0.0,
    )
    img = _uint8_image(image) if image is not None else None
    source = image_source(img) if img is not None else ""  # encoded once, drawn under every panel
    heat_traces = []
    for i, m in enumerate(maps):
        r, c = i // cols + 1, i % cols + 1
        under = img is not None and img.shape[:2] == _image_size(m)
        if under:
            fig.add_trace(image_trace(source), row=r, col=c)
        group = members[share_groups[i]]
        # A group's colour bar goes beside its last panel; a bar shared by several panels says so.
        show = i == group[-1]
        scale = scales[share_groups[i]]
        if show and len(group) > 1:
            what = "both panels" if len(group) == 2 else "all panels" if one_bar else "the row"
            scale = replace(scale, title=f"{scale.title} ({what})" if scale.title else f"one scale: {what}")
        placement = {} if one_bar else _panel_bar_placement(fig, r, c)
        fig.add_trace(
            go.Heatmap(
                **shown[i][1],
                opacity=opacity if under else 1.0,
                name=titles[i] if titles else f"panel {i + 1}",
                **scale.trace_kwargs(showscale=show, **placement),
            ),
            row=r,
            col=c,
        )
        heat_traces.append(len(fig.data) - 1)
    for annotation in fig.layout.annotations:  # the panel titles
        annotation.font = TITLE_FONT
    fig.update_layout(
        title={"text": title, "font": TITLE_FONT},
        height=rows * panel_height
        + (60 if title else 30)
        + (60 if img is not None and opacity_slider else 0),
        margin={"l": 10, "r": 10, "t": 60 if title else 30, "b": 10},
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

    ``kind`` is "received" or "query" (the attention of the query at ``pixel``). Each head is drawn as
    a ratio to its own uniform level (1/keys), on one scale shared by every head. Further keyword
    arguments go to `panel_grid_figure`.
    """
    heads = views.head_maps(stage, block, kind, pixel, on="tokens")  # (heads, H, W): one cell per token
    maps = [TokenMap(values, heads.stride, heads.image_size) for values in heads.values]
    titles, uniform = [], []
    for h in range(len(maps)):
        record, _ = views.head_group(stage, block, h)
        titles.append(f"head {h + 1} · keys {record.key_grid[0]}x{record.key_grid[1]}")
        uniform.append(views.uniform_level(stage, block, h))
    what = "attention received" if kind == "received" else "where the query looks"
    kwargs.setdefault(
        "title", f"Stage {stage + 1}, block {block % views.num_blocks(stage) + 1}: {what}, every head"
    )
    kwargs.setdefault("uniform", uniform)
    return panel_grid_figure(maps, titles, image=views.images[0], **kwargs)


def stage_panels_figure(
    image: np.ndarray | torch.Tensor | None,
    maps: Sequence[MapLike],
    titles: Sequence[str] | None = None,
    **kwargs: Any,
) -> go.Figure:
    """One panel per stage (e.g. `AttentionViews.stage_maps(on="tokens")` or `AttentionRollout.token_map`
    of each stage; maps at image size are drawn one cell per pixel).

    Pass ``uniform`` (one level per stage, or one for all) to draw attention against uniform attention.
    """
    titles = list(titles) if titles else [f"stage {i + 1}" for i in range(len(maps))]
    kwargs.setdefault("cols", len(maps))
    return panel_grid_figure(maps, titles, image=image, **kwargs)


def twin_figure(
    image: np.ndarray | torch.Tensor | None,
    pairs: Mapping[str, tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]],
    signed: Mapping[str, bool] | None = None,
    labels: tuple[str, str] = ("trained model", "random weights"),
    opacity: float = 0.6,
    panel_height: int = 280,
    cols: int = 2,
) -> go.Figure:
    """Each method's map next to its twin (e.g. the randomised model's), one row per method.

    The two maps of a row share one colour scale and one colour bar, so a change between them is a
    change in the map, never in the scale.

    Args:
        image: (H, W, 3) drawn under both maps.
        pairs: method name -> (map, twin map).
        signed: method name -> diverging colours centred on 0.
        labels: what the two columns show.
        opacity: initial map opacity.
        panel_height: pixels per row.
        cols: 2 (a map beside its twin) or 1 (one under the other, for a narrow column).
    """
    signed = signed or {}
    names = list(pairs)
    maps = [m for n in names for m in pairs[n]]
    titles = [f"{n}: {label}" for n in names for label in labels]
    return panel_grid_figure(
        maps,
        titles,
        image=image,
        cols=cols,
        opacity=opacity,
        signed=[signed.get(n, False) for n in names for _ in labels],
        share_groups=[i for i in range(len(names)) for _ in labels],
        opacity_slider=False,
        panel_height=panel_height,
    )


def footprint_figure(
    image: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor | TokenMap,
    key: int | None = None,
    key_grid: tuple[int, int] | None = None,
    opacity: float = 0.45,
    title: str = "Key footprints",
) -> go.Figure:
    """Which pixels each reduced key summarises: a label image over the input, one key highlighted.

    Args:
        image: (H, W, 3).
        labels: (H, W) key index of each pixel (-1: no key), from `AttentionViews.footprint`, or the
            same per token (``footprint(..., on="tokens")``, drawn one cell per token).
        key: key to highlight (its footprint 1, the rest 0).
        key_grid: (h, w) of the keys; colours the footprints as a checkerboard so every boundary shows
            (otherwise neighbouring keys get neighbouring colours of one scale).
    """
    per_token = isinstance(labels, TokenMap)
    lab = _np(labels.values if per_token else labels)
    if key is not None:
        z, colorscale = np.where(lab == key, 1.0, 0.0), "Blues"
    elif key_grid is not None:
        z, colorscale = np.where(lab < 0, np.nan, (lab // key_grid[1] + lab % key_grid[1]) % 2), "Viridis"
    else:
        z, colorscale = np.where(lab < 0, np.nan, lab), "Viridis"
    fig = overlay_figure(
        image,
        TokenMap(z, labels.stride, labels.image_size) if per_token else z,
        opacity,
        title,
        colorscale=colorscale,
    )
    trace = fig.data[-1]
    if per_token:  # the token's row, column and pixels (as `overlay_figure` gave them), then its key
        custom = np.concatenate([np.asarray(trace.customdata), lab[..., None].astype(np.float32)], axis=-1)
        where, key_of_cell = TOKEN_HOVER, "%{customdata[6]}"
    else:
        custom, where, key_of_cell = lab, "y %{y}, x %{x}", "%{customdata}"
    what = f"in key {key}: %{{z}}" if key is not None else f"key {key_of_cell}"
    trace.update(
        customdata=custom if per_token or key is None else None,
        hovertemplate=f"{where}: {what}<extra></extra>",
        showscale=False,
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

    One colour per head. The legend runs in rows under the plots, so every head is listed however
    many a stage has (a legend beside the plots was cut after "head 8"); a click on an entry hides
    that head in both plots.

    Args:
        rows: `HeadStat` objects or the dicts of `hvit.explain.head_stats.summarize_by_stage`.
    """
    recs = [r if isinstance(r, Mapping) else r.to_dict() for r in rows]
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["Mean attention distance (pixels)", "Normalised entropy"]
    )
    heads = sorted({r["head"] for r in recs})
    step = min(0.06, 0.6 / max(1, len(heads) - 1))  # heads side by side, all within +-0.3 of their stage
    for i, h in enumerate(heads):
        mine = [r for r in recs if r["head"] == h]
        x = [r["stage"] + 1 + step * (i - (len(heads) - 1) / 2) for r in mine]  # jitter heads apart
        text = [
            f"stage {r['stage'] + 1}, head {h + 1}" + (f", block {r['block'] + 1}" if "block" in r else "")
            for r in mine
        ]
        for col, key in ((1, "mean_distance"), (2, "normalized_entropy")):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=[r[key] for r in mine],
                    mode="markers",
                    name=f"head {h + 1}",
                    legendgroup=f"head {h + 1}",
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
    # Legend rows sized for a narrow column (about 8 entries a row); each row adds to the height.
    legend_rows = max(1, math.ceil(len(heads) / 8))
    top, bottom = 50 if title else 30, 70 + 22 * legend_rows
    height = 320 + bottom + top
    fig.update_layout(
        title=title,
        height=height,
        margin={"l": 60, "r": 10, "t": top, "b": bottom},  # left: room for the distance tick labels
        legend={
            "orientation": "h",
            "x": 0,
            "xanchor": "left",
            "y": -52 / (height - top - bottom),  # below the tick labels and the "stage" axis title
            "yanchor": "top",
        },
    )
    fig.update_yaxes(automargin=True)
    return fig


def ablation_figure(results: Sequence, title: str = "Switching one head off") -> go.Figure:
    """Change of the class probability when each head is switched off (`head_ablation_scan`)."""
    recs = [r if isinstance(r, Mapping) else r.to_dict() for r in results]
    labels = [f"S{r['stage'] + 1} h{','.join(str(h + 1) for h in r['heads'])}" for r in recs]
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
        title=title,
        yaxis_title="Δ probability of the class",
        xaxis_title="stage (S1 = stage 1), head (h1 = head 1)",
        height=380,
    )
    return fig


def attribution_grid_figure(
    image: np.ndarray | torch.Tensor,
    maps: Mapping[str, np.ndarray | torch.Tensor],
    signed: Mapping[str, bool] | None = None,
    cols: int = 3,
    opacity: float = 0.6,
    panel_height: int = 280,
) -> go.Figure:
    """Several methods' maps of one image side by side.

    Methods measure different things in different units, so each panel keeps its own colour range
    and its own colour bar (sequential from 0, or symmetric around 0 for signed methods): a near-zero
    map is then visibly near zero on its bar instead of being stretched to look like the others.
    """
    signed = signed or {}
    names = list(maps)
    return panel_grid_figure(
        [maps[n] for n in names],
        names,
        image=image,
        cols=cols,
        opacity=opacity,
        shared_scale=False,
        signed=[signed.get(n, False) for n in names],
        panel_height=panel_height,
        opacity_slider=False,
    )
