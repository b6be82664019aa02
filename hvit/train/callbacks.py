"""Callbacks: how the trainer reports, so that a terminal, a notebook or a web page can draw live curves.

A callback is any object with some of these methods (missing ones are skipped)::

    on_train_start(trainer)
    on_batch_end(trainer, logs)   logs: epoch (fractional), step, batch, loss, accuracy, lr,
                                  grad_norm (before clipping), images_per_sec, eta_seconds
    on_epoch_end(trainer, logs)   logs: epoch, train_loss, train_accuracy, val_loss, val_accuracy,
                                  val_precision, val_recall, val_f1 (+ val_top5_accuracy with >= 5
                                  classes), lr, images_per_sec, epoch_seconds, eta_seconds
    on_train_end(trainer)         trainer.status: "completed", "stopped" or "failed" (+ trainer.message)

To stop from a callback (or from another thread, e.g. a Stop button), call ``trainer.request_stop()``:
training ends after the current batch, with a consistent state that `save_checkpoint` can store.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Callback", "History", "ProgressBar"]


class Callback:
    """Base class with no-op hooks; override the ones you need."""

    def on_train_start(self, trainer: Any) -> None:
        """Called once when `fit` starts."""

    def on_batch_end(self, trainer: Any, logs: dict[str, float]) -> None:
        """Called after every optimiser step."""

    def on_epoch_end(self, trainer: Any, logs: dict[str, float]) -> None:
        """Called after every epoch, after validation and checkpointing."""

    def on_train_end(self, trainer: Any) -> None:
        """Called once when `fit` ends, however it ends."""


class History(Callback):
    """Keeps every batch's and every epoch's logs in memory (``batches``, ``epochs``)."""

    def __init__(self) -> None:
        self.batches: list[dict[str, float]] = []
        self.epochs: list[dict[str, float]] = []

    def on_batch_end(self, trainer: Any, logs: dict[str, float]) -> None:
        self.batches.append(dict(logs))

    def on_epoch_end(self, trainer: Any, logs: dict[str, float]) -> None:
        self.epochs.append(dict(logs))


class ProgressBar(Callback):
    """A tqdm bar per epoch with loss, accuracy, learning rate and throughput (main process only)."""

    def __init__(self, leave: bool = False) -> None:
        self.leave = leave
        self.bar: Any = None

    def _open(self, trainer: Any) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=trainer.steps_per_epoch,
            initial=trainer.batch_in_epoch - 1,  # opened after the epoch's first (or resumed) batch
            desc=f"epoch {trainer.epoch + 1}/{trainer.config.epochs}",
            leave=self.leave,
            dynamic_ncols=True,
            disable=not trainer.dist.is_main,
        )

    def on_batch_end(self, trainer: Any, logs: dict[str, float]) -> None:
        if self.bar is None:
            self._open(trainer)
        self.bar.update(1)
        self.bar.set_postfix(
            loss=f"{logs['loss']:.3f}", acc=f"{logs['accuracy']:.2f}", lr=f"{logs['lr']:.1e}",
            img_s=f"{logs['images_per_sec']:.0f}",
        )  # fmt: skip
        if self.bar.n >= self.bar.total:  # the epoch is done
            self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_train_end(self, trainer: Any) -> None:
        self._close()
