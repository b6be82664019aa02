"""What both apps share and that is not UI: the model choices, checked image input, prediction.

The Streamlit pages and the Gradio demo are thin layers over these functions, so they behave the same
and every rule (which model is the default, which images are accepted) is written once.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hvit.model import HierarchialViT

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from hvit.complexity import ComplexityReport
    from hvit.config import HViTConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS = REPO_ROOT / "assets"
SHIPPED_MODEL_GLOB = "hvit_shapes*.safetensors"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_UPLOAD_BYTES = 10 * 2**20  # 10 MiB: larger files are refused before decoding
MAX_IMAGE_SIDE = 4096  # pixels; guards against decompression bombs and huge resizes

SHIPPED = "Shipped shapes model (offline)"
IMAGENET = "pvt_v2_b0 ImageNet (timm, needs internet)"


class ImageInputError(ValueError):
    """An image the user gave cannot be used; the message says why and what would work."""


def shipped_checkpoint() -> Path:
    """Path of the shapes model shipped in ``assets/``.

    Raises:
        FileNotFoundError: when the file is missing (e.g. a partial clone), naming where it should be.
    """
    found = sorted(ASSETS.glob(SHIPPED_MODEL_GLOB))
    if not found:
        raise FileNotFoundError(
            f"the shipped model ({ASSETS / SHIPPED_MODEL_GLOB}) is missing; re-clone the repository or train "
            "one with `python -m hvit.train --model hvit_nano --dataset shapes`"
        )
    return found[0]


def load_shipped_model() -> HierarchialViT:
    """The shapes model shipped with the repository, in eval mode."""
    from hvit.train import load_checkpoint

    return load_checkpoint(shipped_checkpoint()).eval()


def model_choices() -> list[str]:
    """Labels of every model an app can offer: the shipped model, ImageNet, then each preset (random)."""
    from hvit.registry import list_models

    return [SHIPPED, IMAGENET] + [f"{name} (random weights)" for name in list_models()]


def load_model_choice(label: str, num_classes: int | None = None) -> HierarchialViT:
    """Build the model behind a label of `model_choices`, in eval mode.

    Raises:
        hvit.PretrainedUnavailableError: ImageNet weights asked for while offline.
        ValueError: an unknown label.
    """
    from hvit.registry import create_model

    if label == SHIPPED:
        return load_shipped_model()
    if label == IMAGENET:
        return create_model("pvt_v2_b0", pretrained=True).eval()
    name = label.removesuffix(" (random weights)")
    overrides = {} if num_classes is None else {"num_classes": num_classes}
    return create_model(name, **overrides).eval()


def load_image(source: str | Path | bytes | Image.Image | np.ndarray) -> Image.Image:
    """Open and check an image from a path, raw bytes, a PIL image or an (H, W[, C]) uint8 array.

    Returns:
        An RGB PIL image.

    Raises:
        ImageInputError: unreadable, not an image, too large, or of an unsupported type.
    """
    if isinstance(source, Image.Image):
        img = source
    elif isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[2] not in (1, 3, 4)):
            raise ImageInputError(
                f"expected an (H, W) or (H, W, 1|3|4) image array, got shape {source.shape}"
            )
        arr = source if source.dtype == np.uint8 else np.clip(source, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    else:
        if isinstance(source, (str, Path)):
            path = Path(source)
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise ImageInputError(
                    f"{path.name!r} is not a supported image file; use one of {', '.join(IMAGE_SUFFIXES)}"
                )
            if not path.is_file():
                raise ImageInputError(f"no image file at {path}")
            if path.stat().st_size > MAX_UPLOAD_BYTES:
                raise ImageInputError(
                    f"{path.name} is larger than {MAX_UPLOAD_BYTES // 2**20} MiB; use a smaller image"
                )
            data = path.read_bytes()
        elif isinstance(source, (bytes, bytearray)):
            data = bytes(source)
        else:
            raise ImageInputError(f"cannot read an image from a {type(source).__name__}")
        if len(data) > MAX_UPLOAD_BYTES:
            raise ImageInputError(
                f"the file is larger than {MAX_UPLOAD_BYTES // 2**20} MiB; use a smaller image"
            )
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
            raise ImageInputError(
                f"the file is not a readable image ({err}); upload a PNG, JPEG, BMP, GIF, WebP or TIFF file"
            ) from err
    if max(img.size) > MAX_IMAGE_SIDE or min(img.size) < 1:
        raise ImageInputError(
            f"the image is {img.size[0]}x{img.size[1]} pixels; "
            f"use one between 1 and {MAX_IMAGE_SIDE} pixels a side"
        )
    return img.convert("RGB")


def preprocess(model: HierarchialViT, image: Image.Image) -> torch.Tensor:
    """(1, 3, S, S) input tensor for ``model`` from an RGB image, using the model's own preprocessing."""
    from hvit.data import build_transforms

    transform = build_transforms(model.preprocessing, train=False)
    return transform(image).unsqueeze(0)


