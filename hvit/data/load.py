"""One entry point for every data source: the CLI, the apps and the tests all call `load_dataset`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from hvit.data.classic import CLASSIC_DATASETS, load_classic
from hvit.data.dataset import HViTDataset
from hvit.data.shapes import SHAPE_SCENES, SHAPES_MEAN, SHAPES_STD, ShapesDataset
from hvit.data.transforms import build_transforms, estimate_mean_std
from hvit.preprocessing import Preprocessing

__all__ = ["BUILTIN_DATASETS", "SHAPES_SIZES", "dataset_stats", "load_dataset"]

# The generated sets by name ("shapes", "shapes-pair") and the scene each one draws.
_SHAPES_SCENE_OF = {name: scene for scene, name in SHAPE_SCENES.items()}
BUILTIN_DATASETS = ("shapes", *CLASSIC_DATASETS, "shapes-pair")

# Images per split of the generated shapes set when the caller does not say.
SHAPES_SIZES = {"train": 6000, "val": 1000, "test": 1000}


def _kind(name_or_path: str | Path) -> str:
    name = str(name_or_path)
    if name in BUILTIN_DATASETS:
        return name
    if isinstance(name_or_path, Path) or any(c in name for c in "/\\.~") or Path(name).exists():
        return "folder"
    raise ValueError(
        f"unknown data set {name!r}: give one of {', '.join(BUILTIN_DATASETS)} or the path of a folder "
        "laid out as root/<split>/<class name>/<image file>"
    )


def load_dataset(
    name_or_path: str | Path,
    split: str = "train",
    preprocessing: Preprocessing | None = None,
    transform: Callable[..., Any] | None = None,
    *,
    augment: str = "light",
    data_dir: str | Path | None = None,
    download: bool = True,
    num_samples: int | None = None,
    seed: int = 0,
    img_size: int | None = None,
    return_mask: bool = False,
) -> Dataset:
    """Load a split of a built-in data set or of a folder of images.

    Args:
        name_or_path: "shapes", "shapes-pair" (a labelled large shape and a small decoy of another
            class), "mnist", "fashion-mnist", "cifar10", or a folder laid out as
            ``root/<split>/<class name>/<image file>``.
        split: "train", "val" or "test" (a folder may name any split folder it has).
        preprocessing: build the transforms from it (training augmentation when ``split == "train"``).
        transform: use this transform instead (takes precedence over ``preprocessing``).
        augment: augmentation strength for the training split ("none", "light", "strong").
        data_dir: where MNIST / Fashion-MNIST / CIFAR-10 live (default ``$HVIT_DATA_DIR`` or
            ``~/.cache/hvit/data``).
        download: download classic data sets when missing.
        num_samples: shapes only: number of images (default `SHAPES_SIZES` of the split).
        seed: shapes only: seed of the generated set.
        img_size: shapes only: side of the generated images (default ``preprocessing.img_size`` or 32).
        return_mask: shapes only: return ``(image, label, mask)`` triples.

    Returns:
        A map-style dataset of ``(image, label)`` with ``classes`` and ``class_to_idx`` attributes.
        Without a transform or preprocessing the images are PIL images (uint8 tensors for shapes).
    """
    kind = _kind(name_or_path)
    if transform is None and preprocessing is not None:
        transform = build_transforms(preprocessing, train=split == "train", augment=augment)
    if kind in _SHAPES_SCENE_OF:
        size = img_size or (preprocessing.img_size if preprocessing is not None else 32)
        n = num_samples if num_samples is not None else SHAPES_SIZES.get(split, SHAPES_SIZES["test"])
        return ShapesDataset(
            n, size, seed=seed, split=split, transform=transform, return_mask=return_mask,
            scene=_SHAPES_SCENE_OF[kind],
        )  # fmt: skip
    if return_mask or num_samples is not None:
        raise ValueError(
            f"return_mask and num_samples apply to the shapes data set only, not to {name_or_path!r}"
        )
    if kind == "folder":
        return HViTDataset(name_or_path, transform=transform, split=split)
    return load_classic(str(name_or_path), split, root=data_dir, transform=transform, download=download)


def dataset_stats(
    name_or_path: str | Path, *, img_size: int = 32, data_dir: str | Path | None = None, download: bool = True
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(mean, std)`` to normalise a data set with.

    Published values for the built-in sets; for a folder, measured on up to 2000 images of its
    "train" split (the same every time).
    """
    kind = _kind(name_or_path)
    if kind in _SHAPES_SCENE_OF:
        return SHAPES_MEAN, SHAPES_STD
    if kind in CLASSIC_DATASETS:
        return CLASSIC_DATASETS[kind].mean, CLASSIC_DATASETS[kind].std
    return estimate_mean_std(HViTDataset(name_or_path, split="train"), img_size=img_size)
