"""Shapes: a procedurally generated classification set that needs no internet.

Every image holds one coloured shape (the label) at a random position, scale, rotation and colour, on a
cluttered background: a colour gradient, soft blobs, pixel noise, and distractors (thin lines and small
dots) that are never one of the classes. Every image comes with the exact ground-truth mask of its shape,
so an explanation method can be scored against where the evidence really is (pointing game, relevance
mass inside the mask).

Two scenes (``scene=``; as data set names, ``shapes`` and ``shapes-pair``):

- ``"single"`` (the default, data set ``shapes``): one shape, radius 28-45 % of the image side.
- ``"pair"`` (data set ``shapes-pair``): two shapes of *different* classes that never touch. The label
  is the **large** one (radius 24-32 % of the side); the other is a decoy of another class, at most half
  as wide (radius 9-12 %), with the same kind of colours. The mask covers the large shape only, so
  "where does the model look?" has a right answer (the large shape) and a wrong one (the decoy). The rule
  is unambiguous: the labelled shape's radius is always at least twice the decoy's.

Why procedural? A classroom needs a data set that downloads nothing, trains in seconds on a laptop CPU,
and has a known answer to "where is the object?". Generation is deterministic: image ``i`` of split
``s`` for seed ``k`` is a pure function of ``(k, s, i)``, so any subset, any order and any worker count
give the same pixels, and ``make_shapes(10, seed=k)`` is the first ten images of ``make_shapes(1000,
seed=k)``. Scene geometry is drawn in units of the image side, so the same seed at another ``img_size``
gives the same scenes, rendered at another resolution.

On disk (`write_shapes`) the set uses the folder layout `HViTDataset` reads, with masks kept apart so
they are never mistaken for a class or an image::

    root/train/<class>/train_00000.png         the image (RGB)
    root/train_masks/<class>/train_00000.png   its mask (L mode: 255 on the shape, 0 elsewhere)

Run ``python -m hvit.data shapes OUT --train 600 --val 120`` to write one.
"""

from __future__ import annotations

import argparse
import logging
import math
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

__all__ = [
    "SHAPE_CLASSES",
    "SHAPES_MEAN",
    "SHAPES_STD",
    "ShapesDataset",
    "make_shapes",
    "SHAPE_SCENES",
    "render_shape",
    "write_shapes",
]

logger = logging.getLogger(__name__)

# Sorted, so that the index of a class is the same in memory and when `HViTDataset` reads the folders.
SHAPE_CLASSES: tuple[str, ...] = ("circle", "cross", "ring", "square", "star", "triangle")

# Per-channel statistics of the generated images (measured on 5000 training images at 32 px, seed 0).
SHAPES_MEAN = (0.4957, 0.4956, 0.4969)
SHAPES_STD = (0.2060, 0.2049, 0.2056)

# Scene kinds and the built-in data set name of each (`hvit.data.load_dataset` accepts the names).
SHAPE_SCENES: dict[str, str] = {"single": "shapes", "pair": "shapes-pair"}

# "pair" scenes: radii (fractions of the image side) of the labelled shape and of the decoy, and the
# smallest gap between their bounding circles. 0.24 / 0.12: the label is always at least twice as wide.
_PAIR_LABEL_RADIUS = (0.24, 0.32)
_PAIR_DECOY_RADIUS = (0.09, 0.12)
_PAIR_GAP = 0.03

# Each split draws from its own random stream, so "train" and "val" never share an image.
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

_SUPERSAMPLE = 4  # draw at 4x and average down: anti-aliased edges, and a mask exact to 1/16 pixel


def _split_code(split: str) -> int:
    return _SPLIT_CODES.get(split, zlib.crc32(split.encode()) + len(_SPLIT_CODES))


# --- outlines -------------------------------------------------------------------------------------------
# Each class is a list of polygons in a unit frame (centre 0, "radius" about 1) and whether each one adds
# to or cuts out of the shape. Rotation, scale and position are applied afterwards. Rotation is uniform in
# [0, 2 pi), so no class may be a rotated copy of another (a diamond would just be a square).