@dataclass
class Prediction:
    """Top classes of one image: ``labels[i]`` has probability ``probs[i]``, best first."""

    labels: list[str]
    probs: list[float]
    class_index: list[int]


@torch.no_grad()
def predict(model: HierarchialViT, image: Image.Image, k: int = 5) -> Prediction:
    """Top-``k`` classes of ``image`` with softmax probabilities."""
    x = preprocess(model, image)
    probs = model.eval()(x).softmax(-1)[0]
    top = probs.topk(min(k, probs.numel()))
    names = model.preprocessing.class_names or [f"class {i}" for i in range(probs.numel())]
    idx = top.indices.tolist()
    return Prediction([names[i] for i in idx], top.values.tolist(), idx)


def sample_images() -> list[Path]:
    """Example images shipped in ``assets/`` (shapes samples and photographs), sorted by path."""
    return sorted(
        p
        for p in ASSETS.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and "mask" not in p.name.lower()
        and "mask" not in str(p.parent.name).lower()
    )


# ---------------------------------------------------------------------------------------------------
# Architecture explorer: what a configuration costs, and pictures of its token pyramid.
# ---------------------------------------------------------------------------------------------------

ATTENTION_KINDS = ("global attention", "SRA", "linear SRA")
_STAGE_COLOURS = ("#3b5bdb", "#0ca678", "#f08c00", "#d6336c", "#7048e8", "#1098ad")


def invalid_field(err: ValueError) -> tuple[str, int | None]:
    """Which configuration field (and stage, 0-based) an `HViTConfig` ``ValueError`` is about.

    `HViTConfig.validate` names the field first, e.g. ``"embed_dims[1]=70 is not divisible by ..."``;
    the apps use this to show the message next to the control that caused it.

    Returns:
        ``(field, stage)``; ``stage`` is ``None`` for model-wide fields, ``field`` is ``""`` when the
        message names no known field.
    """
    import re
    from dataclasses import fields

    from hvit.config import HViTConfig

    names = {f.name for f in fields(HViTConfig)}
    for m in re.finditer(r"\b([a-z_]+)(?:\[(\d+)\])?", str(err)):
        if m.group(1) in names:
            return m.group(1), None if m.group(2) is None else int(m.group(2))
    return "", None


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
        with torch.device("meta"):  # shapes only: no memory, no time
            model = HierarchialViT.from_config(cfg)
        gmacs, mib = [], []
        for size in sizes:
            report = model_complexity(model, int(size))
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
                customdata=c["mib"],
                hovertemplate=f"{kind}<br>%{{x}} px: %{{y:.3g}} GMACs"
                "<br>largest block: %{customdata:.3g} MiB<extra></extra>",
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


