"""Live training: a trainer in a background thread, and everything a page needs to draw it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from hvit.model import HierarchialViT

if TYPE_CHECKING:
    import plotly.graph_objects as go


# The first is the default: with its convolutional stem it learns ~3x faster than hvit_nano, which is
# kept next to it so a class can see the difference.
TRAINING_PRESETS = ("hvit_nano_stem", "hvit_nano", "hvit_micro", "hvit_nano_ms")


@dataclass
class TrainingRequest:
    """What the user asked to train.

    Attributes:
        dataset: "shapes", "mnist", "fashion-mnist", "cifar10", or a folder in the `HViTDataset` layout.
        preset: a registry name (the model is built with the data set's number of classes).
        epochs, batch_size, lr: as in `hvit.train.TrainConfig`.
        train_images: images per epoch (a fixed subset of large sets; the size of generated shapes).
        val_images: validation images.
        augment: "none", "light" or "strong".
        seed: seeds the model, the data order and the shapes.
    """

    dataset: str = "shapes"
    preset: str = TRAINING_PRESETS[0]
    epochs: int = 3
    batch_size: int = 64
    lr: float = 3e-3
    train_images: int = 6000
    val_images: int = 150
    augment: str = "none"
    seed: int = 0


class LiveTraining:
    """One training run in a background thread, reporting through `HViTTrainer` callbacks.

    The thread never touches the UI: it fills ``batches``, ``epochs`` and ``snapshots``, which a page
    reads and draws (a Streamlit fragment every second, for example). `stop` asks the trainer to stop
    after the current batch. Every run owns its model and data, so two runs (two browser sessions) never
    share state.

    Attributes:
        request: the `TrainingRequest`.
        phase: "ready", "queued" (waiting for a `TrainingQueue` slot), "preparing", "running",
            "completed", "stopped" or "failed".
        message: what happened, in words (why it failed, where it stopped).
        model: the model being trained (ready to use once the run has ended).
        class_names: the data set's classes.
        batches: per-batch logs (loss, accuracy, images_per_sec, eta_seconds, epoch, step, ...).
        epochs: per-epoch logs (train and validation loss and accuracy, ...).
        snapshots: ``(epoch, rollout map, predicted class, probability)`` of the fixed image before
            training and after every epoch; the map is a `hvit.explain.geometry.TokenMap` on the
            stage-1 token grid (``.to_image()`` paints it onto the (S, S) pixels).
        snapshot_image: (S, S, 3) float image in [0, 1] the snapshots are of.
        snapshot_uniform: a rollout map's value at one token when spread evenly (1 / stage-1 tokens).
        results: after the run: ``confusion`` (C, C) array and ``samples`` (images, labels, predictions,
            probabilities) of the validation set.
        nice: the CPU priority the run's thread got (0 normal, up to 19 lowest; `start`).
        started_at: when `start` was called (``time.time()``), ``None`` before.
        ended_at: when the run ended, completed, stopped or failed (``time.time()``), ``None`` before.
    """

    def __init__(self, request: TrainingRequest) -> None:
        import threading

        self.request = request
        self.phase = "ready"
        self.message = ""
        self.model: HierarchialViT | None = None
        self.trainer = None
        self.class_names: list[str] = []
        self.batches: list[dict[str, float]] = []
        self.epochs: list[dict[str, float]] = []
        self.snapshots: list[tuple[int, np.ndarray, str, float]] = []
        self.snapshot_image: np.ndarray | None = None
        self.snapshot_uniform: float | None = None
        self.results: dict | None = None
        self.total_steps = 0
        self.nice = 0
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._snapshot_input: torch.Tensor | None = None
        self._val = None

    # --- control ----------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.phase in ("preparing", "running")

    @property
    def finished(self) -> bool:
        return self.phase in ("completed", "stopped", "failed")

    @property
    def waiting(self) -> bool:
        """Queued, not started yet."""
        return self.phase == "queued"

    def start(self, num_threads: int | None = None, nice: int | None = None) -> None:
        """Start training in a daemon thread (returns at once).

        Args:
            num_threads: torch threads of this run (``torch.set_num_threads`` in its own thread: with
                torch's OpenMP build this sets that thread's team only, see `hvit.demo.training_queue`);
                ``None`` keeps the process's setting.
            nice: the run's CPU priority, 0 (normal) to 19 (lowest), set for its thread only
                (`hvit.demo.priority`): clicks in the app then get the CPU before the run; ``None``
                keeps normal priority.
        """
        import threading

        self.phase, self.started_at = "preparing", time.time()
        self._thread = threading.Thread(
            target=self._run, args=(num_threads, nice), name="hvit-live-training", daemon=True
        )
        self._thread.start()

    def _end(self, phase: str, message: str) -> None:
        # The time first: a page that sees the run ended also sees when.
        self.ended_at = time.time()
        self.phase, self.message = phase, message

    def stop(self) -> None:
        """Ask the run to stop after the current batch (thread-safe); a run not started yet ends here."""
        self._stop.set()
        if self.phase in ("ready", "queued"):
            self._end("stopped", "stopped before it started")
        if self.trainer is not None:
            self.trainer.request_stop()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread (tests and scripts)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def progress(self) -> dict[str, float]:
        """``fraction`` done, ``images_per_sec``, ``eta_seconds``, ``epoch`` (fractional), ``step``."""
        with self._lock:
            last = dict(self.batches[-1]) if self.batches else {}
        step = last.get("step", 0)
        return {
            "fraction": min(1.0, step / self.total_steps) if self.total_steps else 0.0,
            "images_per_sec": last.get("images_per_sec", 0.0),
            "eta_seconds": last.get("eta_seconds", float("nan")),
            "epoch": last.get("epoch", 0.0),
            "step": step,
        }

    def logs(self) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
        """Copies of the batch and epoch logs, safe to read while the thread appends."""
        with self._lock:
            return list(self.batches), list(self.epochs)

    # --- the thread ----------------------------------------------------------------------------------------

    def _prepare(self) -> tuple:
        from torch.utils.data import Subset

        from hvit.data import dataset_stats, load_dataset
        from hvit.preprocessing import Preprocessing
        from hvit.registry import create_model, model_config

        r = self.request
        img_size = model_config(r.preset).img_size
        kind = r.dataset
        mean, std = dataset_stats(kind, img_size=img_size)
        if kind == "shapes":
            probe = load_dataset("shapes", "val", num_samples=0)
        elif Path(kind).is_dir():
            probe = load_dataset(kind, "train")
        else:
            probe = load_dataset(kind, "train")  # downloads when online; a clear RuntimeError when not
        classes = list(probe.classes)
        preprocessing = Preprocessing(img_size=img_size, mean=mean, std=std, class_names=classes)
        torch.manual_seed(r.seed)
        model = create_model(r.preset, num_classes=len(classes))
        model.preprocessing = preprocessing
        if kind == "shapes":
            train = load_dataset(
                "shapes", "train", preprocessing, augment=r.augment, num_samples=r.train_images, seed=r.seed
            )
            val = load_dataset("shapes", "val", preprocessing, num_samples=r.val_images, seed=r.seed)
        else:
            train = load_dataset(kind, "train", preprocessing, augment=r.augment)
            has_val = not Path(kind).is_dir() or (Path(kind) / "val").is_dir()
            if has_val:
                val = load_dataset(kind, "val", preprocessing)
                val_idx = range(min(r.val_images, len(val)))
            else:  # a folder with only train/: hold out a fixed, spread-out part of it
                val = load_dataset(kind, "train", preprocessing, augment="none")
                g = torch.Generator().manual_seed(r.seed)
                order = torch.randperm(len(val), generator=g).tolist()
                n_val = min(r.val_images, max(1, len(order) // 5))
                val_idx, train_idx = order[:n_val], order[n_val:]
                train = Subset(train, train_idx)
            val = Subset(val, list(val_idx))
            if len(train) > r.train_images:
                g = torch.Generator().manual_seed(r.seed)
                train = Subset(train, torch.randperm(len(train), generator=g)[: r.train_images].tolist())
        return model, classes, train, val

    def _run(self, num_threads: int | None = None, nice: int | None = None) -> None:
        from hvit.demo.priority import lower_this_thread
        from hvit.train import HViTTrainer, TrainConfig

        if nice is not None:  # before the first torch operation: its OpenMP threads inherit the value
            self.nice = nice if lower_this_thread(nice) else 0
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        try:
            model, classes, train, val = self._prepare()
            self.model, self.class_names, self._val = model, classes, val
            first = val[0]
            self._snapshot_input = first[0].unsqueeze(0)
            self.snapshot_image = _denormalise(model, self._snapshot_input)[0]
            self._snapshot(0)
            if self._stop.is_set():
                self._end("stopped", "stopped before the first batch")
                return
            r = self.request
            config = TrainConfig(
                epochs=r.epochs,
                batch_size=r.batch_size,
                lr=r.lr,
                warmup_epochs=min(1.0, r.epochs / 5),
                seed=r.seed,
                amp=False,
            )
            self.trainer = HViTTrainer(model, config=config, train_data=train, val_data=val, callbacks=[self])
            self.total_steps = self.trainer.total_steps
            if self._stop.is_set():
                self.trainer.request_stop()
            self.phase = "running"
            self.trainer.fit()
            model.eval()
            if self.epochs or self.batches:
                self.results = self._evaluate()  # before the phase changes: a UI that sees the end sees these
            self._end(self.trainer.status, self.trainer.message)
        except Exception as err:  # shown to the user as the reason the run failed
            self._end("failed", f"{type(err).__name__}: {err}" if not str(err) else str(err))
            if self.model is not None:
                self.model.eval()

    # trainer callbacks (called in the training thread)
    def on_batch_end(self, trainer: object, logs: dict[str, float]) -> None:
        with self._lock:
            self.batches.append(dict(logs))

    def on_epoch_end(self, trainer: object, logs: dict[str, float]) -> None:
        with self._lock:
            self.epochs.append(dict(logs))
        self._snapshot(int(logs["epoch"]))

    def _snapshot(self, epoch: int) -> None:
        from hvit.explain.rollout import attention_rollout

        rollout = attention_rollout(self.model, self._snapshot_input)
        self.snapshot_uniform = 1.0 / (rollout.grid[0] * rollout.grid[1])
        with torch.no_grad():
            was = self.model.training
            probs = self.model.eval()(self._snapshot_input).softmax(-1)[0]
            self.model.train(was)
        k = int(probs.argmax())
        with self._lock:
            self.snapshots.append((epoch, rollout.token_map(), self.class_names[k], float(probs[k])))

    @torch.no_grad()
    def _evaluate(self, n_samples: int = 12) -> dict:
        from torch.utils.data import DataLoader

        from hvit.metrics import confusion_matrix

        logits, labels, images = [], [], []
        for x, y in DataLoader(self._val, batch_size=128):
            logits.append(self.model(x))
            labels.append(y)
            if sum(len(i) for i in images) < n_samples:
                images.append(_denormalise(self.model, x[:n_samples]))
        out, target = torch.cat(logits), torch.cat(labels)
        probs = out.softmax(-1)
        cm = confusion_matrix(out, target, num_classes=len(self.class_names))
        return {
            "confusion": cm.numpy(),
            "accuracy": float((probs.argmax(-1) == target).float().mean()),
            "samples": {
                "images": np.concatenate(images)[:n_samples],
                "labels": target[:n_samples].tolist(),
                "predictions": probs.argmax(-1)[:n_samples].tolist(),
                "probabilities": probs.max(-1).values[:n_samples].tolist(),
            },
        }

    def checkpoint_bytes(self) -> bytes:
        """The trained model as a checkpoint file (safetensors) for download, reloadable anywhere."""
        import tempfile

        from hvit.train import save_checkpoint

        with tempfile.TemporaryDirectory() as tmp:
            path = save_checkpoint(Path(tmp) / "model.safetensors", self.model)
            return path.read_bytes()


def _denormalise(model: HierarchialViT, x: torch.Tensor) -> np.ndarray:
    """(B, C, S, S) normalised input -> (B, S, S, 3) float images in [0, 1] for display."""
    mean = torch.tensor(model.preprocessing.mean).view(1, -1, 1, 1)
    std = torch.tensor(model.preprocessing.std).view(1, -1, 1, 1)
    rgb = (x * std + mean).clamp(0, 1)
    if rgb.shape[1] == 1:
        rgb = rgb.expand(-1, 3, -1, -1)
    return rgb.permute(0, 2, 3, 1).numpy()


def training_curves_figure(batches: Sequence[dict], epochs: Sequence[dict]) -> go.Figure:
    """Loss and accuracy against epochs: every batch (thin) and every epoch's validation (markers).

    Args:
        batches: per-batch logs with ``epoch`` (fractional), ``loss`` and ``accuracy``.
        epochs: per-epoch logs with ``epoch``, ``train_loss``, ``train_accuracy``, ``val_loss``,
            ``val_accuracy``.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=["Loss", "Accuracy"], horizontal_spacing=0.08)
    x = [b["epoch"] for b in batches]
    for col, key, colour in ((1, "loss", "#3b5bdb"), (2, "accuracy", "#3b5bdb")):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[b[key] for b in batches],
                mode="lines" if len(batches) > 1 else "markers",
                name="training (each batch)",
                line=dict(color=colour, width=1.2),
                opacity=0.55,
                legendgroup="train",
                showlegend=col == 1,
                hovertemplate=f"epoch %{{x:.2f}}: {key} %{{y:.3f}}<extra>batch</extra>",
            ),
            row=1,
            col=col,
        )
        # Epoch means of training, and validation when the run has it: same look, different colour.
        ex = [e["epoch"] for e in epochs]
        for split, name, colour in (
            ("train", "training (epoch mean)", "#1c3faa"),
            ("val", "validation", "#e8590c"),
        ):
            if not epochs or f"{split}_{key}" not in epochs[0]:
                continue
            fig.add_trace(
                go.Scatter(
                    x=ex,
                    y=[e[f"{split}_{key}"] for e in epochs],
                    mode="lines+markers",
                    name=name,
                    line=dict(color=colour, width=2.5),
                    marker=dict(size=8 if split == "val" else 6),
                    legendgroup=f"{split}_epoch",
                    showlegend=col == 1,
                    hovertemplate=f"epoch %{{x}}: {key} %{{y:.3f}}<extra>{name.split(' ')[0]}</extra>",
                ),
                row=1,
                col=col,
            )
    # both axes start at 0: labels stand off their axes so the two "0"s do not print over each other
    fig.update_xaxes(title_text="epoch", rangemode="tozero", ticklabelstandoff=6)
    fig.update_yaxes(ticklabelstandoff=8)
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    fig.update_layout(
        height=330,
        margin=dict(l=10, r=10, t=40, b=10),
        template="plotly_white",
        legend=dict(orientation="h", yanchor="bottom", y=-0.38, x=0),
        uirevision="training",  # keep zoom while the figure is redrawn every second
    )
    return fig


