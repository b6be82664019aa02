"""Checkpoints: one safetensors file that rebuilds a model, and resumes a run, without running any code.

Why safetensors and not ``torch.save``? A ``torch.save`` file is a pickle: opening one from the internet
can run arbitrary code (``weights_only=True`` closes most of that, but the format stays opaque and
version-fragile). A safetensors file is a JSON header plus raw tensor bytes: nothing in it can execute,
any language can read it, and the header (model configuration, class names, preprocessing, metrics) can
be inspected without loading a single weight.

Layout of one file::

    tensors   model/<parameter name>          the weights and buffers
              optimizer/<param index>/<key>   optimiser state (AdamW's exp_avg, exp_avg_sq, step)
              rng/<rank>/torch, rng/<rank>/cuda/<i>   random-number-generator states, one set per process
    metadata  format, format_version, sha256  identity, and a digest of all tensor bytes
              model            {"class", "variant", "config"}: enough to rebuild the model
              preprocessing    input size, mean, std, interpolation, class names
              train_config, trainer, optimizer, scheduler, rng, extra   (JSON; "null" when absent)

Writes are atomic (a temporary file in the same folder, fsync, ``os.replace``): a crash or a full disk
while saving leaves the previous checkpoint intact. Loads check the format, the digest, the model
configuration and every tensor shape, and say what does not match.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "atomic_write_bytes",
    "capture_rng_state",
    "load_checkpoint",
    "read_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

FORMAT = "hvit.checkpoint"
FORMAT_VERSION = 1
# Same length as a sha256 hex digest, so the real digest can be written over it in place.
_DIGEST_PLACEHOLDER = "hvit-digest-placeholder-".ljust(64, "#")


class CheckpointError(ValueError):
    """A file that is not an hvit checkpoint, is corrupt, or does not fit the model it is loaded into."""


@dataclass
class Checkpoint:
    """The parsed content of a checkpoint file (see the module docstring for the layout)."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    model: dict[str, Any]
    preprocessing: dict[str, Any] | None = None
    train_config: dict[str, Any] | None = None
    trainer: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    rng: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --- random-number-generator states ---------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """This process's torch, CUDA, NumPy and Python RNG states (torch states as uint8 tensors)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# --- writing --------------------------------------------------------------------------------------------


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either the old or the new content, never half.

    The bytes go to a temporary file in the same folder (same file system, so the rename is atomic),
    are flushed to disk (fsync), and only then renamed over ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable (POSIX: the directory entry lives in the folder's own data).
    if hasattr(os, "O_DIRECTORY"):
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _model_entry(model: nn.Module) -> dict[str, Any]:
    cls = type(model)
    config = getattr(model, "config", None)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "variant": getattr(model, "variant", None),
        "config": config.to_dict() if hasattr(config, "to_dict") else None,
    }


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{pid}/{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    meta = {"class": type(optimizer).__name__, "param_groups": sd["param_groups"], "scalars": scalars}
    return tensors, meta


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    train_config: dict[str, Any] | None = None,
    trainer_state: dict[str, Any] | None = None,
    scheduler: dict[str, Any] | None = None,
    rng_states: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically.

    Args:
        path: output file (conventionally ``*.safetensors``); its folder is created.
        model: the model (unwrapped, not the DistributedDataParallel wrapper). Its ``config`` and
            ``preprocessing`` (class names, mean, std, input size) are stored when it has them.
        optimizer: optimiser whose state to store, for resuming.
        train_config: training settings (``TrainConfig.to_dict()``).
        trainer_state: epoch, step and running sums of the trainer (JSON-serialisable).
        scheduler: schedule parameters and step (JSON-serialisable).
        rng_states: one `capture_rng_state()` per process (rank order), for exact resumption.
        extra: anything else JSON-serialisable (command-line arguments, metrics).

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    tensors = {f"model/{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    optimizer_meta = None
    if optimizer is not None:
        opt_tensors, optimizer_meta = _flatten_optimizer(optimizer)
        tensors.update(opt_tensors)
    rng_meta = None
    if rng_states is not None:
        rng_meta = []
        for rank, state in enumerate(rng_states):
            tensors[f"rng/{rank}/torch"] = state["torch"].cpu().clone()
            for i, s in enumerate(state["cuda"]):
                tensors[f"rng/{rank}/cuda/{i}"] = s.cpu().clone()
            rng_meta.append({"cuda": len(state["cuda"]), "numpy": state["numpy"], "python": state["python"]})
    preprocessing = getattr(model, "preprocessing", None)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "sha256": _DIGEST_PLACEHOLDER,
        "model": json.dumps(_model_entry(model)),
        "preprocessing": json.dumps(preprocessing.to_dict() if hasattr(preprocessing, "to_dict") else None),
        "train_config": json.dumps(train_config),
        "trainer": json.dumps(trainer_state),
        "optimizer": json.dumps(optimizer_meta),
        "scheduler": json.dumps(scheduler),
        "rng": json.dumps(rng_meta),
        "extra": json.dumps(extra or {}),
    }
    data = st_save(tensors, metadata=metadata)
    # Digest of the tensor bytes, written over the placeholder (same length, so no offset moves).
    header_len = struct.unpack("<Q", data[:8])[0]
    digest = hashlib.sha256(data[8 + header_len :]).hexdigest()
    header = data[8 : 8 + header_len].replace(_DIGEST_PLACEHOLDER.encode(), digest.encode(), 1)
    atomic_write_bytes(path, data[:8] + header + data[8 + header_len :])
    logger.debug("saved checkpoint %s (%.2f MB)", path, len(data) / 1e6)
    return path


# --- reading --------------------------------------------------------------------------------------------


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Parse and verify a checkpoint file without building anything.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a safetensors file, not an hvit checkpoint, a newer format, or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    data = path.read_bytes()
    not_ours = f"'{path}' is not an hvit checkpoint"
    if len(data) < 8:
        raise CheckpointError(f"{not_ours}: the file is only {len(data)} bytes long")
    header_len = struct.unpack("<Q", data[:8])[0]
    if header_len > len(data) - 8:
        raise CheckpointError(
            f"{not_ours} (not a safetensors file, or truncated: header claims {header_len} bytes)"
        )
    try:
        header = json.loads(data[8 : 8 + header_len])
        meta = header.get("__metadata__") or {}
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise CheckpointError(f"{not_ours} (its header is not safetensors JSON: {e})") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{not_ours}: it is a safetensors file without hvit metadata (format={meta.get('format')!r}); "
            "hvit checkpoints are written by hvit.save_checkpoint or the trainer"
        )
    version = int(meta.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"'{path}' uses checkpoint format {version}; this hvit reads up to {FORMAT_VERSION}: upgrade hvit"
        )
    if hashlib.sha256(data[8 + header_len :]).hexdigest() != meta.get("sha256"):
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt: its tensor bytes do not match the stored sha256 digest"
        )
    try:
        tensors = st_load(data)
        parsed = {
            k: json.loads(meta[k])
            for k in (
                "model",
                "preprocessing",
                "train_config",
                "trainer",
                "optimizer",
                "scheduler",
                "rng",
                "extra",
            )
        }
    except Exception as e:  # a damaged header after a valid digest: still "corrupt", with the cause
        raise CheckpointError(f"checkpoint '{path}' is corrupt: {e}") from e

    state_dict = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    optimizer = parsed["optimizer"]
    if optimizer is not None:
        state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optimizer/"):
                _, pid, key = k.split("/", 2)
                state.setdefault(int(pid), {})[key] = v
        for pid, scalars in optimizer["scalars"].items():
            state.setdefault(int(pid), {}).update(scalars)
        optimizer = {
            "class": optimizer["class"],
            "state_dict": {"state": state, "param_groups": optimizer["param_groups"]},
        }
    rng = parsed["rng"]
    if rng is not None:
        rng = [
            {
                "torch": tensors[f"rng/{r}/torch"],
                "cuda": [tensors[f"rng/{r}/cuda/{i}"] for i in range(s["cuda"])],
                "numpy": s["numpy"],
                "python": s["python"],
            }
            for r, s in enumerate(rng)
        ]
    return Checkpoint(
        path=path,
        state_dict=state_dict,
        model=parsed["model"],
        preprocessing=parsed["preprocessing"],
        train_config=parsed["train_config"],
        trainer=parsed["trainer"],
        optimizer=optimizer,
        scheduler=parsed["scheduler"],
        rng=rng,
        extra=parsed["extra"],
    )


def check_compatible(ckpt: Checkpoint, model: nn.Module) -> None:
    """Raise `CheckpointError` unless ``ckpt``'s weights fit ``model`` exactly (config, names, shapes)."""
    stored = ckpt.model.get("config")
    config = getattr(model, "config", None)
    if stored is not None and hasattr(config, "to_dict"):
        current = config.to_dict()
        diff = [
            f"{k}: checkpoint {stored.get(k)!r}, model {current.get(k)!r}"
            for k in sorted(set(stored) | set(current))
            if stored.get(k) != current.get(k)
        ]
        if diff:
            raise CheckpointError(
                f"checkpoint '{ckpt.path}' was saved from a different model configuration: "
                + "; ".join(diff[:6])
            )
    expected = model.state_dict()
    missing = sorted(set(expected) - set(ckpt.state_dict))
    unexpected = sorted(set(ckpt.state_dict) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(ckpt.state_dict[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in ckpt.state_dict and ckpt.state_dict[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append("shape mismatches: " + "; ".join(shapes[:3]))
        raise CheckpointError(
            f"checkpoint '{ckpt.path}' does not fit this model ({ckpt.model.get('class')}): "
            + ", ".join(parts)
        )


def load_checkpoint(
    path: str | Path, model: nn.Module | None = None, *, device: str | torch.device = "cpu"
) -> nn.Module:
    """Load a checkpoint into a ready-to-use model.

    Args:
        path: a file written by `save_checkpoint` (or the trainer).
        model: load into this model; by default a `HierarchialViT` is built from the stored
            configuration, so the caller needs to know nothing about it.
        device: where the model goes.

    Returns:
        The model in eval mode, with ``model.preprocessing`` (class names, input size, mean, std) as
        stored.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a checkpoint, corrupt, or not matching ``model``; the message says which.
    """
    ckpt = read_checkpoint(path)
    if model is None:
        if ckpt.model.get("config") is None or not ckpt.model.get("class", "").endswith("HierarchialViT"):
            raise CheckpointError(
                f"checkpoint '{path}' holds a {ckpt.model.get('class')} without an hvit configuration; "
                "build that model yourself and pass it as load_checkpoint(path, model=...)"
            )
        from hvit.config import HViTConfig  # the one place this package builds a specific model
        from hvit.model import HierarchialViT

        try:
            config = HViTConfig.from_dict(ckpt.model["config"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(
                f"checkpoint '{path}' has a model configuration this hvit cannot build: {e}"
            ) from e
        model = HierarchialViT.from_config(config)
        if ckpt.model.get("variant"):
            model.variant = ckpt.model["variant"]
    check_compatible(ckpt, model)
    model.load_state_dict(ckpt.state_dict)
    if ckpt.preprocessing is not None:
        from hvit.preprocessing import Preprocessing

        model.preprocessing = Preprocessing.from_dict(ckpt.preprocessing)
    return model.to(device).eval()
