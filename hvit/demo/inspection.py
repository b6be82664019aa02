"""Attention and attributions in the apps: scores against a ground-truth mask, the randomisation
check, and the figures that show them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from hvit.demo.inputs import Prediction, preprocess
from hvit.model import HierarchialViT

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from hvit.explain.geometry import TokenMap


def mask_at(mask: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """A (H, W) bool mask resized (nearest) to the model input, as `preprocess` resizes the image."""
    h, w = (size, size) if isinstance(size, int) else size
    img = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255)
    return np.asarray(img.resize((w, h), Image.Resampling.NEAREST)) >= 128


def map_scores(maps: dict[str, np.ndarray | torch.Tensor], mask: np.ndarray) -> list[dict[str, float | str]]:
    """Pointing game and mask mass of every map against one ground-truth mask.

    Args:
        maps: name -> (S, S) map at the model input resolution.
        mask: (S, S) bool mask at the same resolution (see `mask_at`).

    Returns:
        One row per map: ``map``, ``pointing game`` (1 hit, 0 miss, fractions for ties),
        ``mask mass`` (share of the positive mass inside the mask) and ``chance`` (the mask's share of
        the image: what a map spread evenly would get).
    """
    from hvit.explain.faithfulness import mask_mass, pointing_game

    gt = torch.as_tensor(np.asarray(mask, dtype=bool))[None]
    chance = float(gt.float().mean())
    rows = []
    for name, m in maps.items():
        t = torch.as_tensor(np.asarray(m, dtype=np.float32))[None]
        rows.append(
            {
                "map": name,
                "pointing game": float(pointing_game(t, gt)[0]),
                "mask mass": float(mask_mass(t, gt)[0]),
                "chance": chance,
            }
        )
    return rows


def randomisation_check(
    model: HierarchialViT,
    image: Image.Image,
    maps: dict[str, np.ndarray],
    methods: Sequence[str],
    target: int | None = None,
    stage: int = -1,
    settings: object | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The model-parameter randomisation test (Adebayo et al., 2018) for attribution methods.

    Computes each method again on a copy of ``model`` with re-initialised weights and compares the two
    maps by Spearman rank correlation of absolute values. A method whose map barely changes (high
    correlation) shows the image, not what the model learned.

    Args:
        model: the trained model (unchanged).
        image: the image.
        maps: method -> the trained model's (S, S) map.
        methods: the methods to check (keys of ``maps``).
        target: the class to explain (``None``: the trained model's prediction, kept for both models).
        stage: Grad-CAM's stage.
        settings: `hvit.explain.AttributionSettings`.

    Returns:
        ``(random_maps, correlations)``: method -> (S, S) map of the random model, method -> Spearman.
    """
    from hvit.explain.attribution import compute_attribution, resolve_targets
    from hvit.explain.faithfulness import randomized_copy, spearman

    x = preprocess(model, image)
    tgt = int(resolve_targets(model, x, target)[0])
    rand = randomized_copy(model).eval()
    random_maps, corr = {}, {}
    for method in methods:
        m = compute_attribution(rand, x, tgt, method, stage, settings).map[0].numpy()
        random_maps[method] = m
        corr[method] = float(spearman(torch.as_tensor(maps[method])[None], torch.as_tensor(m)[None])[0])
    return random_maps, corr