def snapshot_figure(
    snapshots: Sequence[tuple[int, np.ndarray, str, float]],
    image: np.ndarray,
    uniform: float,
    max_panels: int = 3,
    panel_height: int = 290,
) -> go.Figure:
    """The attention-rollout snapshots of a run, large enough to read: before training, the latest,
    and evenly spaced epochs between them (at most ``max_panels``), on one shared colour scale.

    Args:
        snapshots: `LiveTraining.snapshots`, ``(epoch, map, predicted class, probability)`` (the map a
            `TokenMap` or an (S, S) array).
        image: (S, S, 3) image the maps are of (`LiveTraining.snapshot_image`).
        uniform: the rollout's uniform level (`LiveTraining.snapshot_uniform`): maps are drawn as a
            ratio to it, so "1" is a map spread evenly over the image.
        max_panels: how many snapshots to show.
        panel_height: pixels per panel (panels are square).
    """
    from hvit.explain.figures import panel_grid_figure

    if not snapshots:
        raise ValueError("snapshot_figure needs at least one snapshot")
    n = len(snapshots)
    picks = sorted({round(i * (n - 1) / max(1, max_panels - 1)) for i in range(min(n, max_panels))})
    shown = [snapshots[i] for i in picks]
    titles = [
        f"{'before training' if e == 0 else f'after epoch {e}'}: {label} {prob:.0%}"
        for e, _, label, prob in shown
    ]
    return panel_grid_figure(
        [m for _, m, _, _ in shown],
        titles,
        image=image,
        cols=len(shown),
        opacity=0.6,
        opacity_slider=False,
        panel_height=panel_height,
        uniform=uniform,
    )


def confusion_figure(cm: np.ndarray, class_names: Sequence[str]) -> go.Figure:
    """Confusion matrix heat map: rows are true classes, columns predicted ones, cells show counts."""
    import plotly.graph_objects as go

    cm = np.asarray(cm)
    row_share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    names = list(class_names)
    fig = go.Figure(
        go.Heatmap(
            z=row_share,
            x=names,
            y=names,
            text=cm,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar=dict(title="share of row", tickformat=".0%"),
            hovertemplate="true %{y}, predicted %{x}: %{text} images (%{z:.0%})<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", title_text="true class")
    fig.update_xaxes(title_text="predicted class", side="bottom")
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=10, b=10), template="plotly_white")
    return fig
