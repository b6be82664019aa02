"""Weight interchange with timm's ``pvt_v2_*`` models, and ImageNet weights through timm.

timm keeps separate ``attn.q`` and ``attn.kv`` projections and a single ``attn.sr``/``attn.norm``;
hvit keeps the seed's combined ``attn.qkv`` and one ``attn.reductions.<g>`` per head group. The maths
is identical, so converting is renaming plus one concatenation: qkv = [q; kv] along the output rows.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from hvit.model import HierarchialViT


class PretrainedUnavailableError(RuntimeError):
    """Pretrained weights could not be fetched (no internet, no cache, or no such weights)."""


def convert_timm_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm ``PyramidVisionTransformerV2`` state dict to hvit's key names.

    Args:
        state_dict: ``timm.create_model("pvt_v2_*").state_dict()``.

    Returns:
        A state dict for the hvit model of the same name.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = re.match(r"(.*\.attn\.)(q|kv)\.(weight|bias)$", key)
        if m:
            prefix, which, kind = m.groups()
            if which == "q":  # emitted once, with its kv partner: qkv rows are [q; k; v]
                out[f"{prefix}qkv.{kind}"] = torch.cat([value, state_dict[f"{prefix}kv.{kind}"]], dim=0)
            continue
        key = re.sub(r"\.attn\.(sr|norm)\.", r".attn.reductions.0.\1.", key)
        out[key] = value
    return out


def load_timm_state_dict(
    model: HierarchialViT, state_dict: dict[str, torch.Tensor], strict: bool = True
) -> None:
    """Load a timm ``pvt_v2_*`` state dict into the matching hvit model.

    Args:
        model: an hvit model built with the same architecture (e.g. ``create_model("pvt_v2_b0")``).
        state_dict: the timm model's state dict.
        strict: require every key to match (the usual `load_state_dict` meaning).

    Raises:
        ValueError: when the architectures differ; the message lists the mismatched keys.
    """
    converted = convert_timm_state_dict(state_dict)
    ours = model.state_dict()
    missing = sorted(set(ours) - set(converted))
    unexpected = sorted(set(converted) - set(ours))
    shape = sorted(k for k in set(ours) & set(converted) if ours[k].shape != converted[k].shape)
    if shape or (strict and (missing or unexpected)):
        raise ValueError(
            "the timm state dict does not match this hvit model "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {shape[:5]}); build the hvit "
            "model with the same variant name, e.g. create_model('pvt_v2_b0') for timm's pvt_v2_b0"
        )
    model.load_state_dict(converted, strict=strict)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, from the list timm ships (no download)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(1000)]


def hub_reachable(timeout: float = 2.0) -> bool:
    """True when the Hugging Face Hub answers a TCP connection within ``timeout`` seconds."""
    import socket

    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_weights(timm_name: str) -> str | None:
    """Path of timm's ImageNet weights in the local Hugging Face cache, if they were fetched before."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    path = try_to_load_from_cache(f"timm/{timm_name}.in1k", "model.safetensors")
    return path if isinstance(path, str) else None


# The model to name when ImageNet weights cannot be fetched: the shipped default (`hvit.assets.DEFAULT_MODEL`;
# the core does not import the assets layer, a test keeps the two equal).
OFFLINE_MODEL = "hvit_classroom"


def _offline_message(timm_name: str, reason: str) -> str:
    return (
        f"could not fetch the ImageNet weights of timm's {timm_name!r} (repository timm/{timm_name}.in1k on "
        f"the Hugging Face Hub): {reason}. This needs internet once; the weights are then cached. Offline, "
        f"choose the shipped classroom model (the apps' default), or in Python load it with "
        f"hvit.load_checkpoint(hvit.assets.shipped_checkpoint({OFFLINE_MODEL!r})) or any checkpoint with "
        "hvit.load_checkpoint(path)."
    )


def load_pretrained(model: HierarchialViT, timm_name: str) -> None:
    """Fetch the ImageNet weights of timm's ``timm_name`` and load them, with ImageNet preprocessing.

    Args:
        model: an hvit model with the same architecture as ``timm_name``.
        timm_name: timm's name of the variant, e.g. ``"pvt_v2_b0"``.

    Raises:
        PretrainedUnavailableError: the model does not fit ImageNet weights, or the download failed
            (e.g. offline).
    """
    if model.config.num_classes != 1000 or model.config.in_chans != 3:
        raise PretrainedUnavailableError("ImageNet weights need num_classes=1000 and in_chans=3")
    import timm

    overlay = None
    if not hub_reachable():
        # Offline: huggingface_hub would retry for about a minute before giving up. Use a cached
        # copy if one exists, otherwise fail at once with the same clear message.
        cached = _cached_weights(timm_name)
        if cached is None:
            raise PretrainedUnavailableError(
                _offline_message(timm_name, "the Hugging Face Hub is unreachable")
            )
        overlay = {"file": cached}
    try:
        reference = timm.create_model(timm_name, pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as err:  # offline, proxy, missing cache: all end the same way for the user
        raise PretrainedUnavailableError(_offline_message(timm_name, f"{type(err).__name__}: {err}")) from err
    load_timm_state_dict(model, reference.state_dict())
    from hvit.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

    model.preprocessing = Preprocessing(
        img_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic",
        class_names=imagenet_class_names(),
    )  # fmt: skip