def pyramid_figure(report: ComplexityReport) -> go.Figure:
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
    gap, x = 0.35, 0.0
    for s, side_tokens in zip(report.stages, sides, strict=True):
        colour = _STAGE_COLOURS[(s.stage - 1) % len(_STAGE_COLOURS)]
        side = max(0.35, side_tokens / biggest)  # squares shrink with the grid, but stay visible
        h, w = s.query_grid
        y_top = 1.25
        # query grid
        fig.add_shape(
            type="rect",
            x0=x,
            y0=y_top,
            x1=x + side,
            y1=y_top + side,
            line=dict(color=colour, width=2),
            fillcolor=colour,
            opacity=0.12,
            layer="below",
        )
        gx, gy = _grid_lines(x, y_top, side, h, w)
        fig.add_trace(
            go.Scatter(
                x=gx,
                y=gy,
                mode="lines",
                line=dict(color=colour, width=0.6),
                hoverinfo="skip",
                showlegend=False,
            )
        )
        cls = f" + {s.prefix_tokens} class token" if s.prefix_tokens else ""
        fig.add_annotation(
            x=x + side / 2,
            y=y_top + side,
            yanchor="bottom",
            showarrow=False,
            text=f"<b>stage {s.stage}</b><br>queries {h}x{w} = {s.tokens}{cls}",
            font=dict(size=11, color="#212529"),
        )
        # key grids, one square per head group, stacked below
        y = y_top - 0.2
        for g, (kh, kw) in enumerate(s.key_grids):
            y -= side
            fig.add_shape(
                type="rect",
                x0=x,
                y0=y,
                x1=x + side,
                y1=y + side,
                line=dict(color=colour, width=2),
                fillcolor=colour,
                opacity=0.28,
                layer="below",
            )
            qx, qy = _grid_lines(x, y, side, h, w)
            fig.add_trace(
                go.Scatter(
                    x=qx,
                    y=qy,
                    mode="lines",
                    line=dict(color=colour, width=0.3),
                    opacity=0.35,
                    hoverinfo="skip",
                    showlegend=False,
                )
            )
            kx, ky = _grid_lines(x, y, side, kh, kw)
            fig.add_trace(
                go.Scatter(
                    x=kx,
                    y=ky,
                    mode="lines",
                    line=dict(color=colour, width=2.2),
                    hoverinfo="skip",
                    showlegend=False,
                )
            )
            group = f" (head group {g + 1})" if len(s.key_grids) > 1 else ""
            fig.add_annotation(
                x=x + side / 2,
                y=y,
                yanchor="top",
                showarrow=False,
                text=f"keys {kh}x{kw} = {s.keys[g]}{group}",
                font=dict(size=11, color="#212529"),
            )
            y -= 0.22
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
        if s.stage < len(report.stages):
            fig.add_annotation(
                x=x + side + gap,
                ax=x + side + 0.04,
                y=y_top + 0.15,
                ay=y_top + 0.15,
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
        x += side + gap
    fig.update_xaxes(visible=False, range=[-0.05, x - gap + 0.05])
    fig.update_yaxes(visible=False, scaleanchor="x", scaleratio=1)
    fig.update_layout(
        margin=dict(l=0, r=0, t=10, b=10),
        height=380,
        template="plotly_white",
        plot_bgcolor="white",
        dragmode=False,
    )
    return fig


# ---------------------------------------------------------------------------------------------------
# Images with a known answer: shapes samples and their ground-truth masks.
# ---------------------------------------------------------------------------------------------------


def _mask_candidates(path: Path) -> list[Path]:
    """Where the mask of a sample image may be, for the layouts hvit writes."""
    parent, name = path.parent, path.name
    return [
        parent / f"{path.stem}_mask.png",  # flat: circle_0.png + circle_0_mask.png
        parent / "masks" / name,  # sample folder with a masks/ subfolder
        parent.parent
        / f"{parent.name}_masks"
        / name,  # write_shapes: <split>/<class>/x.png, <split>_masks/...
        parent.parent.parent / f"{parent.parent.name}_masks" / parent.name / name,
    ]


def sample_mask(path: str | Path) -> np.ndarray | None:
    """(H, W) bool ground-truth mask of a shipped sample image, or ``None`` when it has none."""
    for candidate in _mask_candidates(Path(path)):
        if candidate.is_file():
            with Image.open(candidate) as m:
                return np.asarray(m.convert("L")) >= 128
    return None


def sample_label(path: str | Path) -> str | None:
    """True class of a shipped shapes sample (from its folder or file name), or ``None``."""
    from hvit.data import SHAPE_CLASSES

    path = Path(path)
    for name in (path.parent.name, path.stem.split("_")[0]):
        if name in SHAPE_CLASSES:
            return name
    return None


def shapes_example(
    index: int, img_size: int = 64, split: str = "test"
) -> tuple[Image.Image, str, np.ndarray]:
    """Image ``index`` of the generated shapes set: (RGB image, class name, (H, W) bool mask)."""
    from hvit.data import SHAPE_CLASSES, render_shape

    image, label, mask = render_shape(index, img_size, seed=0, split=split)
    return Image.fromarray(image, "RGB"), SHAPE_CLASSES[label], mask
