"""From an image (PIL or uint8 tensor) to the normalised tensor a model expects.

The recipe comes from the model's `Preprocessing` (input size, mean, std, interpolation), which is stored
in every checkpoint: train, evaluate and explain with the same numbers, never with hard-coded ones.
Training adds a little `torchvision.transforms.v2` augmentation; v2 transforms also move a
``tv_tensors.Mask`` together with its image, which the shapes set uses for its ground-truth masks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset

from hvit.preprocessing import Preprocessing

if TYPE_CHECKING:
    from torchvision.transforms import v2

# torchvision is imported inside the functions: its first import takes seconds (it pulls in
# torch._dynamo), and importing hvit, or an app, should not pay for it before a transform is built.

__all__ = ["AUGMENTATIONS", "build_transforms", "estimate_mean_std"]

# How much training augmentation to add:
#   "none"   resize only.
#   "light"  a random shift of up to 1/8 of the side (pad with black, crop back): safe for digits, shapes
#            and most objects, and cheap (the default).
#   "strong" random zoom-crop + horizontal flip + colour jitter, for natural photos (CIFAR-10). Flips
#            turn digits and letters into other symbols, so it is not the default.
AUGMENTATIONS = ("none", "light", "strong")


def _base(preprocessing: Preprocessing) -> list[v2.Transform]:
    from torchvision.transforms import InterpolationMode, v2

    channels = len(preprocessing.mean)
    if channels not in (1, 3):
        raise ValueError(
            f"preprocessing.mean must have 1 or 3 values (image channels), got {preprocessing.mean}"
        )
    size = preprocessing.img_size
    return [
        v2.ToImage(),  # PIL or ndarray -> tv_tensors.Image (C, H, W) uint8; tensors pass through
        v2.RGB() if channels == 3 else v2.Grayscale(num_output_channels=1),  # grayscale/RGBA -> RGB
        # A square resize (no crop): small images (MNIST's 28 px) must keep every pixel of the object.
        v2.Resize((size, size), interpolation=InterpolationMode(preprocessing.interpolation), antialias=True),
    ]


def build_transforms(preprocessing: Preprocessing, train: bool = False, augment: str = "light") -> v2.Compose:
    """Transforms for one model's input contract.

    Args:
        preprocessing: the model's `Preprocessing` (``model.preprocessing``).
        train: add training augmentation (see ``augment``); evaluation transforms are deterministic.
        augment: "none", "light" or "strong" (see `AUGMENTATIONS`); ignored when ``train`` is False.

    Returns:
        A ``v2.Compose`` mapping a PIL image or (C, H, W) uint8 tensor to a (C', S, S) float tensor,
        normalised, with S = ``preprocessing.img_size`` and C' = ``len(preprocessing.mean)``. Called as
        ``t(image, mask)`` it also returns the mask, moved by the same geometric augmentation.
    """
    from torchvision.transforms import v2

    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    steps = _base(preprocessing)
    if train and augment != "none":
        size = preprocessing.img_size
        if augment == "light":
            # RandomAffine would also rotate, but costs ~10x more per image on a CPU (grid_sample).
            steps.append(v2.RandomCrop(size, padding=max(1, size // 8)))
        else:
            steps += [
                v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            ]
    steps += [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(preprocessing.mean), list(preprocessing.std)),
    ]
    return v2.Compose(steps)


def estimate_mean_std(
    dataset: Dataset, img_size: int = 32, channels: int = 3, max_images: int = 2000
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of a data set's pixels, scaled to [0, 1].

    Used for a user's own folder of images, so normalisation fits the data instead of ImageNet's.

    Args:
        dataset: yields ``(image, label)`` with PIL or uint8 tensor images and no transform set.
        img_size: images are resized to this side first, as the model will see them.
        channels: 3 (RGB) or 1 (grayscale).
        max_images: at most this many images, evenly spaced over the data set (deterministic).

    Returns:
        ``(mean, std)``, one value per channel; std is never below 1e-3 (a blank data set would
        otherwise divide by zero).
    """
    from torchvision.transforms import v2

    to_unit = v2.Compose(
        _base(Preprocessing(img_size=img_size, mean=(0.0,) * channels, std=(1.0,) * channels))
        + [v2.ToDtype(torch.float32, scale=True)]
    )
    n = len(dataset)
    if n == 0:
        raise ValueError("cannot estimate mean and std of an empty data set")
    indices: Iterable[int] = sorted(
        {round(i * (n - 1) / max(min(n, max_images) - 1, 1)) for i in range(min(n, max_images))}
    )
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for i in indices:
        x = to_unit(dataset[i][0]).double()  # (C, S, S) in [0, 1]
        total += x.sum((1, 2))
        total_sq += (x * x).sum((1, 2))
        count += x.shape[1] * x.shape[2]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-6).sqrt().clamp_min(1e-3)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())
