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
    metadata  format, format_version, sha256  identity, and a digest of the whole file (format 2: metadata
                                              and tensors; format 1 files, still read, cover the tensors only)
              model            {"class", "variant", "config"}: enough to rebuild the model
              preprocessing    input size, mean, std, interpolation, class names
              train_config, trainer, optimizer, scheduler, rng, extra   (JSON; "null" when absent)

Writes are atomic (a temporary file in the same folder, fsync, ``os.replace``): a crash or a full disk
while saving leaves the previous checkpoint intact. Loads check the header before reading a single tensor
byte: the type and range of every metadata field, that the tensors have exactly the shapes the stored
configuration gives, the structure of the optimiser and RNG states, and the model's estimated memory
against a budget. Then the digest, then that every weight is finite. Each refusal names the field,
the value and what would be valid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from hvit.preprocessing import Preprocessing

if TYPE_CHECKING:
    from hvit.config import HViTConfig

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "Checkpoint",
    "CheckpointError",
    "atomic_write_bytes",
    "capture_rng_state",
    "load_checkpoint",
    "memory_budget_bytes",
    "read_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

FORMAT = "hvit.checkpoint"
# Version 2: the sha256 covers the whole file (metadata included). Version 1 files, whose digest covers
# only the tensor bytes, are still read and checked the old way.
FORMAT_VERSION = 2
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
    atomic_write_bytes(path, _seal(data))
    logger.debug("saved checkpoint %s (%.2f MB)", path, len(data) / 1e6)
    return path


def _seal(data: bytes) -> bytes:
    """Write the digest of the whole file (see `_digest`) over the placeholder: same length, so no
    offset moves."""
    header_len = struct.unpack("<Q", data[:8])[0]
    digest = hashlib.sha256(data).hexdigest()
    header = data[8 : 8 + header_len].replace(_DIGEST_PLACEHOLDER.encode(), digest.encode(), 1)
    return data[:8] + header + data[8 + header_len :]


# --- reading --------------------------------------------------------------------------------------------

