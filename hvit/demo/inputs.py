"""The models and images both apps start from: the shipped models, checked image input, prediction,
and sample images with a known answer (the generated sets' ground-truth masks)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hvit.assets import DEFAULT_MODEL, SHAPES_MODEL, shipped_checkpoint
from hvit.assets import sample_images as sample_images  # re-exported for the apps
from hvit.data import images
from hvit.model import HierarchialViT

IMAGE_SUFFIXES = images.IMG_EXTENSIONS  # what the apps accept is what the data sets read
MAX_UPLOAD_BYTES = 10 * 2**20  # 10 MiB: larger files are refused before decoding
MAX_IMAGE_SIDE = 4096  # pixels; checked from the header, before decoding (decompression bombs)
# The shipped models by label, the apps' default first: the 96 px classroom model (legible attention
# maps), then the fast 32 px shapes model that live training reproduces.
SHIPPED = "Shipped classroom model, 96 px (offline)"
SHIPPED_SHAPES = "Shipped shapes model, 32 px (fast)"
SHIPPED_MODELS: dict[str, str] = {SHIPPED: DEFAULT_MODEL, SHIPPED_SHAPES: SHAPES_MODEL}
IMAGENET = "pvt_v2_b0 ImageNet (timm, needs internet)"


# The apps' name for the core's error: an image the user gave cannot be used; the message says why and
# what would work. (Both a ValueError and an OSError.)
ImageInputError = images.ImageReadError


def load_shipped_model(name: str = DEFAULT_MODEL) -> HierarchialViT:
    """A model shipped with the package, in eval mode.

    Args:
        name: one of `hvit.assets.shipped_models()`; default the classroom model.

    Raises:
        FileNotFoundError: no such shipped model, or its file is missing (the message says what to do).
    """
    from hvit.train import load_checkpoint

    return load_checkpoint(shipped_checkpoint(name)).eval()


def model_choices() -> list[str]:
    """Labels of every model an app can offer: the shipped models (the default first), ImageNet, then
    each preset (random weights)."""
    from hvit.registry import list_models

    return [*SHIPPED_MODELS, IMAGENET] + [f"{name} (random weights)" for name in list_models()]


def load_model_choice(label: str, num_classes: int | None = None) -> HierarchialViT:
    """Build the model behind a label of `model_choices`, in eval mode.

    Raises:
        hvit.PretrainedUnavailableError: ImageNet weights asked for while offline.
        ValueError: an unknown label.
    """
    from hvit.registry import create_model

    if label in SHIPPED_MODELS:
        return load_shipped_model(SHIPPED_MODELS[label])
    if label == IMAGENET:
        return create_model("pvt_v2_b0", pretrained=True).eval()
    name = label.removesuffix(" (random weights)")
    overrides = {} if num_classes is None else {"num_classes": num_classes}
    return create_model(name, **overrides).eval()


def load_image(source: str | Path | bytes | Image.Image | np.ndarray, name: str | None = None) -> Image.Image:
    """`hvit.data.load_image` with the apps' limits: an RGB image from a path, the bytes of an upload, a
    PIL image or an (H, W[, C]) array.

    A path must name an image file (`IMAGE_SUFFIXES`) or have no suffix at all (a webcam capture), in
    which case the content decides.

    Args:
        source: what the user gave.
        name: how messages call it (default: a path's file name, not its temporary folder).

    Raises:
        ImageInputError: not a regular file, not an image, larger than `MAX_UPLOAD_BYTES` or
            `MAX_IMAGE_SIDE` pixels a side, or of an unsupported type.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix and path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ImageInputError(
                f"{path.name!r} is not a supported image file; use one of {', '.join(IMAGE_SUFFIXES)}"
            )
        name = name or path.name
    return images.load_image(
        source,
        max_bytes=MAX_UPLOAD_BYTES,
        max_side=MAX_IMAGE_SIDE,
        max_pixels=MAX_IMAGE_SIDE**2,
        name=name,
    )


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
            return np.asarray(images.load_image(candidate, mode="L")) >= 128
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
    index: int, img_size: int = 64, split: str = "test", scene: str = "single"
) -> tuple[Image.Image, str, np.ndarray]:
    """Image ``index`` of the generated shapes set: (RGB image, class name, (H, W) bool mask).

    Args:
        index: the image's number in ``split`` (seed 0).
        img_size: its side in pixels.
        split: "train", "val" or "test".
        scene: "single" (the ``shapes`` set) or "pair" (``shapes-pair``: the mask covers the large,
            labelled shape only).
    """
    from hvit.data import SHAPE_CLASSES, render_shape

    image, label, mask = render_shape(index, img_size, seed=0, split=split, scene=scene)
    return Image.fromarray(image, "RGB"), SHAPE_CLASSES[label], mask


def enlarge(image: np.ndarray, size: int = 112) -> Image.Image:
    """A small (H, W, 3) image in [0, 1] (or uint8) scaled up with sharp pixels, for display."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr * 255), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    scale = max(1, size // max(img.size))
    return img.resize((img.size[0] * scale, img.size[1] * scale), Image.Resampling.NEAREST)
