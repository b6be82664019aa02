"""The training loop, written to be read: one epoch is one plain ``for`` loop over batches.

What it adds to the textbook loop, and why:

- **Reproducible to the bit.** The data order of an epoch is a function of (seed, epoch); the
  augmentation of a sample is a function of (seed, epoch, sample index), whatever the number of loader
  workers; the model's own randomness (dropout, stochastic depth) comes from the global RNG, whose state
  is saved in every checkpoint. So a run stopped in the middle of an epoch and resumed from its
  checkpoint produces exactly the losses of the run that was never stopped (on CPU).
- **The learning rate is a pure function of the step** (`warmup_cosine`), set before every step.
- **Reporting through callbacks and logging**, never print: a terminal bar, a notebook or a Streamlit
  page all listen to the same events. ``request_stop()`` ends training at the next batch boundary.
- **A non-finite loss stops the run** with a message instead of silently filling the weights with NaN;
  the optimiser step is skipped and the last checkpoint on disk stays the last good one.
- **Model-agnostic.** Any ``nn.Module`` mapping (B, C, H, W) images to (B, num_classes) logits
  trains here; nothing in this file imports a specific model.
- **DistributedDataParallel** when launched by torchrun: each process trains on its shard of every
  epoch, gradients are averaged, and only rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from hvit.metrics import confusion_matrix, metrics_from_confusion, topk_correct
from hvit.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    capture_rng_state,
    check_compatible,
    read_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from hvit.train.config import TrainConfig
from hvit.train.distributed import DistInfo, all_reduce_sum, dist_info, resolve_device
from hvit.train.schedule import warmup_cosine

__all__ = ["HViTTrainer", "NonFiniteLossError", "build_optimizer", "param_groups_weight_decay"]

logger = logging.getLogger("hvit.train")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss (or gradient norm) and was stopped."""


def param_groups_weight_decay(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split parameters into a decayed and a non-decayed group (timm's convention).

    Biases and normalisation weights (1-D tensors), position embeddings and class tokens are not decayed:
    pulling a LayerNorm gain or a position code towards zero does not regularise, it just distorts.

    Args:
        model: the model; its ``no_weight_decay()`` names, when it has that method, are exempt too.
        weight_decay: decay of the other parameters.

    Returns:
        Two AdamW parameter groups: ``{"params", "weight_decay": 0.0}`` and ``{"params", "weight_decay"}``.
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name in skip or name.endswith(("pos_embed", "cls_token")):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def build_optimizer(
    model: nn.Module, config: TrainConfig | dict[str, Any] | None = None
) -> torch.optim.AdamW:
    """AdamW with ``config.lr``, betas ``(0.9, config.beta2)`` and ``config.weight_decay`` (not on norms,
    biases, position embeddings).

    The fused implementation (one kernel for all parameters) is used where PyTorch has it: for a small
    model, the default loop over ~100 parameter tensors costs ~5-10 ms a step on a CPU, the fused one
    ~1 ms. The update is the same AdamW; only the rounding of the last bits differs.
    """
    config = TrainConfig.coerce(config)
    groups = param_groups_weight_decay(model, config.weight_decay)
    params = [p for group in groups for p in group["params"]]
    fused = bool(params) and all(
        p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
        for p in params
    )
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, config.beta2), fused=fused or None)


# --- data order -----------------------------------------------------------------------------------------


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    # A distinct, well-mixed seed per (run seed, epoch, sample): SplitMix64's finaliser over the three.
    z = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (z ^ (z >> 31)) & (2**63 - 1)