# Checkpoints of models above this estimated memory (weights plus one image's activations) are refused
# before anything is allocated. A laptop-sized default; raise it with ``memory_budget=`` or the
# environment variable below when the machine has the memory.
DEFAULT_MEMORY_BUDGET = 4 * 2**30
MEMORY_BUDGET_ENV = "HVIT_MEMORY_BUDGET_GB"
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header
_SECTIONS = ("model", "preprocessing", "train_config", "trainer", "optimizer", "scheduler", "rng", "extra")
_DTYPES = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"}
_UINT32 = 2**32
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def memory_budget_bytes(memory_budget: int | None = None) -> int:
    """The memory budget in bytes: ``memory_budget`` if given, else ``$HVIT_MEMORY_BUDGET_GB`` GiB, else
    `DEFAULT_MEMORY_BUDGET` (4 GiB)."""
    if memory_budget is not None:
        return int(memory_budget)
    text = os.environ.get(MEMORY_BUDGET_ENV)
    if not text:
        return DEFAULT_MEMORY_BUDGET
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise CheckpointError(f"{MEMORY_BUDGET_ENV}={text!r} is not a positive number of GiB (e.g. 8)")
    return int(value * 2**30)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(v: Any, lo: int = 0, hi: int | None = None) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Checker:
    """Raises a `CheckpointError` that names the file, the field, the value and what would be valid."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, field: str, value: Any, valid: str) -> CheckpointError:
        return CheckpointError(
            f"checkpoint '{self.path}' is damaged or was not written by hvit: {field} is {_short(value)}, "
            f"but it must be {valid}"
        )

    def expect(self, ok: bool, field: str, value: Any, valid: str) -> None:
        if not ok:
            raise self.error(field, value, valid)

    def mapping(self, value: Any, field: str, keys: Sequence[str] = ()) -> dict[str, Any]:
        self.expect(isinstance(value, dict), field, value, "a JSON object (a mapping of names to values)")
        missing = [k for k in keys if k not in value]
        self.expect(
            not missing, field, value, f"an object with the keys {', '.join(keys)} (missing {missing})"
        )
        return value

    def listing(self, value: Any, field: str, length: int | None = None) -> list[Any]:
        what = "a list" if length is None else f"a list of {length} values"
        self.expect(isinstance(value, list) and (length is None or len(value) == length), field, value, what)
        return value

    def integer(self, value: Any, field: str, lo: int = 0, hi: int | None = None) -> int:
        what = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi:,}"
        self.expect(_is_int(value, lo, hi), field, value, what)
        return value

    def number(self, value: Any, field: str) -> float:
        self.expect(_is_number(value), field, value, "a finite number")
        return value

    def text(self, value: Any, field: str) -> str:
        self.expect(isinstance(value, str), field, value, "a string")
        return value


def _check_model(c: _Checker, model: Any) -> HViTConfig | None:
    """The ``model`` entry; returns its `HViTConfig` when it describes an hvit model."""
    from hvit.config import check_config  # hvit.config imports nothing heavy

    c.mapping(model, "model", ("class", "config"))
    c.text(model["class"], "model.class")
    c.expect(model.get("variant") is None or isinstance(model["variant"], str), "model.variant",
             model.get("variant"), "a string or null")  # fmt: skip
    config = model["config"]
    if config is None:
        return None
    c.mapping(config, "model.config")
    problems = check_config(**config)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise CheckpointError(
            f"checkpoint '{c.path}' has an invalid model configuration: {problems[0].message}{more}"
        )
    if not model["class"].endswith("HierarchialViT"):
        return None
    from hvit.config import HViTConfig

    return HViTConfig.from_dict(config)


def _check_preprocessing(c: _Checker, pre: Any, config: HViTConfig | None) -> None:
    from hvit.config import MAX_SIDE

    if pre is None:
        return
    known = [f.name for f in dataclasses.fields(Preprocessing)]
    c.mapping(pre, "preprocessing")
    unknown = sorted(set(pre) - set(known))
    c.expect(not unknown, "preprocessing", unknown, f"an object with only the keys {', '.join(known)}")
    channels = config.in_chans if config is not None else None
    for name in ("mean", "std"):
        if name not in pre:
            continue
        values = c.listing(pre[name], f"preprocessing.{name}", channels)
        for i, v in enumerate(values):
            c.expect(_is_number(v) and (name == "mean" or v > 0), f"preprocessing.{name}[{i}]", v,
                     "a finite number" + (" above 0" if name == "std" else ""))  # fmt: skip
    if "mean" in pre and "std" in pre:
        c.listing(pre["std"], "preprocessing.std", len(pre["mean"]))
    if "img_size" in pre:
        c.integer(pre["img_size"], "preprocessing.img_size", 1, MAX_SIDE)
    if "interpolation" in pre:
        c.expect(pre["interpolation"] in _INTERPOLATIONS, "preprocessing.interpolation", pre["interpolation"],
                 " or ".join(map(repr, _INTERPOLATIONS)))  # fmt: skip
    names = pre.get("class_names")
    if names is not None:
        outputs = config.num_classes if config is not None and config.num_classes else None
        c.listing(names, "preprocessing.class_names", outputs)
        for i, name in enumerate(names):
            c.text(name, f"preprocessing.class_names[{i}]")
    try:  # fields this check does not know in detail are checked by the dataclass itself
        Preprocessing(**pre)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint '{c.path}' has invalid preprocessing: {e}") from e


def _check_train_config(c: _Checker, train_config: Any) -> None:
    from hvit.train.config import TrainConfig

    if train_config is None:
        return
    c.mapping(train_config, "train_config")
    try:
        TrainConfig.from_dict(train_config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint '{c.path}' has an invalid train_config: {e}") from e


def _check_trainer(c: _Checker, trainer: Any) -> None:
    if trainer is None:
        return
    c.mapping(trainer, "trainer", ("epoch", "step", "batch_in_epoch", "running", "history"))
    for key in ("epoch", "step", "batch_in_epoch"):
        c.integer(trainer[key], f"trainer.{key}")
    running = c.mapping(trainer["running"], "trainer.running", ("loss_sum", "correct", "seen"))
    c.number(running["loss_sum"], "trainer.running.loss_sum")
    c.integer(running["correct"], "trainer.running.correct")
    c.integer(running["seen"], "trainer.running.seen")
    for i, entry in enumerate(c.listing(trainer["history"], "trainer.history")):
        c.mapping(entry, f"trainer.history[{i}]")
    if trainer.get("world_size") is not None:
        c.integer(trainer["world_size"], "trainer.world_size", 1)
    if trainer.get("steps_per_epoch") is not None:
        c.integer(trainer["steps_per_epoch"], "trainer.steps_per_epoch", 1)
    if trainer.get("status") is not None:
        c.text(trainer["status"], "trainer.status")


def _check_optimizer(c: _Checker, optimizer: Any, index: dict[str, Any]) -> None:
    names = [k for k in index if k.startswith("optimizer/")]
    if optimizer is None:
        c.expect(not names, "optimizer", None, "present, since the file holds optimiser tensors")
        return
    c.mapping(optimizer, "optimizer", ("class", "param_groups", "scalars"))
    c.text(optimizer["class"], "optimizer.class")
    params: set[int] = set()
    for g, group in enumerate(c.listing(optimizer["param_groups"], "optimizer.param_groups")):
        field = f"optimizer.param_groups[{g}]"
        c.mapping(group, field, ("params",))
        for i, pid in enumerate(c.listing(group["params"], f"{field}.params")):
            c.integer(pid, f"{field}.params[{i}]")
            c.expect(pid not in params, f"{field}.params[{i}]", pid, "a parameter index not used twice")
            params.add(pid)
        for key in ("lr", "initial_lr", "eps", "weight_decay"):
            if key in group:
                c.expect(_is_number(group[key]) and group[key] >= 0, f"{field}.{key}", group[key],
                         "a finite number >= 0")  # fmt: skip
        if "betas" in group:
            for i, b in enumerate(c.listing(group["betas"], f"{field}.betas", 2)):
                c.expect(_is_number(b) and 0 <= b < 1, f"{field}.betas[{i}]", b, "a number in [0, 1)")

    def param_index(text: str, field: str) -> None:
        c.expect(text.isdigit() and int(text) in params, field, text,
                 "the index of a parameter listed in optimizer.param_groups")  # fmt: skip

    for pid, scalars in c.mapping(optimizer["scalars"], "optimizer.scalars").items():
        param_index(pid, "optimizer.scalars key")
        c.mapping(scalars, f"optimizer.scalars[{pid}]")
    for name in names:
        parts = name.split("/")
        c.expect(len(parts) == 3, "tensor name", name, "optimizer/<parameter index>/<state name>")
        param_index(parts[1], f"the parameter index of tensor {name}")


def _check_rng(c: _Checker, rng: Any, index: dict[str, Any]) -> None:
    names = {k for k in index if k.startswith("rng/")}
    if rng is None:
        c.expect(not names, "rng", None, "present, since the file holds random-number-generator tensors")
        return
    torch_state = torch.get_rng_state().numel()
    expected: set[str] = set()
    for r, state in enumerate(c.listing(rng, "rng")):
        field = f"rng[{r}]"
        c.mapping(state, field, ("cuda", "numpy", "python"))
        cuda = c.integer(state["cuda"], f"{field}.cuda", 0, 1024)
        kind, keys, pos, has_gauss, gauss = c.listing(state["numpy"], f"{field}.numpy", 5)
        c.expect(kind == "MT19937", f"{field}.numpy[0]", kind, "'MT19937'")
        c.expect(isinstance(keys, list) and len(keys) == 624 and all(_is_int(k, 0, _UINT32 - 1) for k in keys),
                 f"{field}.numpy[1]", keys, "a list of 624 integers from 0 to 2**32-1")  # fmt: skip
        c.integer(pos, f"{field}.numpy[2]", 0, 624)
        c.integer(has_gauss, f"{field}.numpy[3]", 0, 1)
        c.number(gauss, f"{field}.numpy[4]")
        version, internal, py_gauss = c.listing(state["python"], f"{field}.python", 3)
        c.integer(version, f"{field}.python[0]")
        ok = isinstance(internal, list) and len(internal) == 625
        ok = ok and all(_is_int(k, 0, _UINT32 - 1) for k in internal[:624]) and _is_int(internal[-1], 0, 624)
        c.expect(
            ok,
            f"{field}.python[1]",
            internal,
            "a list of 624 integers from 0 to 2**32-1 and a position 0..624",
        )
        c.expect(py_gauss is None or _is_number(py_gauss), f"{field}.python[2]", py_gauss, "null or a number")
        expected |= {f"rng/{r}/torch", *(f"rng/{r}/cuda/{i}" for i in range(cuda))}
        entry = index.get(f"rng/{r}/torch")
        c.expect(entry is not None and entry["dtype"] == "U8" and entry["shape"] == [torch_state],
                 f"tensor rng/{r}/torch", entry, f"a uint8 tensor of {torch_state} bytes")  # fmt: skip
    c.expect(names == expected, "the rng tensors", sorted(names ^ expected), "one torch state per process and "
             "the number of CUDA states rng[].cuda says")  # fmt: skip


def _check_tensor_index(c: _Checker, index: dict[str, Any], config: HViTConfig | None) -> None:
    """Every tensor entry is well formed, and the model's tensors are exactly what ``config`` builds."""
    for name, entry in index.items():
        c.expect(name.startswith(("model/", "optimizer/", "rng/")), "tensor name", name,
                 "model/..., optimizer/... or rng/...")  # fmt: skip
        c.mapping(entry, f"the header entry of tensor {name}", ("dtype", "shape"))
        c.expect(
            entry["dtype"] in _DTYPES,
            f"the dtype of tensor {name}",
            entry["dtype"],
            f"one of {sorted(_DTYPES)}",
        )
        shape = c.listing(entry["shape"], f"the shape of tensor {name}")
        for size in shape:
            c.integer(size, f"the shape of tensor {name}", 0, 2**40)
    if config is None:
        return
    from hvit.model import state_shapes

    expected = {f"model/{k}": list(v) for k, v in state_shapes(config).items()}
    stored = {k: v["shape"] for k, v in index.items() if k.startswith("model/")}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    shapes = [
        f"{k[6:]}: {stored[k]} instead of {v}" for k, v in expected.items() if k in stored and stored[k] != v
    ]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing (e.g. {', '.join(m[6:] for m in missing[:3])})"] if missing else []
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(u[6:] for u in unexpected[:3])})")
        if shapes:
            parts.append("wrong shapes: " + "; ".join(shapes[:3]))
        raise CheckpointError(
            f"checkpoint '{c.path}' is damaged: its weights do not match its own model configuration ("
            + ", ".join(parts)
            + ")"
        )


