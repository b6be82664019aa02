"""The colour scales of every map hvit draws, defined once for the Streamlit app and the Gradio demo.

Rules (each one keeps a picture from saying something the numbers do not):

- **Sequential maps** (attention, saliency, Grad-CAM, rollout) go from dark (zero) to bright (high).
  The scale is written out stop by stop, so no app theme can swap in its own first colour, and the
  range is anchored at 0: an all-zero map is dark, not a bright wash. Colours are written as
  ``rgb(...)``, never as hex: Streamlit's front end rewrites the hex colours ``#000001``-``#000010`` (its
  theme placeholders) in every chart, even with ``theme=None``, and Inferno's first stop ``#000004``
  is one of them: that is how a zero came out bright lilac.
- **Signed maps** (integrated gradients, input x gradient, GradientSHAP) use a diverging scale
  centred on zero with a symmetric range: white is "no effect", red "for", blue "against".
- **Attention** is shown against uniform attention, as a ratio: 1 means "as much as if the query
  spread its attention evenly over every key" (1/keys), so heads with different key grids read on
  one scale. The range runs from 0 to at least `UNIFORM_HEADROOM` (twice uniform), so near-uniform
  attention sits mid-scale and looks near-uniform; the uniform level is a tick on the colour bar.
- **Twins share a scale**: a map and its randomised-model twin are drawn on one range.
- **Every panel has a colour bar**, or the one colour bar says which panels share it.

Everything here returns plain Plotly keyword dicts (no Plotly import), so builders do
``go.Heatmap(z=z, **scale.trace_kwargs())``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _rgb(hex_colour: str) -> str:
    """``#rrggbb`` as ``rgb(r, g, b)`` (see the module docstring for why)."""
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r},{g},{b})"


# Inferno (matplotlib), written out: black at 0, pale yellow at 1.
SEQUENTIAL: tuple[tuple[float, str], ...] = tuple(
    (i / 9, _rgb(c))
    for i, c in enumerate(
        (
            "#000004",
            "#1b0c41",
            "#4a0c6b",
            "#781c6d",
            "#a52c60",
            "#cf4446",
            "#ed6925",
            "#fb9b06",
            "#f7d13d",
            "#fcffa4",
        )
    )
)
# RdBu reversed (ColorBrewer): blue below zero, white at zero, red above.
DIVERGING: tuple[tuple[float, str], ...] = tuple(
    (i / 10, _rgb(c))
    for i, c in enumerate(
        (
            "#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7",
            "#fddbc7", "#f4a582", "#d6604d", "#b2182b", "#67001f",
        )
    )
)  # fmt: skip
# Attention shown as a ratio to uniform: the colour range reaches at least this many times uniform.
UNIFORM_HEADROOM = 2.0
COLORBAR_THICKNESS = 12


def _finite(maps: Sequence[Any]) -> np.ndarray:
    """All finite values of ``maps`` as one flat array (empty when there are none)."""
    flat = [np.asarray(m, dtype=np.float64).ravel() for m in maps]
    values = np.concatenate(flat) if flat else np.zeros(0)
    return values[np.isfinite(values)]


@dataclass(frozen=True)
class ColourScale:
    """One colour range, ready to hand to a Plotly ``Heatmap``.

    Attributes:
        colorscale: the scale's stops, ``((position, colour), ...)``.
        zmin, zmax: the values drawn at the two ends.
        zmid: the value drawn at the scale's centre (0 for signed maps), or ``None``.
        title: the colour bar's title (what the colour measures).
        ticks: extra ``(value, label)`` marks on the colour bar (e.g. the uniform level).
    """

    colorscale: tuple[tuple[float, str], ...]
    zmin: float
    zmax: float
    zmid: float | None = None
    title: str = ""
    ticks: tuple[tuple[float, str], ...] = field(default_factory=tuple)

    def colorbar(self, **placement: Any) -> dict[str, Any]:
        """The ``colorbar`` dict: title, thickness and tick marks, plus ``placement`` (x, y, len, and
        ``orientation="h"`` for a bar under the map, which leaves a narrow figure's width to the map)."""
        bar: dict[str, Any] = {"thickness": COLORBAR_THICKNESS, "outlinewidth": 0, **placement}
        if self.title:
            side = "top" if placement.get("orientation") == "h" else "right"
            bar["title"] = {"text": self.title, "side": side, "font": {"size": 12}}
        if self.ticks:
            # The two ends and the named ticks; an end too close to a named tick would print over it.
            span = self.zmax - self.zmin
            named = [(v, t) for v, t in self.ticks if self.zmin <= v <= self.zmax]
            ends = [
                (v, f"{v:.2g}")
                for v in (self.zmin, self.zmax)
                if all(abs(v - n) > 0.12 * span for n, _ in named)
            ]
            marks = sorted(ends + named)
            bar["tickvals"] = [v for v, _ in marks]
            bar["ticktext"] = [t for _, t in marks]
        return bar

    def trace_kwargs(self, showscale: bool = True, **placement: Any) -> dict[str, Any]:
        """Keyword arguments of ``go.Heatmap``: colours, range and (when shown) the colour bar."""
        kwargs: dict[str, Any] = {
            "colorscale": [list(stop) for stop in self.colorscale],
            "zmin": self.zmin,
            "zmax": self.zmax,
            "showscale": showscale,
        }
        if self.zmid is not None:
            kwargs["zmid"] = self.zmid
        if showscale:
            kwargs["colorbar"] = self.colorbar(**placement)
        return kwargs