class _SeededSamples(Dataset):
    """Wraps a dataset so that sample ``i`` of epoch ``e`` is augmented with its own seed.

    The sampler hands out ``(epoch, index)`` keys. Seeding each sample from them makes augmentation
    independent of which worker process loads it and of what was loaded before: the property exact
    resumption and worker-count-independent runs rest on. The global RNG of the calling process is left
    untouched (``fork_rng``), so the model's dropout stream is unaffected.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        # Not torch.manual_seed / fork_rng: those also reseed every accelerator and cost ~0.4 ms each.
        saved = torch.get_rng_state()
        torch.default_generator.manual_seed(_sample_seed(self.seed, epoch, index))
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(saved)


class _EpochSampler(DistributedSampler):
    """DistributedSampler (shuffled by seed + epoch, one shard per process) that can start mid-epoch.

    Yields ``(epoch, index)`` keys for `_SeededSamples`. ``start`` skips the samples already trained on
    when a run resumes in the middle of an epoch.
    """

    def __init__(self, dataset: Dataset, dist: DistInfo, seed: int) -> None:
        super().__init__(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed)
        self.start = 0

    def __iter__(self):  # type: ignore[override]
        indices = list(super().__iter__())[self.start :]
        return iter([(self.epoch, i) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start


class _ShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``: disjoint shards with no padding (exact validation)."""

    def __init__(self, n: int, dist: DistInfo) -> None:
        self.indices = list(range(dist.rank, n, dist.world_size))

    def __iter__(self):  # type: ignore[override]
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# --- the trainer ----------------------------------------------------------------------------------------


def _check_optimizer_fits(ckpt: Checkpoint, optimizer: torch.optim.Optimizer) -> None:
    """Raise `CheckpointError` unless the stored optimiser state has this optimiser's groups and sizes."""
    stored = [len(g["params"]) for g in ckpt.optimizer["state_dict"]["param_groups"]]
    current = [len(g["params"]) for g in optimizer.param_groups]
    if stored != current:
        raise CheckpointError(
            f"checkpoint '{ckpt.path}' holds optimiser state for parameter groups of sizes {stored}, but "
            f"this run's optimiser has groups of sizes {current}: it was written for another model or "
            "optimiser set-up, so the run cannot resume from it"
        )


