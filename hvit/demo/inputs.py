"""The models and images both apps start from: the shipped model, checked image input, prediction,
and sample images with a known answer (the shapes set's ground-truth masks)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hvit.assets import sample_images as sample_images  # re-exported for the apps
from hvit.assets import shipped_checkpoint
from hvit.model import HierarchialViT

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_UPLOAD_BYTES = 10 * 2**20  # 10 MiB: larger files are refused before decoding
MAX_IMAGE_SIDE = 4096  # pixels; guards against decompression bombs and huge resizes
SHIPPED = "Shipped shapes model (offline)"
IMAGENET = "pvt_v2_b0 ImageNet (timm, needs internet)"


class ImageInputError(ValueError):
    """An image the user gave cannot be used; the message says why and what would work."""


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


def enlarge(image: np.ndarray, size: int = 112) -> Image.Image:
    """A small (H, W, 3) image in [0, 1] (or uint8) scaled up with sharp pixels, for display."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr * 255), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    scale = max(1, size // max(img.size))
    return img.resize((img.size[0] * scale, img.size[1] * scale), Image.Resampling.NEAREST)
