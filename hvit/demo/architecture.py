"""Architecture explorer figures: what a configuration's attention costs, and its token pyramid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from hvit.complexity import format_bytes

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from hvit.complexity import ComplexityReport
    from hvit.config import HViTConfig


ATTENTION_KINDS = ("global attention", "SRA", "linear SRA")
_STAGE_COLOURS = ("#3b5bdb", "#0ca678", "#f08c00", "#d6336c", "#7048e8", "#1098ad")
_LABEL_SLOT = 0.8  # the narrowest slot a stage gets in the pyramid, in units of the largest square


def attention_cost(config: HViTConfig, sizes: Sequence[int]) -> dict[str, dict[str, list[float]]]:
    """Attention cost of ``config`` at several image sizes, with global attention, SRA and linear SRA.

    The three variants differ only in how the keys are made: from every token (SR 1 everywhere), from
    a grid ``sr_ratio`` times coarser (the configuration's own ratios), or pooled to a fixed 7x7 grid.

    Args:
        config: an `HViTConfig`.
        sizes: image sides in pixels.

    Returns:
        ``{kind: {"gmacs": [...], "mib": [...]}}`` for each of `ATTENTION_KINDS`: the MACs of the
        attention matmuls (q k^T and attn v) of all blocks, and the largest single block's attention
        probabilities in MiB (fp32, one image), one value per size.
    """
    from dataclasses import replace

    from hvit.complexity import model_complexity

    variants = {
        "global attention": replace(config, sr_ratios=tuple(1 for _ in config.sr_ratios), linear_sra=False),
        "SRA": replace(config, linear_sra=False),
        "linear SRA": replace(config, linear_sra=True),
    }
    out: dict[str, dict[str, list[float]]] = {}
    for kind, cfg in variants.items():
        gmacs, mib = [], []
        for size in sizes:
            report = model_complexity(cfg, int(size))  # from the shapes alone: no memory, no time
            gmacs.append(sum(s.attention_macs for s in report.stages) / 1e9)
            mib.append(max(s.attention_bytes for s in report.stages) / 2**20)
        out[kind] = {"gmacs": gmacs, "mib": mib}
    return out


def attention_cost_figure(config: HViTConfig, img_size: int, sizes: Sequence[int] | None = None) -> go.Figure:
    """Plotly chart: attention MACs against image size for global attention, SRA and linear SRA.

    Args:
        config: an `HViTConfig`.
        img_size: the size in use, marked with a vertical line.
        sizes: image sides to plot (default: 32 px to 1024 px, plus ``img_size``).

    Returns:
        A ``plotly.graph_objects.Figure`` on log-log axes; hovering shows MACs and attention memory.
    """
    import plotly.graph_objects as go

    if sizes is None:
        sizes = sorted({32, 64, 96, 128, 160, 224, 320, 448, 640, 800, 1024, int(img_size)})
    cost = attention_cost(config, sizes)
    fig = go.Figure()
    for (kind, c), colour, dash in zip(
        cost.items(), ("#d6336c", "#3b5bdb", "#0ca678"), ("dot", "solid", "dash"), strict=True
    ):
        fig.add_trace(
            go.Scatter(
                x=list(sizes),
                y=c["gmacs"],
                name=kind,
                mode="lines+markers",
                line=dict(color=colour, dash=dash),
                customdata=[format_bytes(m * 2**20) for m in c["mib"]],
                hovertemplate=f"{kind}<br>%{{x}} px: %{{y:.3g}} GMACs"
                "<br>largest block's attention: %{customdata}<extra></extra>",
            )
        )
    fig.add_vline(x=img_size, line=dict(color="#868e96", width=1, dash="dash"))
    fig.add_annotation(
        x=np.log10(img_size),
        y=1,
        yref="paper",
        text=f"{img_size} px",
        showarrow=False,
        yanchor="bottom",
        font=dict(size=11, color="#495057"),
    )
    fig.update_layout(
        xaxis=dict(title="image size (pixels a side)", type="log", tickvals=[32, 64, 128, 256, 512, 1024]),
        yaxis=dict(title="attention GMACs (all blocks, one image)", type="log", exponentformat="power"),
        legend=dict(orientation="h", yanchor="bottom", y=1.06, x=0),
        margin=dict(l=10, r=10, t=50, b=10),
        height=360,
        template="plotly_white",
    )
    return fig


def _grid_lines(
    x0: float, y0: float, side: float, rows: int, cols: int, max_lines: int = 64
) -> tuple[list[float | None], list[float | None]]:
    """x and y of the lines that draw a ``rows`` x ``cols`` grid in a square (None-separated)."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    step_r, step_c = max(1, -(-rows // max_lines)), max(1, -(-cols // max_lines))
    for r in range(0, rows + 1, step_r):
        y = y0 + side * r / rows
        xs += [x0, x0 + side, None]
        ys += [y, y, None]
    for c in range(0, cols + 1, step_c):
        x = x0 + side * c / cols
        xs += [x, x, None]
        ys += [y0, y0 + side, None]
    return xs, ys


def _grid_square(fig: go.Figure, x: float, y: float, side: float, colour: str, fill: float) -> None:
    """A filled, outlined square of ``side`` with its lower-left corner at (x, y)."""
    fig.add_shape(
        type="rect", x0=x, y0=y, x1=x + side, y1=y + side, line=dict(color=colour, width=2),
        fillcolor=colour, opacity=fill, layer="below",
    )  # fmt: skip


def _grid_overlay(
    fig: go.Figure, x: float, y: float, side: float, grid: tuple[int, int], colour: str, width: float,
    opacity: float = 1.0,
) -> None:  # fmt: skip
    """The lines of a ``grid`` = (rows, columns) drawn over the square at (x, y)."""
    import plotly.graph_objects as go

    gx, gy = _grid_lines(x, y, side, grid[0], grid[1])
    fig.add_trace(
        go.Scatter(
            x=gx, y=gy, mode="lines", line=dict(color=colour, width=width), opacity=opacity,
            hoverinfo="skip", showlegend=False,
        )
    )  # fmt: skip


def pyramid_figure(report: ComplexityReport, height: int = 470) -> go.Figure:
    """Plotly diagram of the token pyramid of a `ComplexityReport`.

    Top row: each stage's query grid (one cell per token); squares shrink with the grid, as the
    feature maps of a CNN do. Bottom row: the reduced key grid of each head group, drawn over the same
    area, so a key cell visibly covers ``sr_ratio x sr_ratio`` query tokens.

    Returns:
        A ``plotly.graph_objects.Figure``.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    sides = [max(s.query_grid) for s in report.stages]
    biggest = max(sides)
    gap, slot_x, bottom, y_top = 0.35, 0.0, 0.0, 1.25
    for s, side_tokens in zip(report.stages, sides, strict=True):
        colour = _STAGE_COLOURS[(s.stage - 1) % len(_STAGE_COLOURS)]
        side = max(0.35, side_tokens / biggest)  # squares shrink with the grid, but stay visible
        # Every stage gets a slot at least as wide as its labels, so small squares never crowd them.
        slot = max(side, _LABEL_SLOT)
        x = slot_x + (slot - side) / 2
        h, w = s.query_grid
        # query grid
        _grid_square(fig, x, y_top, side, colour, fill=0.12)
        _grid_overlay(fig, x, y_top, side, (h, w), colour, width=0.6)
        cls = f" + {s.prefix_tokens} class token" if s.prefix_tokens else ""
        fig.add_annotation(
            x=x + side / 2,
            y=y_top + side,
            yanchor="bottom",
            showarrow=False,
            text=f"<b>stage {s.stage}</b><br>queries<br>{h}x{w} = {s.tokens}{cls}",
            font=dict(size=12, color="#212529"),
        )
        # key grids, one square per head group, stacked below
        y = y_top - 0.2
        for g, (kh, kw) in enumerate(s.key_grids):
            y -= side
            _grid_square(fig, x, y, side, colour, fill=0.28)
            _grid_overlay(fig, x, y, side, (h, w), colour, width=0.3, opacity=0.35)  # the query grid, faint
            _grid_overlay(fig, x, y, side, (kh, kw), colour, width=2.2)  # the key grid it is reduced to
            group = f"<br>(head group {g + 1})" if len(s.key_grids) > 1 else ""
            fig.add_annotation(
                x=x + side / 2,
                y=y,
                yanchor="top",
                showarrow=False,
                text=f"keys<br>{kh}x{kw} = {s.keys[g]}{group}",
                font=dict(size=12, color="#212529"),
            )
            y -= 0.34 if group else 0.26
        # an invisible point so hovering anywhere on the stage tells its numbers
        fig.add_trace(
            go.Scatter(
                x=[x + side / 2],
                y=[y_top + side / 2],
                mode="markers",
                marker=dict(size=max(8, 60 * side), opacity=0),
                showlegend=False,
                hovertemplate=(
                    f"stage {s.stage}<br>{s.tokens} query tokens, keys {', '.join(map(str, s.keys))}"
                    f"<br>{s.params:,} parameters<br>{s.macs / 1e6:,.1f} MMACs<extra></extra>"
                ),
            )
        )
        bottom = min(bottom, y)
        if s.stage < len(report.stages):
            next_side = max(0.35, sides[s.stage] / biggest)
            next_x = slot_x + slot + gap + (max(next_side, _LABEL_SLOT) - next_side) / 2
            fig.add_annotation(
                x=next_x - 0.02,
                ax=x + side + 0.04,
                y=y_top + 0.12,
                ay=y_top + 0.12,
                xref="x",
                yref="y",
                axref="x",
                ayref="y",
                showarrow=True,
                arrowhead=2,
                arrowwidth=1.5,
                arrowcolor="#868e96",
                text="",
            )
            fig.add_annotation(
                x=(x + side + next_x) / 2,
                y=y_top + 0.14,
                yanchor="bottom",
                showarrow=False,
                text=f"÷{max(1, round(h / report.stages[s.stage].query_grid[0]))}",
                font=dict(size=11, color="#868e96"),
            )
        slot_x += slot + gap
    for y, text in ((y_top + 0.5, "queries<br>(tokens)"), (y_top - 0.7, "keys<br>(reduced)")):
        fig.add_annotation(
            x=0,
            xref="paper",
            xanchor="right",
            y=y,
            showarrow=False,
            text=text,
            font=dict(size=12, color="#495057"),
        )
    fig.update_xaxes(visible=False, range=[-0.05, slot_x - gap + 0.05])
    fig.update_yaxes(visible=False, scaleanchor="x", scaleratio=1, range=[bottom - 0.12, y_top + 1.45])
    fig.update_layout(
        margin=dict(l=70, r=0, t=0, b=0),
        height=height,
        template="plotly_white",
        plot_bgcolor="white",
        dragmode=False,
    )
    return fig


def patch_grid_figure(image: np.ndarray, grid: tuple[int, int], stride: int, height: int = 380) -> go.Figure:
    """The input image cut into its stage-1 patches: one cell per token."""
    import plotly.graph_objects as go

    from hvit.explain.figures import image_trace

    img = np.asarray(image)
    fig = go.Figure(image_trace(img))
    xs, ys = _grid_lines(-0.5, -0.5, grid[1] * stride, grid[0], grid[1], max_lines=64)
    fig.add_trace(
        go.Scatter(
            x=xs, y=ys, mode="lines", line=dict(color="white", width=1.2), hoverinfo="skip", showlegend=False
        )
    )
    fig.update_xaxes(visible=False, range=[-0.5, img.shape[1] - 0.5])
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=10, b=0), dragmode=False)
    return fig