def _regular(n: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)  # (n, 2)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    t = np.pi * np.arange(2 * points) / points
    return radii[:, None] * np.stack([np.cos(t), np.sin(t)], axis=1)  # (2 * points, 2)


def _cross(arm: float = 0.34) -> np.ndarray:
    a, b = arm, 1.0
    return np.array(
        [
            (-a, -b),
            (a, -b),
            (a, -a),
            (b, -a),
            (b, a),
            (a, a),
            (a, b),
            (-a, b),
            (-a, a),
            (-b, a),
            (-b, -a),
            (-a, -a),
        ]
    )


_OUTLINES: dict[str, list[tuple[np.ndarray, bool]]] = {
    "circle": [(_regular(48, 0.92), True)],
    "cross": [(_cross(), True)],
    "ring": [(_regular(48, 1.0), True), (_regular(48, 0.55), False)],
    "square": [(_regular(4, 1.05, np.pi / 4), True)],
    "star": [(_star(), True)],
    "triangle": [(_regular(3, 1.1, np.pi / 2), True)],
}


# --- rendering ------------------------------------------------------------------------------------------


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _coverage(size: int, draw: Callable[[ImageDraw.ImageDraw, float], None]) -> np.ndarray:
    """Fraction of each pixel covered by what ``draw`` paints, as an (H, W) float array in [0, 1]."""
    hi = size * _SUPERSAMPLE
    canvas = Image.new("L", (hi, hi), 0)
    draw(ImageDraw.Draw(canvas), hi)
    # Box-filter down: each output pixel is the mean of its 4x4 high-resolution pixels.
    return np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Clutter: a two-colour gradient, soft blobs, distractor lines and dots. Returns (H, W, 3) float."""
    # Muted colours (a grey level plus a small tint), so the shape's saturated colour stands out: the
    # task is "which outline?", not "where is anything at all?".
    c0, c1 = rng.uniform(0.2, 0.8, size=(2, 1)) + rng.uniform(-0.12, 0.12, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)  # (H, W) each, in [0, 1]
    ramp = np.clip(0.5 + (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle), 0, 1)[..., None]
    img = c0 * (1 - ramp) + c1 * ramp  # (H, W, 3)

    # Soft blobs: large, faint, muted. They are texture, not objects.
    k = rng.integers(2, 5)
    cx, cy = rng.uniform(0, 1, size=(2, k, 1, 1))
    rx, ry = rng.uniform(0.1, 0.35, size=(2, k, 1, 1))
    blobs = 0.5 * np.exp(-(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2))[..., None]  # (k, H, W, 1)
    tints = rng.uniform(0.2, 0.8, size=(k, 1)) + rng.uniform(-0.12, 0.12, size=(k, 3))
    for blob, colour in zip(blobs, tints, strict=True):
        img = img * (1 - blob) + blob * colour

    # Distractors: thin lines and small dots. They share the shapes' colours but not their outlines,
    # so a model must look at the outline, not at "the most saturated thing in the picture".
    # Drawn opaque on one high-resolution canvas; its coverage (alpha) is drawn on a second one.
    hi = size * _SUPERSAMPLE
    paint, cover = Image.new("RGB", (hi, hi)), Image.new("L", (hi, hi))
    pd, cd = ImageDraw.Draw(paint), ImageDraw.Draw(cover)
    for kind in ["line"] * rng.integers(1, 4) + ["dot"] * rng.integers(1, 5):
        rgb = tuple(
            int(255 * c) for c in _hsv_to_rgb(rng.uniform(), rng.uniform(0.3, 1), rng.uniform(0.3, 1))
        )
        if kind == "line":
            xy = [tuple(p) for p in rng.uniform(0, 1, size=(2, 2)) * hi]
            width = max(1, round(rng.uniform(0.012, 0.03) * hi))
            pd.line(xy, fill=rgb, width=width)
            cd.line(xy, fill=255, width=width)
        else:
            x, y, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.015, 0.035)
            box = [(x - r) * hi, (y - r) * hi, (x + r) * hi, (y + r) * hi]
            pd.ellipse(box, fill=rgb)
            cd.ellipse(box, fill=255)
    # Box-filtering both canvases gives alpha (coverage) and alpha * colour: composite "over" the clutter.
    alpha = np.asarray(cover.resize((size, size), Image.Resampling.BOX), dtype=np.float32)[..., None] / 255.0
    premultiplied = np.asarray(paint.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0
    return img * (1 - alpha) + premultiplied


def _rotation(angle: float) -> np.ndarray:
    return np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])  # (2, 2)


def _shape_alpha(name: str, img_size: int, centre: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """Coverage (H, W, 1) of shape ``name`` at ``centre`` (units of the image side), ``radius``, ``angle``."""
    rot = _rotation(angle)

    def draw_shape(d: ImageDraw.ImageDraw, s: float) -> None:
        for poly, solid in _OUTLINES[name]:
            pts = (poly @ rot.T) * radius + centre  # (n, 2) in units of the image side
            d.polygon([tuple(p) for p in pts * s], fill=255 if solid else 0)

    return _coverage(img_size, draw_shape)[..., None]


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """A saturated colour that stands out from the background under ``alpha`` (distance in RGB >= 0.45),
    so the shape is always visible; otherwise the most distant of 8 draws. Returns (3,) floats."""
    under = (background * alpha).sum((0, 1)) / max(float(alpha.sum()), 1e-6)
    colour, best = None, -1.0
    for _ in range(8):
        c = _hsv_to_rgb(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
        dist = float(np.linalg.norm(c - under))
        if dist > best:
            colour, best = c, dist
        if dist >= 0.45:
            break
    return colour


def _pair_layout(rng: np.random.Generator) -> tuple[float, np.ndarray, float, np.ndarray]:
    """Radii and centres of a labelled shape and a decoy that stay inside the frame and never touch.

    Returns:
        label radius, label centre (2,), decoy radius, decoy centre (2,), in units of the image side.
    """
    radius = rng.uniform(*_PAIR_LABEL_RADIUS)
    decoy_radius = rng.uniform(*_PAIR_DECOY_RADIUS)
    for _ in range(64):  # rejection sampling: about a third of the draws fit
        centre = rng.uniform(radius, 1 - radius, size=2)
        decoy = rng.uniform(decoy_radius, 1 - decoy_radius, size=2)
        if np.linalg.norm(centre - decoy) >= radius + decoy_radius + _PAIR_GAP:
            return radius, centre, decoy_radius, decoy
    # Never reached in practice; opposite corners always fit (distance 0.62 * sqrt(2) > 0.47).
    return radius, np.full(2, radius), decoy_radius, np.full(2, 1 - decoy_radius)


def render_shape(
    index: int,
    img_size: int = 32,
    seed: int = 0,
    split: str = "train",
    classes: Sequence[str] = SHAPE_CLASSES,
    scene: str = "single",
) -> tuple[np.ndarray, int, np.ndarray]:
    """Render image ``index`` of a shapes split.

    Args:
        index: image number; the label is ``index % len(classes)``, so every class is equally common.
        img_size: side of the square image in pixels.
        seed: seed of the data set.
        split: split name ("train", "val", "test" or any other name, each its own random stream).
        classes: class names, a subset of `SHAPE_CLASSES`.
        scene: "single" (one shape) or "pair" (the labelled large shape and a small decoy of another
            class; see the module docstring).

    Returns:
        image (H, W, 3) uint8, label int, mask (H, W) bool (True on the labelled shape only).
    """
    _check_scene(scene)
    label = index % len(classes)
    rng = np.random.default_rng([seed, _split_code(split), index])
    background = _background(rng, img_size)

    if scene == "single":
        # The shape: rotation uniform, radius 28-45% of the side, centred so it stays inside the frame.
        angle = rng.uniform(0, 2 * np.pi)
        radius = rng.uniform(0.28, 0.45)
        centre = rng.uniform(radius, 1 - radius, size=2)
        img = background
    else:
        radius, centre, decoy_radius, decoy_centre = _pair_layout(rng)
        angle = rng.uniform(0, 2 * np.pi)
        decoy_class = classes[(label + rng.integers(1, len(classes))) % len(classes)]  # never the label
        decoy = _shape_alpha(decoy_class, img_size, decoy_centre, decoy_radius, rng.uniform(0, 2 * np.pi))
        img = background * (1 - decoy) + decoy * _contrasting_colour(rng, background, decoy)

    alpha = _shape_alpha(classes[label], img_size, centre, radius, angle)  # (H, W, 1)
    img = img * (1 - alpha) + alpha * _contrasting_colour(rng, background, alpha)
    img = img + rng.normal(0, 0.025, size=img.shape)  # sensor-like pixel noise over everything
    image = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return image, label, alpha[..., 0] >= 0.5


def _check_scene(scene: str) -> None:
    if scene not in SHAPE_SCENES:
        raise ValueError(f"scene must be one of {list(SHAPE_SCENES)}, got {scene!r}")


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    unknown = [c for c in classes if c not in _OUTLINES]
    if unknown or len(classes) < 2:
        raise ValueError(f"classes must be at least two of {list(SHAPE_CLASSES)}, got {list(classes)!r}")
    return tuple(sorted(classes))


def make_shapes(
    num_samples: int,
    img_size: int = 32,
    seed: int = 0,
    split: str = "train",
    classes: Sequence[str] = SHAPE_CLASSES,
    scene: str = "single",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generate a shapes split in memory.

    Args:
        num_samples: number of images.
        img_size: side of the square images in pixels (any size >= 8).
        seed: seed of the data set; the same arguments always give the same tensors.
        split: split name; each split is its own random stream.
        classes: class names (sorted), a subset of `SHAPE_CLASSES`.
        scene: "single" or "pair" (a labelled large shape and a small decoy; see the module docstring).

    Returns:
        images (N, 3, H, W) uint8, labels (N,) int64, masks (N, H, W) bool (the labelled shape).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples must be an int >= 0, got {num_samples!r}")
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 8:
        raise ValueError(f"img_size must be an int >= 8, got {img_size!r}")
    classes = _check_classes(classes)
    _check_scene(scene)
    images = np.empty((num_samples, img_size, img_size, 3), dtype=np.uint8)
    masks = np.empty((num_samples, img_size, img_size), dtype=bool)
    labels = np.empty(num_samples, dtype=np.int64)
    for i in range(num_samples):
        images[i], labels[i], masks[i] = render_shape(i, img_size, seed, split, classes, scene)
    return (
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(labels),
        torch.from_numpy(masks),
    )


class ShapesDataset(Dataset):
    """The shapes set as a map-style dataset, generated once in memory.

    Args:
        num_samples: number of images.
        img_size: side of the images in pixels.
        seed: seed of the data set.
        split: split name ("train", "val", "test", ...), each its own random stream.
        transform: applied to the image, a ``tv_tensors.Image`` (3, H, W) uint8; when ``return_mask`` is
            set it is called as ``transform(image, mask)`` with a ``tv_tensors.Mask``, so geometric
            `torchvision.transforms.v2` augmentations move the mask with the image.
        return_mask: make ``__getitem__`` return ``(image, label, mask)``.
        classes: class names, a subset of `SHAPE_CLASSES`.
        scene: "single" or "pair" (see the module docstring).

    Attributes:
        classes: sorted class names; ``class_to_idx`` maps them to labels.
        images: (N, 3, H, W) uint8. labels: (N,) int64. masks: (N, H, W) bool.
    """

    def __init__(
        self,
        num_samples: int = 6000,
        img_size: int = 32,
        seed: int = 0,
        split: str = "train",
        transform: Callable[..., Any] | None = None,
        return_mask: bool = False,
        classes: Sequence[str] = SHAPE_CLASSES,
        scene: str = "single",
    ) -> None:
        self.classes = list(_check_classes(classes))
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.img_size, self.seed, self.split, self.scene = img_size, seed, split, scene
        self.transform, self.return_mask = transform, return_mask
        self.images, self.labels, self.masks = make_shapes(
            num_samples, img_size, seed, split, self.classes, scene
        )

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        """The untransformed ``(image (3, H, W) uint8, label, mask (H, W) bool)`` of ``index``."""
        return self.images[index], int(self.labels[index]), self.masks[index]

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        # Imported here, not with the module: drawing a shape (the apps, `render_shape`) should not pay
        # for torchvision's first import (seconds); after it, this is a dictionary look-up.
        from torchvision import tv_tensors

        image, label, mask = self.sample(index)
        image = tv_tensors.Image(image)
        if not self.return_mask:
            return (self.transform(image) if self.transform else image), label
        mask = tv_tensors.Mask(mask)
        if self.transform:
            image, mask = self.transform(image, mask)
        return image, label, mask

    def __repr__(self) -> str:
        scene = "" if self.scene == "single" else f", scene={self.scene!r}"
        return f"ShapesDataset(split={self.split!r}, num_samples={len(self)}, img_size={self.img_size}, seed={self.seed}{scene})"


def write_shapes(
    root: str | Path,
    num_samples: int | dict[str, int] = 600,
    img_size: int = 32,
    seed: int = 0,
    classes: Sequence[str] = SHAPE_CLASSES,
    scene: str = "single",
) -> Path:
    """Write a shapes set to disk in the folder layout `HViTDataset` reads, masks alongside.

    Layout: ``root/<split>/<class>/<split>_<index>.png`` for images and
    ``root/<split>_masks/<class>/<same name>.png`` for masks (L mode, 255 on the shape). `HViTDataset`
    reads ``root/<split>`` only, so masks never become a class or an image.

    Args:
        root: output folder (created; existing files with the same names are overwritten).
        num_samples: images per split, or a mapping such as ``{"train": 600, "val": 120}``; an int
            writes that many to both "train" and "val".
        img_size: side of the images in pixels.
        seed: seed of the data set; the files equal `make_shapes` with the same arguments.
        classes: class names, a subset of `SHAPE_CLASSES`.
        scene: "single" or "pair" (see the module docstring).

    Returns:
        ``root`` as a ``Path``.
    """
    root = Path(root)
    splits = num_samples if isinstance(num_samples, dict) else {"train": num_samples, "val": num_samples}
    classes = _check_classes(classes)
    for split, n in splits.items():
        images, labels, masks = make_shapes(n, img_size, seed, split, classes, scene)
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            (root / f"{split}_masks" / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = f"{split}_{i:05d}.png"
            cls = classes[int(labels[i])]
            Image.fromarray(images[i].permute(1, 2, 0).numpy(), "RGB").save(root / split / cls / name)
            Image.fromarray(masks[i].numpy().astype(np.uint8) * 255, "L").save(
                root / f"{split}_masks" / cls / name
            )
    logger.info("wrote shapes %s to %s", splits, root)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m hvit.data shapes OUT --train N --val N [--test N] [--img-size S] [--seed K] [--scene pair]``."""
    p = argparse.ArgumentParser(
        prog="python -m hvit.data shapes", description=write_shapes.__doc__.splitlines()[0]
    )
    p.add_argument("out", help="output folder")
    p.add_argument("--train", type=int, default=600, help="training images")
    p.add_argument("--val", type=int, default=120, help="validation images")
    p.add_argument("--test", type=int, default=0, help="test images")
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scene", choices=list(SHAPE_SCENES), default="single", help="one shape or a pair")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    counts = {s: n for s, n in (("train", a.train), ("val", a.val), ("test", a.test)) if n > 0}
    write_shapes(a.out, counts, a.img_size, a.seed, scene=a.scene)