class HViTTrainer:
    """Trains and evaluates a classifier; saves and resumes runs.

    Args:
        model: any module mapping (B, C, H, W) images to (B, num_classes) logits. Its ``config`` and
            ``preprocessing`` (class names, mean, std) are stored in checkpoints when present.
        optimizer: optimiser over ``model``'s parameters; ``None`` builds AdamW from ``config`` (lr,
            weight decay not applied to norms, biases and position embeddings). Its learning rate is
            the peak of the warm-up + cosine schedule.
        criterion: training loss; ``None`` builds cross-entropy with ``config.label_smoothing``.
        device: "cpu", "cuda", "cuda:1", "auto" or a ``torch.device``; the model is moved there.
        config: a `TrainConfig` or a dict of its fields.
        train_data: training set yielding ``(image tensor, label)``; a ``DataLoader`` is used as given
            (then reproducibility is up to it).
        val_data: validation set (or ``DataLoader``) for `validate`.
        callbacks: objects with ``on_train_start`` / ``on_batch_end`` / ``on_epoch_end`` /
            ``on_train_end`` methods (see `hvit.train.callbacks`).

    Attributes:
        epoch: completed epochs. step: optimiser steps taken. batch_in_epoch: batches done in the
        current, unfinished epoch (0 between epochs). history: one log dict per completed epoch.
        status: "ready", "running", "completed", "stopped" or "failed"; message explains the last two.
        module: the model itself (``model`` may be its DistributedDataParallel wrapper).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        criterion: nn.Module | None = None,
        device: str | torch.device = "cpu",
        config: TrainConfig | dict[str, Any] | None = None,
        *,
        train_data: Dataset | DataLoader | None = None,
        val_data: Dataset | DataLoader | None = None,
        callbacks: Sequence[Any] = (),
    ) -> None:
        self.config = TrainConfig.coerce(config)
        self.dist = dist_info()
        self.device = resolve_device(device, self.dist.local_rank)
        # Seed the model's own randomness (dropout, stochastic depth); one stream per process.
        torch.manual_seed(self.config.seed + self.dist.rank)
        self.module = model.to(self.device)
        self.model: nn.Module = self.module
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Depth-wise convolution weights (C, 1, 3, 3) get gradients with an equivalent but differently
            # written stride for the size-1 dimension; DDP warns about it on every run. Harmless here.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            self.model = DistributedDataParallel(self.module, device_ids=ids)
        self.optimizer = optimizer if optimizer is not None else build_optimizer(self.module, self.config)
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])  # the peak of the schedule
        self.criterion = (
            criterion
            if criterion is not None
            else nn.CrossEntropyLoss(label_smoothing=self.config.label_smoothing)
        )
        self.train_data, self.val_data = train_data, val_data
        self.callbacks = list(callbacks)
        self.amp = self.config.amp and self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.extra: dict[str, Any] = {}  # stored in checkpoints (e.g. the command line)

        self.epoch = 0
        self.step = 0
        self.batch_in_epoch = 0
        self.history: list[dict[str, float]] = []
        self.status, self.message = "ready", ""
        self._running = {"loss_sum": 0.0, "correct": 0, "seen": 0}  # sums over the current epoch
        self._stop = threading.Event()
        self._train_loader: DataLoader | None = None
        self._sampler: _EpochSampler | None = None

    # --- data -------------------------------------------------------------------------------------------

    def _loader_kwargs(self) -> dict[str, Any]:
        workers = self.config.workers
        return {
            "batch_size": self.config.batch_size,
            "num_workers": workers,
            "pin_memory": self.device.type == "cuda",
            "persistent_workers": workers > 0,
        }

    def _train_loader_for(self, epoch: int, start_batch: int) -> DataLoader:
        if self.train_data is None:
            raise ValueError("no training data: pass train_data=... to HViTTrainer")
        if isinstance(self.train_data, DataLoader):
            return self.train_data
        if self._train_loader is None:
            self._sampler = _EpochSampler(self.train_data, self.dist, self.config.seed)
            # An explicit generator keeps the DataLoader from drawing its worker seed from the global
            # RNG, which would shift the model's dropout stream whenever a loader is (re)started.
            generator = torch.Generator().manual_seed(self.config.seed)
            self._train_loader = DataLoader(
                _SeededSamples(self.train_data, self.config.seed),
                sampler=self._sampler,
                generator=generator,
                **self._loader_kwargs(),
            )
        self._sampler.set_epoch(epoch)
        self._sampler.start = start_batch * self.config.batch_size
        return self._train_loader

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps in one full epoch (per process)."""
        if isinstance(self.train_data, DataLoader):
            return len(self.train_data)
        if self.train_data is None:
            raise ValueError("no training data: pass train_data=... to HViTTrainer")
        shard = math.ceil(len(self.train_data) / self.dist.world_size)
        return math.ceil(shard / self.config.batch_size)

    @property
    def total_steps(self) -> int:
        """Optimiser steps in the whole run."""
        return self.config.epochs * self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        return round(self.config.warmup_epochs * self.steps_per_epoch)

    def lr_at(self, step: int) -> float:
        """Learning rate of the first parameter group at ``step``."""
        peak = self.optimizer.param_groups[0]["initial_lr"]
        return peak * warmup_cosine(step, self.total_steps, self.warmup_steps, self.config.min_lr_ratio)

    # --- control ----------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask training to stop after the current batch (thread-safe; from a callback or a UI)."""
        self._stop.set()

    def _any_rank(self, flag: bool) -> bool:
        # Every process must take the same branch, or the next gradient all-reduce waits forever.
        if self.dist.world_size == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def _emit(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self, *args)

    def _fail(self, what: str, value: float, lr: float) -> None:
        where = f"epoch {self.epoch + 1}, batch {self.batch_in_epoch + 1} (step {self.step + 1})"
        last = self.config.checkpoint_path
        kept = (
            f"The last good checkpoint, '{last}', was kept."
            if last and Path(last).exists()
            else "No checkpoint had been written yet."
        )
        # Under DDP every process stops, but only one may have seen the bad value.
        became = f"became {value}" if not math.isfinite(value) else "became non-finite in another process"
        self.status = "failed"
        self.message = (
            f"Training stopped: the {what} {became} at {where}; the weights were not updated with it. "
            f"{kept} Usual causes: a learning rate too high for this model (it was {lr:.2e}), no gradient "
            "clipping, or NaN/inf values in the input images."
        )
        if self.dist.is_main:
            logger.error(self.message)
        raise NonFiniteLossError(self.message)

    # --- training ---------------------------------------------------------------------------------------

    def train_epoch(self) -> dict[str, float]:
        """Train until the end of the current epoch (or a requested stop).

        Returns:
            ``loss`` and ``accuracy`` averaged over the epoch's batches (all processes), ``lr`` (last),
            ``images_per_sec``, ``seconds``, and ``stopped`` (1.0 when a stop request ended it early).

        Raises:
            NonFiniteLossError: the loss or gradient norm was NaN or infinite.
        """
        loader = self._train_loader_for(self.epoch, self.batch_in_epoch)
        steps_per_epoch, total_steps, warmup = self.steps_per_epoch, self.total_steps, self.warmup_steps
        self.model.train()
        self.status = "running"
        start, images, stopped, lr = time.perf_counter(), 0, False, self.lr_at(self.step)
        steps_at_start = self.step
        for x, y in loader:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            factor = warmup_cosine(self.step, total_steps, warmup, self.config.min_lr_ratio)
            for group in self.optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
            lr = self.optimizer.param_groups[0]["lr"]

            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.model(x)  # (B, num_classes)
                loss = self.criterion(logits, y)
            loss_value = loss.item()
            if self._any_rank(not math.isfinite(loss_value)):
                self._fail("loss", loss_value, lr)

            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # The global gradient norm, clipped when configured; always checked, because one NaN
            # gradient would poison every weight at the optimiser step. (Identical on every rank:
            # DDP has already averaged the gradients.)
            max_norm = self.config.grad_clip if self.config.grad_clip is not None else math.inf
            grad_norm = float(nn.utils.clip_grad_norm_(self.module.parameters(), max_norm))
            if not math.isfinite(grad_norm):
                self._fail("gradient norm", grad_norm, lr)
            self.optimizer.step()

            batch = y.shape[0]
            correct = int((logits.argmax(dim=1) == y).sum())
            self.step += 1
            self.batch_in_epoch += 1
            images += batch
            self._running["loss_sum"] += loss_value * batch
            self._running["correct"] += correct
            self._running["seen"] += batch

            elapsed = time.perf_counter() - start
            rate = images * self.dist.world_size / max(elapsed, 1e-9)
            steps_per_sec = (self.step - steps_at_start) / max(elapsed, 1e-9)
            self._emit(
                "on_batch_end",
                {
                    "epoch": self.epoch + self.batch_in_epoch / steps_per_epoch,
                    "step": float(self.step),
                    "batch": float(self.batch_in_epoch),
                    "loss": loss_value,
                    "accuracy": correct / batch,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "images_per_sec": rate,
                    "eta_seconds": (total_steps - self.step) / steps_per_sec,
                },
            )
            if self._any_rank(self._stop.is_set()):
                stopped = self.batch_in_epoch < steps_per_epoch
                break

        seconds = time.perf_counter() - start
        sums = torch.tensor(
            [self._running["loss_sum"], self._running["correct"], self._running["seen"]], dtype=torch.float64
        )
        if self.dist.world_size > 1:
            sums = all_reduce_sum(sums.to(self.device)).cpu()
        logs = {
            "loss": float(sums[0] / max(sums[2], 1)),
            "accuracy": float(sums[1] / max(sums[2], 1)),
            "lr": lr,
            "images_per_sec": images * self.dist.world_size / max(seconds, 1e-9),
            "seconds": seconds,
            "stopped": float(stopped),
        }
        if not stopped:
            self.epoch += 1
            self.batch_in_epoch = 0
            self._running = {"loss_sum": 0.0, "correct": 0, "seen": 0}
        return logs

    @torch.no_grad()
    def validate(self, data: Dataset | DataLoader | None = None) -> dict[str, float]:
        """Evaluate on ``data`` (default: the trainer's ``val_data``), summed over all processes.

        Returns:
            ``loss`` (plain cross-entropy, no label smoothing, so runs compare), ``accuracy``,
            ``precision``, ``recall``, ``f1`` (macro), and ``top5_accuracy`` with >= 5 classes.
        """
        data = data if data is not None else self.val_data
        if data is None:
            raise ValueError("no validation data: pass val_data=... to HViTTrainer or to validate()")
        if isinstance(data, DataLoader):
            loader = data
        else:
            loader = DataLoader(
                data,
                sampler=_ShardSampler(len(data), self.dist),
                **{**self._loader_kwargs(), "persistent_workers": False},
            )
        self.module.eval()
        cm: torch.Tensor | None = None
        loss_sum, top5 = 0.0, 0
        for x, y in loader:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.module(x).float()  # (B, num_classes)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            batch_cm = confusion_matrix(logits, y)
            cm = batch_cm if cm is None else cm + batch_cm
            top5 += topk_correct(logits, y, 5)
        if cm is None:  # this shard was empty: still join the all-reduce with zeros
            num_classes = getattr(self.module, "num_classes", None)
            if not num_classes:
                raise ValueError("the validation data is empty")
            cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        if self.dist.world_size > 1:
            # Confusion matrices add up over shards: the metrics are exactly those of the whole set.
            cm = all_reduce_sum(cm.to(self.device)).cpu()
            extra = all_reduce_sum(
                torch.tensor([loss_sum, float(top5)], dtype=torch.float64, device=self.device)
            ).cpu()
            loss_sum, top5 = float(extra[0]), int(extra[1])
        metrics = metrics_from_confusion(cm, top5)
        return {"loss": loss_sum / max(int(cm.sum()), 1), **metrics}

    def fit(self) -> list[dict[str, float]]:
        """Train for ``config.epochs`` epochs (continuing a resumed run), validating after each.

        Writes ``config.checkpoint_path`` (when set) after every epoch and when stopped early. Returns
        ``history``: one dict per epoch (see `hvit.train.callbacks` for the keys).

        Raises:
            NonFiniteLossError: see `train_epoch`; ``status`` is then "failed".
        """
        self._stop.clear()
        self._emit("on_train_start")
        session_start, session_steps = time.perf_counter(), self.step
        try:
            while self.epoch < self.config.epochs:
                train = self.train_epoch()
                if train["stopped"]:
                    self.status, self.message = (
                        "stopped",
                        f"stopped by request at epoch {self.epoch + 1}, batch {self.batch_in_epoch}",
                    )
                    self._checkpoint_if_configured()
                    break
                logs = {
                    "epoch": float(self.epoch),
                    "train_loss": train["loss"],
                    "train_accuracy": train["accuracy"],
                }
                if self.val_data is not None:
                    logs.update({f"val_{k}": v for k, v in self.validate().items()})
                done = self.step - session_steps
                per_step = (time.perf_counter() - session_start) / max(done, 1)
                logs.update(
                    lr=train["lr"], images_per_sec=train["images_per_sec"], epoch_seconds=train["seconds"],
                    eta_seconds=per_step * (self.total_steps - self.step),
                )  # fmt: skip
                self.history.append(logs)
                self._checkpoint_if_configured()
                if self.dist.is_main:
                    logger.info(self.summary(logs))
                self._emit("on_epoch_end", logs)
                if self._any_rank(self._stop.is_set()):
                    self.status, self.message = "stopped", f"stopped by request after epoch {self.epoch}"
                    break
            else:
                self.status, self.message = "completed", f"completed {self.epoch} epochs"
        finally:
            if self.status == "running":  # an exception other than ours escaped
                self.status = "failed"
            self._emit("on_train_end")
        return self.history

    def summary(self, logs: dict[str, float]) -> str:
        """One line per epoch, for logs."""
        line = f"epoch {int(logs['epoch'])}/{self.config.epochs}  train loss {logs['train_loss']:.4f} acc {logs['train_accuracy']:.4f}"
        if "val_accuracy" in logs:
            line += (
                f"  val loss {logs['val_loss']:.4f} acc {logs['val_accuracy']:.4f} f1 {logs['val_f1']:.4f}"
            )
        return (
            line + f"  lr {logs['lr']:.2e}  {logs['images_per_sec']:.0f} img/s  {logs['epoch_seconds']:.1f} s"
        )

    # --- checkpoints ------------------------------------------------------------------------------------

    def _checkpoint_if_configured(self) -> None:
        if self.config.checkpoint_path:
            self.save_checkpoint()

    def state(self) -> dict[str, Any]:
        """The trainer's own resumable state (JSON-serialisable)."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "batch_in_epoch": self.batch_in_epoch,
            "running": dict(self._running),
            "history": self.history,
            "world_size": self.dist.world_size,
            "steps_per_epoch": self.steps_per_epoch if self.train_data is not None else None,
            "status": self.status,
        }

    def save_checkpoint(self, path: str | Path | None = None) -> Path | None:
        """Save everything needed to resume: weights, model config and preprocessing, optimiser, schedule,
        epoch and step, RNG states of every process. Atomic; written by rank 0 only.

        Args:
            path: output file (default ``config.checkpoint_path``).

        Returns:
            The path written (``None`` on other ranks).
        """
        path = path if path is not None else self.config.checkpoint_path
        if path is None:
            raise ValueError("no checkpoint path: pass one or set config.checkpoint_path")
        rng = capture_rng_state()
        if self.dist.world_size > 1:
            states: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(states, rng)  # every rank's RNG, so every rank can resume exactly
        else:
            states = [rng]
        written = None
        if self.dist.is_main:
            scheduler = {
                "name": "warmup_cosine", "step": self.step, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "min_ratio": self.config.min_lr_ratio,
            } if self.train_data is not None else None  # fmt: skip
            written = save_checkpoint(
                path, self.module, self.optimizer, train_config=self.config.to_dict(), trainer_state=self.state(),
                scheduler=scheduler, rng_states=states, extra=self.extra,
            )  # fmt: skip
        if self.dist.world_size > 1:
            dist.barrier()
        return written

    def load_checkpoint(self, path: str | Path) -> Checkpoint:
        """Resume from a checkpoint: weights, optimiser, epoch, step and RNG states.

        Raises:
            CheckpointError: the file is not a checkpoint, is corrupt, or does not fit this model.
        """
        ckpt = read_checkpoint(path)
        check_compatible(ckpt, self.module)
        restore_optimizer = (
            ckpt.optimizer is not None and ckpt.optimizer["class"] == type(self.optimizer).__name__
        )
        if restore_optimizer:
            _check_optimizer_fits(ckpt, self.optimizer)  # before anything is restored: all or nothing
        self.module.load_state_dict(ckpt.state_dict)
        if ckpt.preprocessing is not None and hasattr(self.module, "preprocessing"):
            from hvit.train.checkpoint import stored_preprocessing

            self.module.preprocessing = stored_preprocessing(ckpt.preprocessing, ckpt.extra.get("dataset"))
        if ckpt.optimizer is not None:
            if not restore_optimizer:
                logger.warning(
                    "checkpoint optimiser is %s, this trainer uses %s: optimiser state not restored",
                    ckpt.optimizer["class"],
                    type(self.optimizer).__name__,
                )
            else:
                self.optimizer.load_state_dict(ckpt.optimizer["state_dict"])
        if ckpt.trainer is not None:
            t = ckpt.trainer
            self.epoch, self.step, self.batch_in_epoch = t["epoch"], t["step"], t["batch_in_epoch"]
            self._running = dict(t["running"])
            self.history = list(t["history"])
            if self.train_data is not None and t.get("steps_per_epoch") not in (None, self.steps_per_epoch):
                logger.warning(
                    "checkpoint epochs had %s steps, this training data gives %d: the data or batch size "
                    "changed, so the resumed run differs from the original",
                    t["steps_per_epoch"],
                    self.steps_per_epoch,
                )
            if t.get("world_size", 1) != self.dist.world_size and self.batch_in_epoch:
                logger.warning(
                    "checkpoint was written by %d processes, resuming with %d: the rest of this epoch differs",
                    t["world_size"],
                    self.dist.world_size,
                )
        if ckpt.train_config is not None:
            changed = {
                k: (v, getattr(self.config, k))
                for k, v in ckpt.train_config.items()
                if k not in ("workers", "checkpoint_path") and getattr(self.config, k, v) != v
            }
            if changed and self.dist.is_main:
                logger.warning(
                    "resuming with settings that differ from the checkpoint's (stored, now): %s", changed
                )
        if ckpt.rng is not None:
            if len(ckpt.rng) == self.dist.world_size:
                restore_rng_state(ckpt.rng[self.dist.rank])
            elif self.dist.is_main:
                logger.warning(
                    "checkpoint holds RNG states of %d processes, not %d: not restored",
                    len(ckpt.rng),
                    self.dist.world_size,
                )
        if self.dist.is_main:
            logger.info(
                "resumed from %s at epoch %d, batch %d (step %d)",
                path,
                self.epoch,
                self.batch_in_epoch,
                self.step,
            )
        return ckpt

    def add_callbacks(self, callbacks: Iterable[Any]) -> None:
        """Attach more callbacks."""
        self.callbacks.extend(callbacks)