def query_figure(
    image: np.ndarray,
    heat: np.ndarray | torch.Tensor | TokenMap,
    pixel: tuple[int, int],
    grid: tuple[int, int],
    stride: int,
    title: str = "",
    height: int = 380,
    uniform: float | None = None,
) -> go.Figure:
    """Attention of one query over the image, with the query marked and every query token clickable.

    Args:
        image: (S, S, 3) in [0, 1].
        heat: the attention painted over the key footprints: a `TokenMap` of the stage's query grid
            (``AttentionViews.query_attention(..., on="tokens")``, drawn one cell per token) or (S, S).
        pixel: the query pixel (y, x).
        grid: the stage's query grid (H, W).
        stride: pixels per query token.
        title: figure title.
        height: figure height in pixels.
        uniform: the level of uniform attention (1/keys, `AttentionViews.uniform_level`): the map is
            then drawn as a ratio to it, with "1 = uniform" on the colour bar.

    Returns:
        The overlay figure plus a marker trace of token centres (named "query tokens", one point per
        token with ``customdata`` (y, x)) that a UI can use to pick a new query with a click.
    """
    import plotly.graph_objects as go

    from hvit.explain.figures import overlay_figure
    from hvit.explain.geometry import pixel_to_token, token_centres

    fig = overlay_figure(
        image, heat, opacity=0.6, title=title, opacity_slider=False, height=height, uniform=uniform
    )
    centres = token_centres(grid, stride).numpy()  # (N, 2) (y, x)
    fig.add_trace(
        go.Scatter(
            x=centres[:, 1] - 0.5,
            y=centres[:, 0] - 0.5,
            mode="markers",
            marker=dict(size=max(4, min(18, 260 // max(grid))), color="rgba(255,255,255,0.01)"),
            customdata=centres.astype(int),
            name="query tokens",
            hovertemplate="click: query token at y %{customdata[0]}, x %{customdata[1]}<extra></extra>",
            showlegend=False,
        )
    )
    i, j = pixel_to_token(pixel, grid, stride)
    y0, x0 = i * stride - 0.5, j * stride - 0.5
    fig.add_shape(
        type="rect", x0=x0, y0=y0, x1=x0 + stride, y1=y0 + stride, line=dict(color="#40c057", width=3)
    )
    fig.update_layout(clickmode="event+select", dragmode=False)
    return fig


def key_grid_figure(
    keys: np.ndarray | torch.Tensor, title: str = "", height: int = 380, uniform: float | None = None
) -> go.Figure:
    """The raw attention of one query over the reduced key grid (h, w), values written in small grids.

    Colours run from 0 (dark) to at least twice the uniform level (``uniform``, default 1/(h*w)),
    which is marked on the colour bar, so near-uniform attention looks even.
    """
    import plotly.graph_objects as go

    from hvit.explain.colors import probability_scale
    from hvit.explain.figures import HORIZONTAL_BAR, TITLE_FONT

    z = np.asarray(keys.detach().cpu() if isinstance(keys, torch.Tensor) else keys, dtype=np.float32)
    scale = probability_scale([z], uniform if uniform is not None else 1.0 / z.size, "attention")
    fig = go.Figure(
        go.Heatmap(
            z=z,
            text=[[f"{v:.2f}" for v in row] for row in z] if z.size <= 64 else None,
            texttemplate="%{text}" if z.size <= 64 else None,
            textfont=dict(size=13),
            hovertemplate="key (%{y}, %{x}): %{z:.3f}<extra></extra>",
            **scale.trace_kwargs(**HORIZONTAL_BAR),
        )
    )
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", title_text="key row")
    fig.update_xaxes(constrain="domain", title_text="key column", side="top")  # the colour bar is below
    fig.update_layout(
        # the title at the top of the figure, above the key-column axis
        title={"text": title, "font": TITLE_FONT, "x": 0.5, "xanchor": "center", "y": 0.98, "yanchor": "top"},
        height=height,
        margin=dict(l=10, r=10, t=90 if title else 60, b=60),
        template="plotly_white",
    )
    return fig


def prediction_figure(prediction: Prediction, height: int = 260) -> go.Figure:
    """Horizontal bars of the top classes of a `Prediction`."""
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Bar(
            x=prediction.probs[::-1],
            y=prediction.labels[::-1],
            orientation="h",
            marker_color=["#adb5bd"] * (len(prediction.probs) - 1) + ["#3b5bdb"],
            text=[f"{p:.0%}" for p in prediction.probs[::-1]],
            textposition="outside",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.update_xaxes(range=[0, 1.15], tickformat=".0%", title_text="probability")
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10), template="plotly_white")
    return fig
