"""Training settings: one typed, validated dataclass (a plain dict is accepted too, as the seed says)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """How to train.

    Args:
        epochs: passes over the training set.
        batch_size: images per optimiser step in each process (with N processes a step sees N x this).
        lr: peak learning rate, used when the trainer builds the optimiser itself. With an optimiser of
            your own, its learning rate is the peak.
        min_lr_ratio: the cosine decays to ``peak * min_lr_ratio`` at the last step.
        warmup_epochs: epochs of linear warm-up from ~0 to the peak (may be fractional, or 0).
        beta2: AdamW's decay rate of its squared-gradient average (PyTorch's default 0.999). 0.95 adapts
            faster to the quickly changing gradients of a short run from scratch.
        weight_decay: AdamW decoupled weight decay; biases, norms, position embeddings and class tokens
            are exempt (timm's convention).
        label_smoothing: cross-entropy label smoothing, used when the trainer builds the loss.
        grad_clip: clip the global gradient norm to this value; ``None`` disables clipping.
        amp: bf16 autocast on CUDA (ignored on CPU, where it is slower than fp32).
        seed: seeds weights' randomness (dropout), data order and augmentation.
        workers: DataLoader worker processes (0 = load in the training process).
        checkpoint_path: `fit` writes a checkpoint here after every epoch and when stopped early.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.01
    warmup_epochs: float = 1.0
    beta2: float = 0.999
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    grad_clip: float | None = 1.0
    amp: bool = True
    seed: int = 0
    workers: int = 0
    checkpoint_path: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field, its value and what would be valid."""

        def integer(name: str, minimum: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")

        def number(name: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> None:
            v = getattr(self, name)
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
            if not ok:
                interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
                raise ValueError(f"{name} must be a number in {interval}, got {v!r}")

        integer("epochs", 1)
        integer("batch_size", 1)
        integer("seed", 0)
        integer("workers", 0)
        number("lr", 0.0, math.inf, lo_open=True, hi_open=True)
        number("min_lr_ratio", 0.0, 1.0)
        number("warmup_epochs", 0.0, float(self.epochs))
        number("beta2", 0.0, 1.0, hi_open=True)
        number("weight_decay", 0.0, math.inf, hi_open=True)
        number("label_smoothing", 0.0, 1.0, hi_open=True)
        if self.grad_clip is not None:
            number("grad_clip", 0.0, math.inf, lo_open=True, hi_open=True)
        if not isinstance(self.amp, bool):
            raise ValueError(f"amp must be True or False, got {self.amp!r}")
        if self.checkpoint_path is not None and not isinstance(self.checkpoint_path, str):
            self.checkpoint_path = str(self.checkpoint_path)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, as stored in checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys raise ``ValueError`` listing the valid ones."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"unknown training config fields {sorted(unknown)}; valid fields are {sorted(known)}"
            )
        return cls(**d)

    @classmethod
    def coerce(cls, config: TrainConfig | dict[str, Any] | None) -> TrainConfig:
        """A `TrainConfig` from a `TrainConfig`, a dict (the seed's ``config (Dict)``) or ``None`` (defaults)."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            config.validate()
            return config
        if isinstance(config, dict):
            return cls.from_dict(config)
        raise ValueError(f"config must be a TrainConfig or a dict, got {type(config).__name__}")
