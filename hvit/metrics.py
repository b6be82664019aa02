"""Classification metrics from model outputs: accuracy, top-5, macro precision / recall / F1, confusion.

Everything is computed from a confusion matrix (plus the count of top-5 hits), because confusion
matrices add up: the trainer sums them over batches and over processes (DistributedDataParallel) and
gets exactly the metrics of the whole validation set, without gathering every prediction.
"""

from __future__ import annotations

import torch

__all__ = ["calculate_metrics", "confusion_matrix", "metrics_from_confusion", "topk_correct"]


def _check_outputs(outputs: torch.Tensor, targets: torch.Tensor) -> None:
    if not isinstance(outputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError(
            f"outputs and targets must be torch.Tensors, got {type(outputs).__name__} and {type(targets).__name__}"
        )
    if outputs.ndim != 2 or not outputs.is_floating_point():
        raise ValueError(
            f"outputs must be a floating-point (N, num_classes) tensor of logits or probabilities, "
            f"got shape {tuple(outputs.shape)} dtype {outputs.dtype}"
        )
    _check_targets(targets, outputs.shape[0], outputs.shape[1])


def _check_targets(targets: torch.Tensor, n: int, num_classes: int) -> None:
    if (
        targets.ndim != 1
        or targets.dtype.is_floating_point
        or targets.dtype == torch.bool
        or targets.is_complex()
    ):
        raise ValueError(
            f"targets must be an integer (N,) tensor of class indices, got shape {tuple(targets.shape)} "
            f"dtype {targets.dtype} (one-hot targets: pass targets.argmax(1))"
        )
    if targets.shape[0] != n:
        raise ValueError(f"outputs hold {n} samples but targets hold {targets.shape[0]}: they must match")
    if n == 0:
        raise ValueError("metrics of zero samples are undefined: outputs and targets are empty")
    lo, hi = int(targets.min()), int(targets.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"targets must be class indices in [0, {num_classes - 1}], found values from {lo} to {hi}"
        )


def confusion_matrix(
    outputs: torch.Tensor, targets: torch.Tensor, num_classes: int | None = None
) -> torch.Tensor:
    """Count of (true class, predicted class) pairs.

    Args:
        outputs: (N, C) logits or probabilities, or (N,) integer predicted classes.
        targets: (N,) integer true classes.
        num_classes: C; required with (N,) predictions unless ``max(...) + 1`` will do.

    Returns:
        (C, C) int64 matrix; entry ``[t, p]`` counts samples of true class t predicted as p, so rows sum
        to the class supports and the diagonal holds the correct predictions.
    """
    if isinstance(outputs, torch.Tensor) and outputs.ndim == 1 and not outputs.is_floating_point():
        if not isinstance(targets, torch.Tensor):
            raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
        if num_classes is None:
            num_classes = int(max(outputs.max(), targets.max())) + 1 if outputs.numel() else 0
        preds = outputs
        _check_targets(targets, preds.shape[0], num_classes)
        if int(preds.min()) < 0 or int(preds.max()) >= num_classes:
            raise ValueError(f"predicted classes must lie in [0, {num_classes - 1}]")
    else:
        _check_outputs(outputs, targets)
        if num_classes is not None and num_classes != outputs.shape[1]:
            raise ValueError(f"num_classes={num_classes} but outputs have {outputs.shape[1]} columns")
        num_classes = outputs.shape[1]
        preds = outputs.argmax(dim=1)
    # Each pair (t, p) becomes the single index t * C + p; one bincount then fills the whole matrix.
    flat = targets.long().cpu() * num_classes + preds.long().cpu()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def topk_correct(outputs: torch.Tensor, targets: torch.Tensor, k: int = 5) -> int:
    """Number of samples whose true class is among the ``k`` highest outputs."""
    _check_outputs(outputs, targets)
    topk = outputs.topk(min(k, outputs.shape[1]), dim=1).indices  # (N, k)
    return int((topk == targets[:, None].to(topk.device)).any(dim=1).sum())


def metrics_from_confusion(cm: torch.Tensor, top5_correct: int | None = None) -> dict[str, float]:
    """The metrics of `calculate_metrics` from a (C, C) confusion matrix (rows: true class).

    Macro averages run over the classes that occur, as true or predicted class; a class that is never
    predicted has precision 0, one that never occurs but is predicted has recall 0.
    """
    cm = cm.double()
    total = cm.sum()
    if total == 0:
        raise ValueError("the confusion matrix is empty: no samples")
    tp = cm.diag()
    support, predicted = cm.sum(1), cm.sum(0)  # (C,) each: true count, predicted count
    present = (support + predicted) > 0
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp_min(1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-12), torch.zeros_like(tp))
    out = {
        "accuracy": float(tp.sum() / total),
        "precision": float(precision[present].mean()),
        "recall": float(recall[present].mean()),
        "f1": float(f1[present].mean()),
    }
    if top5_correct is not None and cm.shape[0] >= 5:
        out["top5_accuracy"] = float(top5_correct / total)
    return out


def calculate_metrics(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Calculate classification metrics.

    Args:
        outputs: (N, C) model outputs (logits or probabilities), floating point.
        targets: (N,) integer ground-truth classes in [0, C).

    Returns:
        ``accuracy``, ``precision``, ``recall`` and ``f1`` (macro averages over the classes present),
        plus ``top5_accuracy`` when C >= 5; all fractions in [0, 1]. For the confusion matrix see
        `confusion_matrix`.

    Raises:
        TypeError: inputs are not tensors.
        ValueError: shapes, dtypes or class indices do not fit together; the message says how.
    """
    _check_outputs(outputs, targets)
    top5 = topk_correct(outputs, targets, 5) if outputs.shape[1] >= 5 else None
    return metrics_from_confusion(confusion_matrix(outputs, targets), top5)
