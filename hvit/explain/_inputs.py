"""Shared plumbing of the explain functions: turning what a user hands us into model input, and
running a model in eval mode without changing it for the caller."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from hvit.data import build_transforms, load_image

# Everything `prepare_images` accepts.
ImageLike = str | Path | bytes | Image.Image | np.ndarray | torch.Tensor


def prepare_images(model: nn.Module, image: ImageLike) -> torch.Tensor:
    """The (B, C, S, S) float batch ``model`` expects, from any kind of image.

    Args:
        model: an hvit model; its ``preprocessing`` (size, mean, std) is applied.
        image: a path, raw bytes, a PIL image or an (H, W[, C]) array (one image, read and checked
            by `hvit.data.load_image` with its default limits); a uint8 tensor (C, H, W) or
            (B, C, H, W) of raw pixels (resized and normalised); or a float tensor (C, H, W) or
            (B, C, H, W), taken to be preprocessed already and used as it is.

    Returns:
        (B, C, S, S) float tensor on the model's device.

    Raises:
        hvit.data.ImageReadError: an image that cannot be read (the message says why).
    """
    device = next(model.parameters()).device
    if isinstance(image, torch.Tensor):
        x = image.unsqueeze(0) if image.ndim == 3 else image
        if x.ndim != 4:
            raise ValueError(
                f"expected an image tensor (C, H, W) or (B, C, H, W), got shape {tuple(image.shape)}"
            )
        if x.dtype == torch.uint8:
            transform = build_transforms(model.preprocessing, train=False)
            x = torch.stack([transform(img) for img in x])
        return x.float().to(device)
    transform = build_transforms(model.preprocessing, train=False)
    return transform(load_image(image)).unsqueeze(0).to(device)


def display_images(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Undo the normalisation of a (B, C, S, S) model input for display.

    Returns:
        (B, S, S, 3) float array in [0, 1] (grey images repeated to three channels).
    """
    mean = torch.tensor(model.preprocessing.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(model.preprocessing.std, device=x.device).view(1, -1, 1, 1)
    rgb = (x.detach() * std + mean).clamp(0, 1)
    if rgb.shape[1] == 1:
        rgb = rgb.expand(-1, 3, -1, -1)
    return rgb.permute(0, 2, 3, 1).cpu().numpy()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode (no dropout, no stochastic depth) and restore its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def class_names(model: nn.Module) -> list[str]:
    """Readable class names of ``model`` ("class i" when the checkpoint has none)."""
    names = getattr(getattr(model, "preprocessing", None), "class_names", None)
    return list(names) if names else [f"class {i}" for i in range(model.num_classes)]
