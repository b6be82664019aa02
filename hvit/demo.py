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
                "the file is not a readable image (its content is not a known image format, or it is "
                "truncated); upload a PNG, JPEG, BMP, GIF, WebP or TIFF file"
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
        # ground-truth masks (e.g. shapes_samples/test_masks/<class>/x.png) are not examples
        and not any("mask" in part.lower() for part in p.relative_to(ASSETS).parts)
    )


# ---------------------------------------------------------------------------------------------------
# Architecture explorer: what a configuration costs, and pictures of its token pyramid.
# ---------------------------------------------------------------------------------------------------

ATTENTION_KINDS = ("global attention", "SRA", "linear SRA")
_STAGE_COLOURS = ("#3b5bdb", "#0ca678", "#f08c00", "#d6336c", "#7048e8", "#1098ad")


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
    gap, x, bottom, y_top = 0.35, 0.0, 0.0, 1.25
    for s, side_tokens in zip(report.stages, sides, strict=True):
        colour = _STAGE_COLOURS[(s.stage - 1) % len(_STAGE_COLOURS)]
        side = max(0.35, side_tokens / biggest)  # squares shrink with the grid, but stay visible
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
            text=f"<b>stage {s.stage}</b><br>queries {h}x{w} = {s.tokens}{cls}",
            font=dict(size=12, color="#212529"),
        )
        # key grids, one square per head group, stacked below
        y = y_top - 0.2
        for g, (kh, kw) in enumerate(s.key_grids):
            y -= side
            _grid_square(fig, x, y, side, colour, fill=0.28)
            _grid_overlay(fig, x, y, side, (h, w), colour, width=0.3, opacity=0.35)  # the query grid, faint
            _grid_overlay(fig, x, y, side, (kh, kw), colour, width=2.2)  # the key grid it is reduced to
            group = f" (head group {g + 1})" if len(s.key_grids) > 1 else ""
            fig.add_annotation(
                x=x + side / 2,
                y=y,
                yanchor="top",
                showarrow=False,
                text=f"keys {kh}x{kw} = {s.keys[g]}{group}",
                font=dict(size=12, color="#212529"),
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
        bottom = min(bottom, y)
        if s.stage < len(report.stages):
            fig.add_annotation(
                x=x + side + gap - 0.02,
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
                x=x + side + gap / 2,
                y=y_top + 0.14,
                yanchor="bottom",
                showarrow=False,
                text=f"÷{max(1, round(h / report.stages[s.stage].query_grid[0]))}",
                font=dict(size=11, color="#868e96"),
            )
        x += side + gap
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
    fig.update_xaxes(visible=False, range=[-0.05, x - gap + 0.3])  # room for the last stage's labels
    fig.update_yaxes(visible=False, scaleanchor="x", scaleratio=1, range=[bottom - 0.12, y_top + 1.28])
    fig.update_layout(
        margin=dict(l=70, r=0, t=0, b=0),
        height=height,
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


# ---------------------------------------------------------------------------------------------------
# Live training: a trainer in a background thread, and everything a page needs to draw it.
# ---------------------------------------------------------------------------------------------------

TRAINING_PRESETS = ("hvit_nano", "hvit_micro", "hvit_nano_ms")
MAX_ZIP_BYTES = 100 * 2**20  # the upload itself
MAX_UNZIPPED_BYTES = 500 * 2**20  # what it may expand to (zip bombs)
MAX_ZIP_FILES = 50_000


class DatasetZipError(ValueError):
    """An uploaded zip cannot be used as a data set; the message says why and what would work."""


def extract_dataset_zip(data: bytes, dest: str | Path) -> Path:
    """Check and unpack a zipped data set in the `HViTDataset` layout.

    Accepted: ``train/<class>/<image>`` (and optionally ``val/<class>/<image>``) at the top of the zip
    or inside one top folder. Refused with a clear message: files over `MAX_ZIP_BYTES`, archives that
    expand beyond `MAX_UNZIPPED_BYTES` or hold more than `MAX_ZIP_FILES` files, absolute paths or
    ``..`` (zip-slip), links, and layouts without a ``train`` folder of at least two class folders.

    Args:
        data: the zip file's bytes.
        dest: an empty folder to unpack into.

    Returns:
        The data set root (the folder holding ``train/``).

    Raises:
        DatasetZipError: see above.
    """
    import stat
    import zipfile
    from pathlib import PurePosixPath

    if len(data) > MAX_ZIP_BYTES:
        raise DatasetZipError(
            f"the zip is {len(data) / 2**20:.0f} MiB; the limit is {MAX_ZIP_BYTES // 2**20} MiB. "
            "Use fewer or smaller images (a few hundred per class is plenty for a lesson)."
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as err:
        raise DatasetZipError(f"the file is not a readable zip archive ({err}); upload a .zip file") from err
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        names = [m.filename for m in members if not PurePosixPath(m.filename).name.startswith(".")]
        if len(members) > MAX_ZIP_FILES:
            raise DatasetZipError(f"the zip holds {len(members):,} files; the limit is {MAX_ZIP_FILES:,}")
        total = sum(m.file_size for m in members)
        if total > MAX_UNZIPPED_BYTES:
            raise DatasetZipError(
                f"the zip expands to {total / 2**20:.0f} MiB; the limit is {MAX_UNZIPPED_BYTES // 2**20} MiB"
            )
        for m in members:
            path = PurePosixPath(m.filename.replace("\\", "/"))
            if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
                raise DatasetZipError(
                    f"the zip contains the unsafe path {m.filename!r} (absolute or with '..'); "
                    "zip the data set folder itself, with relative paths only"
                )
            if stat.S_ISLNK(m.external_attr >> 16):
                raise DatasetZipError(
                    f"the zip contains a link ({m.filename!r}); only plain files are accepted"
                )
        # The layout: train/<class>/<image>, at the top or below a single folder.
        tops = {PurePosixPath(n).parts[0] for n in names if len(PurePosixPath(n).parts) > 1}
        prefix = ""
        if "train" not in tops and len(tops) == 1:
            prefix = f"{next(iter(tops))}/"
        classes = {
            PurePosixPath(n[len(prefix) :]).parts[1]
            for n in names
            if n.startswith(f"{prefix}train/")
            and len(PurePosixPath(n[len(prefix) :]).parts) >= 3
            and PurePosixPath(n).suffix.lower() in IMAGE_SUFFIXES
        }
        if len(classes) < 2:
            found = ", ".join(sorted(tops)[:5]) or "no folders"
            raise DatasetZipError(
                "the zip is not in the expected layout train/<class name>/<image file> with at least two "
                f"class folders of images (found at the top: {found}). Optionally add val/<class name>/..."
            )
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        for m in members:
            target = (dest / m.filename).resolve()
            if root not in target.parents:
                raise DatasetZipError(f"the zip path {m.filename!r} points outside the data set folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(m) as src, open(target, "wb") as out:
                out.write(src.read())
    return dest / prefix.rstrip("/") if prefix else dest


def folder_classes(root: str | Path) -> list[str]:
    """Class names of a data set folder's ``train`` split; raises with the layout problem in words."""
    from hvit.data import HViTDataset

    return list(HViTDataset(root, split="train").classes)


@dataclass
class TrainingRequest:
    """What the user asked to train.

    Attributes:
        dataset: "shapes", "mnist", "fashion-mnist", "cifar10", or a folder in the `HViTDataset` layout.
        preset: a registry name (the model is built with the data set's number of classes).
        epochs, batch_size, lr: as in `hvit.train.TrainConfig`.
        train_images: images per epoch (a fixed subset of large sets; the size of generated shapes).
        val_images: validation images.
        augment: "none", "light" or "strong".
        seed: seeds the model, the data order and the shapes.
    """

    dataset: str = "shapes"
    preset: str = "hvit_nano"
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    train_images: int = 1200
    val_images: int = 300
    augment: str = "light"
    seed: int = 0


class LiveTraining:
    """One training run in a background thread, reporting through `HViTTrainer` callbacks.

    The thread never touches the UI: it fills ``batches``, ``epochs`` and ``snapshots``, which a page
    reads and draws (a Streamlit fragment every second, for example). `stop` asks the trainer to stop
    after the current batch. Every run owns its model and data, so two runs (two browser sessions) never
    share state.

    Attributes:
        request: the `TrainingRequest`.
        phase: "ready", "preparing", "running", "completed", "stopped" or "failed".
        message: what happened, in words (why it failed, where it stopped).
        model: the model being trained (ready to use once the run has ended).
        class_names: the data set's classes.
        batches: per-batch logs (loss, accuracy, images_per_sec, eta_seconds, epoch, step, ...).
        epochs: per-epoch logs (train and validation loss and accuracy, ...).
        snapshots: ``(epoch, rollout map (S, S), predicted class, probability)`` of the fixed image
            before training and after every epoch.
        snapshot_image: (S, S, 3) float image in [0, 1] the snapshots are of.
        results: after the run: ``confusion`` (C, C) array and ``samples`` (images, labels, predictions,
            probabilities) of the validation set.
    """

    def __init__(self, request: TrainingRequest) -> None:
        import threading

        self.request = request
        self.phase = "ready"
        self.message = ""
        self.model: HierarchialViT | None = None
        self.trainer = None
        self.class_names: list[str] = []
        self.batches: list[dict[str, float]] = []
        self.epochs: list[dict[str, float]] = []
        self.snapshots: list[tuple[int, np.ndarray, str, float]] = []
        self.snapshot_image: np.ndarray | None = None
        self.results: dict | None = None
        self.total_steps = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._snapshot_input: torch.Tensor | None = None
        self._val = None

    # --- control ----------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.phase in ("preparing", "running")

    @property
    def finished(self) -> bool:
        return self.phase in ("completed", "stopped", "failed")

    def start(self) -> None:
        """Start training in a daemon thread (returns at once)."""
        import threading

        self.phase = "preparing"
        self._thread = threading.Thread(target=self._run, name="hvit-live-training", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the run to stop after the current batch (thread-safe)."""
        self._stop.set()
        if self.trainer is not None:
            self.trainer.request_stop()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread (tests and scripts)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def progress(self) -> dict[str, float]:
        """``fraction`` done, ``images_per_sec``, ``eta_seconds``, ``epoch`` (fractional), ``step``."""
        with self._lock:
            last = dict(self.batches[-1]) if self.batches else {}
        step = last.get("step", 0)
        return {
            "fraction": min(1.0, step / self.total_steps) if self.total_steps else 0.0,
            "images_per_sec": last.get("images_per_sec", 0.0),
            "eta_seconds": last.get("eta_seconds", float("nan")),
            "epoch": last.get("epoch", 0.0),
            "step": step,
        }

    def logs(self) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
        """Copies of the batch and epoch logs, safe to read while the thread appends."""
        with self._lock:
            return list(self.batches), list(self.epochs)

    # --- the thread ----------------------------------------------------------------------------------------

    def _prepare(self) -> tuple:
        from torch.utils.data import Subset

        from hvit.data import dataset_stats, load_dataset
        from hvit.preprocessing import Preprocessing
        from hvit.registry import create_model, model_config

        r = self.request
        img_size = model_config(r.preset).img_size
        kind = r.dataset
        mean, std = dataset_stats(kind, img_size=img_size)
        if kind == "shapes":
            probe = load_dataset("shapes", "val", num_samples=0)
        elif Path(kind).is_dir():
            probe = load_dataset(kind, "train")
        else:
            probe = load_dataset(kind, "train")  # downloads when online; a clear RuntimeError when not
        classes = list(probe.classes)
        preprocessing = Preprocessing(img_size=img_size, mean=mean, std=std, class_names=classes)
        torch.manual_seed(r.seed)
        model = create_model(r.preset, num_classes=len(classes))
        model.preprocessing = preprocessing
        if kind == "shapes":
            train = load_dataset(
                "shapes", "train", preprocessing, augment=r.augment, num_samples=r.train_images, seed=r.seed
            )
            val = load_dataset("shapes", "val", preprocessing, num_samples=r.val_images, seed=r.seed)
        else:
            train = load_dataset(kind, "train", preprocessing, augment=r.augment)
            has_val = not Path(kind).is_dir() or (Path(kind) / "val").is_dir()
            if has_val:
                val = load_dataset(kind, "val", preprocessing)
                val_idx = range(min(r.val_images, len(val)))
            else:  # a folder with only train/: hold out a fixed, spread-out part of it
                val = load_dataset(kind, "train", preprocessing, augment="none")
                g = torch.Generator().manual_seed(r.seed)
                order = torch.randperm(len(val), generator=g).tolist()
                n_val = min(r.val_images, max(1, len(order) // 5))
                val_idx, train_idx = order[:n_val], order[n_val:]
                train = Subset(train, train_idx)
            val = Subset(val, list(val_idx))
            if len(train) > r.train_images:
                g = torch.Generator().manual_seed(r.seed)
                train = Subset(train, torch.randperm(len(train), generator=g)[: r.train_images].tolist())
        return model, classes, train, val

    def _run(self) -> None:
        from hvit.train import HViTTrainer, TrainConfig

        try:
            model, classes, train, val = self._prepare()
            self.model, self.class_names, self._val = model, classes, val
            first = val[0]
            self._snapshot_input = first[0].unsqueeze(0)
            self.snapshot_image = _denormalise(model, self._snapshot_input)[0]
            self._snapshot(0)
            if self._stop.is_set():
                self.phase, self.message = "stopped", "stopped before the first batch"
                return
            r = self.request
            config = TrainConfig(
                epochs=r.epochs,
                batch_size=r.batch_size,
                lr=r.lr,
                warmup_epochs=min(1.0, r.epochs / 5),
                seed=r.seed,
                amp=False,
            )
            self.trainer = HViTTrainer(model, config=config, train_data=train, val_data=val, callbacks=[self])
            self.total_steps = self.trainer.total_steps
            if self._stop.is_set():
                self.trainer.request_stop()
            self.phase = "running"
            self.trainer.fit()
            model.eval()
            if self.epochs or self.batches:
                self.results = self._evaluate()  # before the phase changes: a UI that sees the end sees these
            self.phase, self.message = self.trainer.status, self.trainer.message
        except Exception as err:  # shown to the user as the reason the run failed
            self.phase, self.message = "failed", f"{type(err).__name__}: {err}" if not str(err) else str(err)
            if self.model is not None:
                self.model.eval()

    # trainer callbacks (called in the training thread)
    def on_batch_end(self, trainer: object, logs: dict[str, float]) -> None:
        with self._lock:
            self.batches.append(dict(logs))

    def on_epoch_end(self, trainer: object, logs: dict[str, float]) -> None:
        with self._lock:
            self.epochs.append(dict(logs))
        self._snapshot(int(logs["epoch"]))

    def _snapshot(self, epoch: int) -> None:
        from hvit.explain.rollout import attention_rollout

        rollout = attention_rollout(self.model, self._snapshot_input)
        with torch.no_grad():
            was = self.model.training
            probs = self.model.eval()(self._snapshot_input).softmax(-1)[0]
            self.model.train(was)
        k = int(probs.argmax())
        with self._lock:
            self.snapshots.append(
                (epoch, rollout.to_image()[0].numpy(), self.class_names[k], float(probs[k]))
            )

    @torch.no_grad()
    def _evaluate(self, n_samples: int = 12) -> dict:
        from torch.utils.data import DataLoader

        from hvit.metrics import confusion_matrix

        logits, labels, images = [], [], []
        for x, y in DataLoader(self._val, batch_size=128):
            logits.append(self.model(x))
            labels.append(y)
            if sum(len(i) for i in images) < n_samples:
                images.append(_denormalise(self.model, x[:n_samples]))
        out, target = torch.cat(logits), torch.cat(labels)
        probs = out.softmax(-1)
        cm = confusion_matrix(out, target, num_classes=len(self.class_names))
        return {
            "confusion": cm.numpy(),
            "accuracy": float((probs.argmax(-1) == target).float().mean()),
            "samples": {
                "images": np.concatenate(images)[:n_samples],
                "labels": target[:n_samples].tolist(),
                "predictions": probs.argmax(-1)[:n_samples].tolist(),
                "probabilities": probs.max(-1).values[:n_samples].tolist(),
            },
        }

    def checkpoint_bytes(self) -> bytes:
        """The trained model as a checkpoint file (safetensors) for download, reloadable anywhere."""
        import tempfile

        from hvit.train import save_checkpoint

        with tempfile.TemporaryDirectory() as tmp:
            path = save_checkpoint(Path(tmp) / "model.safetensors", self.model)
            return path.read_bytes()


def _denormalise(model: HierarchialViT, x: torch.Tensor) -> np.ndarray:
    """(B, C, S, S) normalised input -> (B, S, S, 3) float images in [0, 1] for display."""
    mean = torch.tensor(model.preprocessing.mean).view(1, -1, 1, 1)
    std = torch.tensor(model.preprocessing.std).view(1, -1, 1, 1)
    rgb = (x * std + mean).clamp(0, 1)
    if rgb.shape[1] == 1:
        rgb = rgb.expand(-1, 3, -1, -1)
    return rgb.permute(0, 2, 3, 1).numpy()


def training_curves_figure(batches: Sequence[dict], epochs: Sequence[dict]) -> go.Figure:
    """Loss and accuracy against epochs: every batch (thin) and every epoch's validation (markers).

    Args:
        batches: per-batch logs with ``epoch`` (fractional), ``loss`` and ``accuracy``.
        epochs: per-epoch logs with ``epoch``, ``train_loss``, ``train_accuracy``, ``val_loss``,
            ``val_accuracy``.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=["Loss", "Accuracy"], horizontal_spacing=0.08)
    x = [b["epoch"] for b in batches]
    for col, key, colour in ((1, "loss", "#3b5bdb"), (2, "accuracy", "#3b5bdb")):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[b[key] for b in batches],
                mode="lines" if len(batches) > 1 else "markers",
                name="training (each batch)",
                line=dict(color=colour, width=1.2),
                opacity=0.55,
                legendgroup="train",
                showlegend=col == 1,
                hovertemplate=f"epoch %{{x:.2f}}: {key} %{{y:.3f}}<extra>batch</extra>",
            ),
            row=1,
            col=col,
        )
        ex = [e["epoch"] for e in epochs]
        fig.add_trace(
            go.Scatter(
                x=ex,
                y=[e[f"train_{key}"] for e in epochs],
                mode="lines+markers",
                name="training (epoch mean)",
                line=dict(color="#1c3faa", width=2.5),
                legendgroup="train_epoch",
                showlegend=col == 1,
                hovertemplate=f"epoch %{{x}}: {key} %{{y:.3f}}<extra>training</extra>",
            ),
            row=1,
            col=col,
        )
        if epochs and f"val_{key}" in epochs[0]:
            fig.add_trace(
                go.Scatter(
                    x=ex,
                    y=[e[f"val_{key}"] for e in epochs],
                    mode="lines+markers",
                    name="validation",
                    line=dict(color="#e8590c", width=2.5),
                    marker=dict(size=8),
                    legendgroup="val",
                    showlegend=col == 1,
                    hovertemplate=f"epoch %{{x}}: {key} %{{y:.3f}}<extra>validation</extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="epoch", rangemode="tozero")
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    fig.update_layout(
        height=330,
        margin=dict(l=10, r=10, t=40, b=10),
        template="plotly_white",
        legend=dict(orientation="h", yanchor="bottom", y=-0.38, x=0),
        uirevision="training",  # keep zoom while the figure is redrawn every second
    )
    return fig


def confusion_figure(cm: np.ndarray, class_names: Sequence[str]) -> go.Figure:
    """Confusion matrix heat map: rows are true classes, columns predicted ones, cells show counts."""
    import plotly.graph_objects as go

    cm = np.asarray(cm)
    row_share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    names = list(class_names)
    fig = go.Figure(
        go.Heatmap(
            z=row_share,
            x=names,
            y=names,
            text=cm,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar=dict(title="share of row", tickformat=".0%"),
            hovertemplate="true %{y}, predicted %{x}: %{text} images (%{z:.0%})<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", title_text="true class")
    fig.update_xaxes(title_text="predicted class", side="bottom")
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=10, b=10), template="plotly_white")
    return fig


def enlarge(image: np.ndarray, size: int = 112) -> Image.Image:
    """A small (H, W, 3) image in [0, 1] (or uint8) scaled up with sharp pixels, for display."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr * 255), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    scale = max(1, size // max(img.size))
    return img.resize((img.size[0] * scale, img.size[1] * scale), Image.Resampling.NEAREST)


# ---------------------------------------------------------------------------------------------------
# Attention and attributions: scores against a ground-truth mask, the randomisation check, figures.
# ---------------------------------------------------------------------------------------------------


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
    heat: np.ndarray | torch.Tensor,
    pixel: tuple[int, int],
    grid: tuple[int, int],
    stride: int,
    title: str = "",
    height: int = 380,
) -> go.Figure:
    """Attention of one query over the image, with the query marked and every query token clickable.

    Args:
        image: (S, S, 3) in [0, 1].
        heat: (S, S) attention painted over the key footprints.
        pixel: the query pixel (y, x).
        grid: the stage's query grid (H, W).
        stride: pixels per query token.
        title: figure title.
        height: figure height in pixels.

    Returns:
        The overlay figure plus a marker trace of token centres (named "query tokens", one point per
        token with ``customdata`` (y, x)) that a UI can use to pick a new query with a click.
    """
    import plotly.graph_objects as go

    from hvit.explain.figures import overlay_figure
    from hvit.explain.geometry import pixel_to_token, token_centres

    fig = overlay_figure(image, heat, opacity=0.6, title=title, opacity_slider=False, height=height)
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
    fig.update_layout(clickmode="event+select", dragmode=False, margin=dict(l=0, r=0, t=40, b=0))
    return fig


def key_grid_figure(keys: np.ndarray | torch.Tensor, title: str = "", height: int = 380) -> go.Figure:
    """The raw attention of one query over the reduced key grid (h, w), values written in small grids."""
    import plotly.graph_objects as go

    z = np.asarray(keys.detach().cpu() if isinstance(keys, torch.Tensor) else keys, dtype=np.float32)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            colorscale="Inferno",
            zmin=0,
            zmax=max(float(z.max()), 1e-6),
            text=[[f"{v:.2f}" for v in row] for row in z] if z.size <= 64 else None,
            texttemplate="%{text}" if z.size <= 64 else None,
            textfont=dict(size=13),
            hovertemplate="key (%{y}, %{x}): %{z:.3f}<extra></extra>",
            colorbar=dict(thickness=12),
        )
    )
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", title_text="key row")
    fig.update_xaxes(constrain="domain", title_text="key column")
    fig.update_layout(
        title=title, height=height, margin=dict(l=10, r=10, t=40, b=10), template="plotly_white"
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


def patch_grid_figure(image: np.ndarray, grid: tuple[int, int], stride: int, height: int = 380) -> go.Figure:
    """The input image cut into its stage-1 patches: one cell per token."""
    import plotly.graph_objects as go

    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    fig = go.Figure(go.Image(z=img, hoverinfo="skip"))
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
