"""The classic classroom data sets (MNIST, Fashion-MNIST, CIFAR-10) through torchvision.

With internet they download on first use. Offline (CI, a classroom without network) the error says which
files to fetch elsewhere and exactly where to put them, instead of a stack of URL errors.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset
from torchvision import datasets

__all__ = ["CLASSIC_DATASETS", "ClassicInfo", "default_data_dir", "load_classic"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassicInfo:
    """What hvit knows about a torchvision data set.

    Attributes:
        title: the data set's usual name.
        cls: torchvision dataset class.
        folder: where torchvision looks for the files, relative to the data directory.
        files: the files to place there when there is no internet.
        mean: per-channel pixel mean (3 values: images are converted to RGB).
        std: per-channel pixel standard deviation.
        native_size: side of the images in pixels.
    """

    title: str
    cls: type
    folder: str
    files: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: int


_IDX = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

CLASSIC_DATASETS: dict[str, ClassicInfo] = {
    "mnist": ClassicInfo("MNIST", datasets.MNIST, "MNIST/raw", _IDX, (0.1307,) * 3, (0.3081,) * 3, 28),
    "fashion-mnist": ClassicInfo(
        "Fashion-MNIST", datasets.FashionMNIST, "FashionMNIST/raw", _IDX, (0.2860,) * 3, (0.3530,) * 3, 28
    ),
    "cifar10": ClassicInfo(
        "CIFAR-10",
        datasets.CIFAR10,
        ".",
        ("cifar-10-python.tar.gz",),
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        32,
    ),
}


def default_data_dir() -> Path:
    """Where downloaded data sets live: ``$HVIT_DATA_DIR`` or ``~/.cache/hvit/data``."""
    return Path(os.environ.get("HVIT_DATA_DIR", "~/.cache/hvit/data")).expanduser()


def load_classic(
    name: str,
    split: str = "train",
    root: str | Path | None = None,
    transform: Callable[[Any], Any] | None = None,
    download: bool = True,
) -> Dataset:
    """A torchvision classroom data set.

    Args:
        name: "mnist", "fashion-mnist" or "cifar10".
        split: "train", or "val" / "test" (both are the official test set: these sets have no other).
        root: data directory (default `default_data_dir()`).
        transform: applied to each PIL image (grayscale for MNIST and Fashion-MNIST).
        download: fetch the files when they are missing.

    Returns:
        The torchvision dataset, with ``classes`` and ``class_to_idx``.

    Raises:
        RuntimeError: the files are missing and cannot be downloaded; the message says where to put them.
    """
    if name not in CLASSIC_DATASETS:
        raise ValueError(f"unknown data set {name!r}; classic data sets are {sorted(CLASSIC_DATASETS)}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test' for {name}, got {split!r}")
    info = CLASSIC_DATASETS[name]
    root = Path(root).expanduser() if root is not None else default_data_dir()
    train = split == "train"
    try:
        return info.cls(str(root), train=train, transform=transform, download=False)
    except RuntimeError as missing:
        if not download:
            raise RuntimeError(_where_to_put(info, root, "download=False")) from missing
    try:
        root.mkdir(parents=True, exist_ok=True)
        # torchvision prints its download progress; keep it out of the user's terminal and logs.
        with contextlib.redirect_stdout(io.StringIO()) as out:
            dataset = info.cls(str(root), train=train, transform=transform, download=True)
        logger.debug("%s download output: %s", info.title, out.getvalue())
        return dataset
    except Exception as e:  # URLError, HTTPError, timeouts, checksum failures: all mean "get the files"
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise RuntimeError(_where_to_put(info, root, reason)) from e


def _where_to_put(info: ClassicInfo, root: Path, reason: str) -> str:
    folder = (root / info.folder).resolve()
    return (
        f"{info.title} is not in '{root}' and could not be downloaded ({reason}). Without internet, "
        f"download these files on another machine and put them in '{folder}': {', '.join(info.files)}. "
        f"Or pass another data directory (--data-dir, or the HVIT_DATA_DIR environment variable)."
    )
