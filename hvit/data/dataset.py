"""A folder of images, one sub-folder per class: the layout every hvit tool reads.

::

    root/
      train/
        cat/001.png
        dog/xyz.jpg
      val/
        cat/...

Classes are the sorted names of the class folders, so the same folders always give the same labels.
Hidden files and folders (a leading dot, such as ``.ipynb_checkpoints``) are skipped; images may sit in
nested folders below their class folder. Anything wrong with the folder is reported with the path and
what was expected there, because "0 samples" or a bare PIL traceback teaches nobody anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torchvision.datasets import DatasetFolder

__all__ = ["IMG_EXTENSIONS", "HViTDataset", "ImageReadError", "load_image"]

# torchvision's list plus GIF. Compared lower-case, so "IMG_1.JPG" counts.
IMG_EXTENSIONS: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
)

_LAYOUT = "root/<split>/<class name>/<image file>"


class ImageReadError(OSError):
    """An image file that exists but cannot be decoded."""


def _to_8bit(img: Image.Image) -> Image.Image:
    # 16-bit and 32-bit grayscale (medical scans, some scientific PNGs): PIL's convert("RGB") would clip
    # everything above 255 to white, so rescale to 8 bits by hand first.
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr * 255.0 if arr.size and float(arr.max()) <= 1.0 else arr
    elif img.mode.startswith("I;16") or (arr.size and int(arr.max()) > 255):
        arr = arr / 257.0
    return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "L")


def load_image(path: str | Path, mode: str | None = "RGB") -> Image.Image:
    """Read an image file, converting it to ``mode``.

    Args:
        path: image file.
        mode: PIL mode to convert to ("RGB", "L", ...); ``None`` keeps the file's own mode. Grayscale,
            palette (GIF), 16-bit and alpha images all become plain RGB by default. Multi-frame files
            (animated GIF, TIFF stacks) give their first frame.

    Returns:
        The decoded image.

    Raises:
        ImageReadError: the file cannot be decoded; the message names the path.
    """
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageReadError(
            f"cannot read image file '{path}': {e}. Expected a readable image "
            f"({', '.join(x[1:] for x in IMG_EXTENSIONS)}); remove or replace this file."
        ) from e
    if mode is None or img.mode == mode:
        return img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _to_8bit(img)
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # the palette's transparent entry needs an alpha step, or PIL warns
    return img.convert(mode)


def _is_visible(name: str) -> bool:
    return not name.startswith(".")


class HViTDataset(DatasetFolder):
    """Images in ``root/<split>/<class name>/<image file>``.

    Args:
        root: folder holding one sub-folder per split.
        transform: applied to each PIL image, e.g. ``build_transforms(model.preprocessing, train=True)``.
        split: split folder to read ("train", "val", "test", ...).
        mode: PIL mode every image is converted to (default "RGB"; ``None`` keeps each file's mode).
        target_transform: applied to each label.

    Attributes:
        classes: sorted class names. class_to_idx: class name -> label.
        samples: ``(path, label)`` pairs, sorted by class then path. targets: the labels alone.
        split_dir: the folder read, ``root/split``.

    Raises:
        FileNotFoundError: ``root`` or ``root/split`` is missing, holds no class folders, or a class
            folder holds no image.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable[[Any], Any] | None = None,
        split: str = "train",
        mode: str | None = "RGB",
        target_transform: Callable[[int], Any] | None = None,
    ) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else "does not exist"
            raise FileNotFoundError(f"dataset folder '{root}' {what}; expected the layout {_LAYOUT}")
        split_dir = root / split
        if not split_dir.is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir() and _is_visible(p.name))
            raise FileNotFoundError(
                f"split folder '{split_dir}' does not exist; expected the layout {_LAYOUT} with a "
                f"'{split}' folder. Folders found in '{root}': {', '.join(found) or 'none'}"
            )
        self.split, self.mode, self.split_dir = split, mode, split_dir
        super().__init__(
            str(split_dir),
            loader=self._load,
            extensions=IMG_EXTENSIONS,
            transform=transform,
            target_transform=target_transform,
        )
        self.root = str(root)  # DatasetFolder set it to the split folder; keep the documented meaning

    def _load(self, path: str) -> Image.Image:
        return load_image(path, self.mode)

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        """Sorted visible sub-folders of ``directory``; raises ``FileNotFoundError`` when there are none."""
        entries = [e for e in os.scandir(directory) if _is_visible(e.name)]
        classes = sorted(e.name for e in entries if e.is_dir())
        if not classes:
            loose = sum(e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS) for e in entries)
            hint = (
                f"; it holds {loose} image files directly: move them into one folder per class"
                if loose
                else ""
            )
            raise FileNotFoundError(
                f"no class folders in '{directory}'{hint}. Expected {_LAYOUT}, e.g. '{directory}/cat/001.png'"
            )
        return classes, {c: i for i, c in enumerate(classes)}

    @staticmethod
    def make_dataset(
        directory: str | Path,
        class_to_idx: dict[str, int] | None = None,
        extensions: str | tuple[str, ...] | None = IMG_EXTENSIONS,
        is_valid_file: Callable[[str], bool] | None = None,
        allow_empty: bool = False,
    ) -> list[tuple[str, int]]:
        """``(path, label)`` of every image below each class folder, sorted; empty classes raise."""
        if class_to_idx is None:
            raise ValueError("class_to_idx is required")
        extensions = tuple(extensions) if extensions is not None else IMG_EXTENSIONS
        samples: list[tuple[str, int]] = []
        for cls, idx in sorted(class_to_idx.items(), key=lambda kv: kv[1]):
            class_dir = os.path.join(directory, cls)
            found = []
            for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if _is_visible(d))
                for name in sorted(filenames):
                    path = os.path.join(dirpath, name)
                    ok = is_valid_file(path) if is_valid_file else name.lower().endswith(extensions)
                    if ok and _is_visible(name):
                        found.append((path, idx))
            if not found and not allow_empty:
                raise FileNotFoundError(
                    f"class folder '{class_dir}' holds no image files; expected images "
                    f"({', '.join(x[1:] for x in extensions)}) in it, or remove the folder"
                )
            samples.extend(found)
        return samples

    def __repr__(self) -> str:
        return f"HViTDataset(root={self.root!r}, split={self.split!r}, classes={len(self.classes)}, samples={len(self)})"