def _check_budget(c: _Checker, config: HViTConfig | None, file_size: int, budget: int) -> None:
    """Refuse, with the figures, a model (or a file) larger than the memory budget."""
    gib = 2**30
    hint = f"if this machine has the memory, raise the budget (memory_budget=..., or ${MEMORY_BUDGET_ENV})"
    if config is not None:
        from hvit.complexity import model_complexity

        report = model_complexity(config)
        if report.memory_bytes > budget:
            raise CheckpointError(
                f"checkpoint '{c.path}' describes a model of {report.total_params:,} parameters that needs "
                f"about {report.memory_bytes / gib:,.2f} GiB for one {config.img_size} px image, more than "
                f"the memory budget of {budget / gib:.2f} GiB: it was not loaded; {hint}"
            )
    if file_size > budget:
        raise CheckpointError(
            f"checkpoint '{c.path}' is {file_size / gib:,.2f} GiB, more than the memory budget of "
            f"{budget / gib:.2f} GiB: it was not loaded; {hint}"
        )


def _digest(data: bytes, header_len: int, version: int, stored: str) -> str:
    """The sha256 a file of ``version`` should carry: version 1 covers the tensor bytes only; version 2
    covers the whole file (header with its metadata, and tensors) with the digest itself blanked out."""
    if version < 2:
        return hashlib.sha256(data[8 + header_len :]).hexdigest()
    header = data[8 : 8 + header_len].replace(stored.encode(), _DIGEST_PLACEHOLDER.encode(), 1)
    return hashlib.sha256(data[:8] + header + data[8 + header_len :]).hexdigest()


