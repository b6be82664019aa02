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
nested folders below their class folder. Each image is read by `hvit.data.load_image` (regular files
only, sizes checked before decoding, EXIF orientation applied, every pixel mode to RGB by one rule).

Linked folders (symlinks) are followed, so a data set assembled from links to folders elsewhere works,
but each real folder is read once: a link that leads back into the split folder (or above it) is
skipped, because its images are already counted where they really are, or it is a loop that would
repeat them forever under several classes; a link to a folder already read is skipped too. Linked
files are read as they are. A named pipe, socket, device or broken link with an image's name is
refused when the folder is scanned, before it could block a reader.

Anything wrong with the folder is reported with the path and what was expected there, because
"0 samples" or a bare PIL traceback teaches nobody anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image
from torchvision.datasets import DatasetFolder

from hvit.data.images import IMG_EXTENSIONS, ImageReadError, file_kind, load_image

__all__ = ["HViTDataset"]

_LAYOUT = "root/<split>/<class name>/<image file>"


def _is_visible(name: str) -> bool:
    return not name.startswith(".")


def _overlaps(real: str, split_real: str) -> bool:
    """Whether a folder's real path is the split folder, inside it, or above it."""
    try:
        common = os.path.commonpath([real, split_real])
    except ValueError:  # on different drives
        return False
    return common in (real, split_real)


def _image_files(
    class_dir: str, split_real: str, seen: set[tuple[int, int]], wanted: Callable[[str], bool]
) -> Iterator[str]:
    """Paths of the wanted files below ``class_dir``: files of a folder (sorted), then its sub-folders
    (sorted, depth first), each real folder once and no link back into the split folder."""
    stack = [class_dir]
    while stack:
        folder = stack.pop()
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:
            continue  # reached again through a link: its images are already counted
        seen.add((info.st_dev, info.st_ino))
        try:
            with os.scandir(folder) as it:
                entries = sorted((e for e in it if _is_visible(e.name)), key=lambda e: e.name)
        except OSError as err:
            raise ImageReadError(
                f"cannot list the folder '{folder}' ({err.strerror or err}); check that it is readable"
            ) from err
        subfolders = []
        for entry in entries:
            if entry.is_dir():  # follows links
                if not (entry.is_symlink() and _overlaps(os.path.realpath(entry.path), split_real)):
                    subfolders.append(entry.path)
            elif wanted(entry.path):
                if not entry.is_file():
                    raise ImageReadError(_not_a_file(entry.path))
                yield entry.path
        stack.extend(reversed(subfolders))


def _not_a_file(path: str) -> str:
    if os.path.islink(path) and not os.path.exists(path):
        return (
            f"'{path}' is a link to '{os.readlink(path)}', which does not exist; remove the link or "
            "restore the file"
        )
    return (
        f"'{path}' is a {file_kind(os.stat(path).st_mode)}, not a regular file; an image in a data set "
        "folder must be a plain file: replace or remove it"
    )


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
        """``(path, label)`` of every image below each class folder, sorted; empty classes raise.

        Raises:
            FileNotFoundError: a class folder holds no image (or is a link back into the split).
            ImageReadError: an entry named like an image is not a regular file (a named pipe, a socket,
                a device, a broken link).
        """
        if class_to_idx is None:
            raise ValueError("class_to_idx is required")
        extensions = tuple(extensions) if extensions is not None else IMG_EXTENSIONS

        def wanted(path: str) -> bool:
            if is_valid_file is not None:
                return is_valid_file(path)
            return os.path.basename(path).lower().endswith(extensions)

        split_real = os.path.realpath(directory)
        seen: set[tuple[int, int]] = set()  # (device, inode) of every real folder read so far
        samples: list[tuple[str, int]] = []
        for cls, idx in sorted(class_to_idx.items(), key=lambda kv: kv[1]):
            class_dir = os.path.join(directory, cls)
            real = os.path.realpath(class_dir)
            why_empty = ""
            if os.path.islink(class_dir) and _overlaps(real, split_real):
                why_empty = f" (it is a link to '{real}', inside or above the split folder)"
                found = []
            else:
                found = [(path, idx) for path in _image_files(class_dir, split_real, seen, wanted)]
            if not found and not allow_empty:
                raise FileNotFoundError(
                    f"class folder '{class_dir}' holds no image files{why_empty}; expected images "
                    f"({', '.join(x[1:] for x in extensions)}) in it, or remove the folder"
                )
            samples.extend(found)
        return samples

    def __repr__(self) -> str:
        return f"HViTDataset(root={self.root!r}, split={self.split!r}, classes={len(self.classes)}, samples={len(self)})"