def sequential_scale(maps: Sequence[Any], title: str = "") -> ColourScale:
    """Dark-to-bright scale from 0 to the largest value of ``maps`` (one range for all of them).

    Maps with negative values start at their minimum instead (an unsigned map should have none).
    An all-zero (or empty) set of maps gets the range [0, 1], so it is drawn dark.
    """
    values = _finite(maps)
    lo = min(0.0, float(values.min())) if values.size else 0.0
    hi = float(values.max()) if values.size else 0.0
    if hi <= lo:
        hi = lo + 1.0  # flat: stays at the dark end instead of being stretched over the scale
    return ColourScale(SEQUENTIAL, lo, hi, title=title)


def signed_scale(maps: Sequence[Any], title: str = "") -> ColourScale:
    """Diverging scale centred on 0, symmetric: ``[-r, r]`` with r the largest absolute value."""
    values = _finite(maps)
    r = float(np.abs(values).max()) if values.size else 0.0
    r = r if r > 0 else 1.0
    return ColourScale(DIVERGING, -r, r, zmid=0.0, title=title)


def attention_scale(ratios: Sequence[Any], title: str = "× uniform") -> ColourScale:
    """Scale for attention given as a ratio to uniform attention (see `uniform_ratio`).

    The range is [0, max(2, largest ratio)]: uniform attention (1) is mid-scale or lower, so a head
    that spreads its attention evenly is drawn in one even mid tone, never stretched into contrast.
    """
    values = _finite(ratios)
    hi = max(UNIFORM_HEADROOM, float(values.max()) if values.size else 0.0)
    return ColourScale(SEQUENTIAL, 0.0, hi, title=title, ticks=((1.0, "1 = uniform"),))


def probability_scale(probs: Sequence[Any], uniform: float, title: str = "attention") -> ColourScale:
    """Scale for raw attention probabilities whose uniform level is ``uniform`` (1/keys).

    Like `attention_scale` in probability units: [0, max(2 * uniform, largest value)], with the
    uniform level marked on the colour bar.
    """
    if not uniform > 0:
        raise ValueError(f"uniform must be a positive probability (1/keys), got {uniform!r}")
    values = _finite(probs)
    hi = max(UNIFORM_HEADROOM * uniform, float(values.max()) if values.size else 0.0)
    return ColourScale(SEQUENTIAL, 0.0, hi, title=title, ticks=((uniform, f"uniform {uniform:.2g}"),))


def map_scale(maps: Sequence[Any], signed: bool, title: str = "") -> ColourScale:
    """`signed_scale` or `sequential_scale`, one range shared by ``maps``."""
    return signed_scale(maps, title) if signed else sequential_scale(maps, title)


def uniform_ratio(attention: Any, uniform: float) -> np.ndarray:
    """``attention / uniform`` as a float array: 1 where a query spreads its attention evenly.

    Args:
        attention: a map of attention probabilities (any shape).
        uniform: the probability of one key under uniform attention, 1/keys.
    """
    if not uniform > 0:
        raise ValueError(f"uniform must be a positive probability (1/keys), got {uniform!r}")
    if hasattr(attention, "detach"):
        attention = attention.detach().float().cpu().numpy()
    return np.asarray(attention, dtype=np.float32) / np.float32(uniform)