def read_checkpoint(path: str | Path, *, memory_budget: int | None = None) -> Checkpoint:
    """Parse and verify a checkpoint file without building anything.

    The header is read and checked first: the metadata's types and ranges, that the model's tensors
    have exactly the shapes its stored configuration gives, the optimiser and RNG states' structure,
    and the model's estimated memory against the budget. Only then are the tensor bytes read, their
    digest checked, and every floating-point tensor checked to be finite.

    Args:
        path: the checkpoint file.
        memory_budget: refuse models estimated to need more bytes than this (weights plus one image's
            activations; see `hvit.complexity.ComplexityReport.memory_bytes`) and larger files. Default:
            ``$HVIT_MEMORY_BUDGET_GB`` GiB, else 4 GiB.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not an hvit checkpoint (or not a regular file), a newer format, corrupt,
            metadata of the wrong type or range (the message names the field, the value and what is
            valid), a model over the memory budget, or NaN / infinite values (named).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    if not path.is_file():  # a folder, a FIFO or a device would fail or block on reading
        raise CheckpointError(f"'{path}' is not a regular file, so it cannot be a checkpoint")
    budget = memory_budget_bytes(memory_budget)
    not_ours = f"'{path}' is not an hvit checkpoint"
    c = _Checker(path)
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{not_ours}: the file is only {len(head)} bytes long")
        header_len = struct.unpack("<Q", head)[0]
        if header_len > min(size - 8, _MAX_HEADER):
            raise CheckpointError(
                f"{not_ours} (not a safetensors file, or truncated: header claims {header_len} bytes)"
            )
        header_bytes = f.read(header_len)
        try:
            header = json.loads(header_bytes)
            meta = header.pop("__metadata__", None) or {}
            if not isinstance(meta, dict):
                raise TypeError(f"__metadata__ is a {type(meta).__name__}, not an object")
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError) as e:
            raise CheckpointError(f"{not_ours} (its header is not safetensors JSON: {e})") from e
        if meta.get("format") != FORMAT:
            raise CheckpointError(
                f"{not_ours}: it is a safetensors file without hvit metadata (format={_short(meta.get('format'))}); "
                "hvit checkpoints are written by hvit.save_checkpoint or the trainer"
            )
        version_text = meta.get("format_version")
        c.expect(isinstance(version_text, str) and version_text.isdigit() and int(version_text) >= 1,
                 "format_version", version_text, "a whole number such as '2', as a string")  # fmt: skip
        version = int(version_text)
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"'{path}' uses checkpoint format {version}; this hvit reads up to {FORMAT_VERSION}: upgrade hvit"
            )
        digest = meta.get("sha256")
        c.expect(isinstance(digest, str) and len(digest) == 64 and all(ch in "0123456789abcdef" for ch in digest),
                 "sha256", digest, "64 lowercase hexadecimal digits")  # fmt: skip
        parsed: dict[str, Any] = {}
        for key in _SECTIONS:
            text = meta.get(key, "null")
            try:
                parsed[key] = json.loads(text) if isinstance(text, str) else text
            except json.JSONDecodeError as e:
                raise c.error(key, text, f"JSON ({e})") from e
            c.expect(isinstance(text, str), key, text, "a JSON string")
        config = _check_model(c, parsed["model"])
        _check_budget(c, config, size, budget)  # first: an absurd size is refused with its figure
        _check_preprocessing(c, parsed["preprocessing"], config)
        _check_train_config(c, parsed["train_config"])
        _check_trainer(c, parsed["trainer"])
        c.expect(parsed["scheduler"] is None or isinstance(parsed["scheduler"], dict), "scheduler",
                 parsed["scheduler"], "null or a JSON object")  # fmt: skip
        parsed["extra"] = parsed["extra"] or {}
        c.mapping(parsed["extra"], "extra")
        _check_tensor_index(c, header, config)
        _check_optimizer(c, parsed["optimizer"], header)
        _check_rng(c, parsed["rng"], header)
        data = head + header_bytes + f.read()

    if _digest(data, header_len, version, digest) != digest:
        covered = "tensor bytes" if version < 2 else "metadata or tensor bytes"
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt: its {covered} do not match the stored sha256 digest "
            "(the file was changed or damaged after it was written)"
        )
    try:
        tensors = st_load(data)
    except Exception as e:  # offsets that do not fit the data, after a valid digest: still "corrupt"
        raise CheckpointError(f"checkpoint '{path}' is corrupt: {e}") from e
    del data
    for name, tensor in tensors.items():
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise CheckpointError(
                    f"checkpoint '{path}' holds {bad:,} NaN or infinite values in tensor {name}: a model "
                    "loaded from it would answer NaN; use an earlier checkpoint of the run"
                )

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
    path: str | Path,
    model: nn.Module | None = None,
    *,
    device: str | torch.device = "cpu",
    memory_budget: int | None = None,
) -> nn.Module:
    """Load a checkpoint into a ready-to-use model.

    Args:
        path: a file written by `save_checkpoint` (or the trainer).
        model: load into this model; by default a `HierarchialViT` is built from the stored
            configuration, so the caller needs to know nothing about it.
        device: where the model goes.
        memory_budget: refuse models estimated to need more bytes (see `read_checkpoint`).

    Returns:
        The model in eval mode, with ``model.preprocessing`` (class names, input size, mean, std) as
        stored.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a checkpoint, corrupt, invalid metadata, over the memory budget, non-finite
            weights, or not matching ``model``; the message says which.
    """
    ckpt = read_checkpoint(path, memory_budget=memory_budget)
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
        model.preprocessing = stored_preprocessing(ckpt.preprocessing, ckpt.extra.get("dataset"))
    return model.to(device).eval()


def stored_preprocessing(stored: dict[str, Any], dataset: Any = None) -> Preprocessing:
    """The `Preprocessing` of a checkpoint's metadata.

    A file written before ``domain`` existed gets the domain its class names identify
    (`hvit.data.infer_domain`), or None. The generated sets share their class names ("shapes" and
    "shapes-pair"), so for those the data set the checkpoint records (``extra["dataset"]``) decides.

    Args:
        stored: the checkpoint's preprocessing metadata.
        dataset: the data set the checkpoint records it learned (``extra["dataset"]``), if any.
    """
    from hvit.data.domains import infer_domain
    from hvit.data.shapes import SHAPE_SCENES

    pre = Preprocessing.from_dict(stored)
    if "domain" not in stored:  # written before the field existed (a stored null stays None)
        pre.domain = infer_domain(pre.class_names)
        if pre.domain == "shapes" and dataset in SHAPE_SCENES.values():
            pre.domain = dataset  # e.g. the classroom model, trained on "shapes-pair"
    return pre
