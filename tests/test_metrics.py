"""Metrics: hand-checked values, additivity over shards, and clear errors."""

import pytest
import torch

from hvit.metrics import calculate_metrics, confusion_matrix, metrics_from_confusion, topk_correct


def one_hot_logits(preds: list[int], num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(preds), num_classes).float()


def test_hand_computed_example():
    # true:  0 0 0 1 1 2    pred: 0 0 1 1 2 2
    targets = torch.tensor([0, 0, 0, 1, 1, 2])
    outputs = one_hot_logits([0, 0, 1, 1, 2, 2], 3)
    m = calculate_metrics(outputs, targets)
    # per class precision: 2/2, 1/2, 1/2 ; recall: 2/3, 1/2, 1/1
    p = [1.0, 0.5, 0.5]
    r = [2 / 3, 0.5, 1.0]
    f1 = [2 * a * b / (a + b) for a, b in zip(p, r, strict=True)]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(sum(p) / 3)
    assert m["recall"] == pytest.approx(sum(r) / 3)
    assert m["f1"] == pytest.approx(sum(f1) / 3)
    assert "top5_accuracy" not in m  # fewer than 5 classes
    assert all(isinstance(v, float) for v in m.values())


def test_confusion_matrix_layout():
    targets = torch.tensor([0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 0, 1, 1, 2, 2])
    cm = confusion_matrix(preds, targets, num_classes=3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert cm.sum(1).tolist() == [3, 2, 1]  # rows: class supports
    assert torch.equal(confusion_matrix(one_hot_logits(preds.tolist(), 3), targets), cm)


def test_top5_and_perfect_predictions():
    torch.manual_seed(0)
    targets = torch.arange(10).repeat(3)
    logits = torch.randn(30, 10)
    logits[torch.arange(30), targets] = 100.0
    m = calculate_metrics(logits, targets)
    assert m == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "top5_accuracy": 1.0}
    # The true class ranked 3rd everywhere: top-1 wrong, top-5 right.
    logits = torch.zeros(30, 10)
    logits[torch.arange(30), (targets + 1) % 10] = 3
    logits[torch.arange(30), (targets + 2) % 10] = 2
    logits[torch.arange(30), targets] = 1
    m = calculate_metrics(logits, targets)
    assert m["accuracy"] == 0.0 and m["top5_accuracy"] == 1.0
    assert topk_correct(logits, targets, k=2) == 0


def test_confusion_matrices_add_over_shards():
    torch.manual_seed(1)
    logits, targets = torch.randn(50, 6), torch.randint(0, 6, (50,))
    whole = calculate_metrics(logits, targets)
    cm = confusion_matrix(logits[:20], targets[:20]) + confusion_matrix(logits[20:], targets[20:])
    top5 = topk_correct(logits[:20], targets[:20]) + topk_correct(logits[20:], targets[20:])
    assert metrics_from_confusion(cm, top5) == pytest.approx(whole)


def test_macro_average_skips_absent_classes():
    # Class 2 never occurs and is never predicted: it must not drag the macro averages down.
    m = calculate_metrics(one_hot_logits([0, 1], 3), torch.tensor([0, 1]))
    assert m["precision"] == m["recall"] == m["f1"] == 1.0


@pytest.mark.parametrize(
    "outputs, targets, match",
    [
        (torch.randn(4), torch.zeros(4, dtype=torch.long), "floating-point \\(N, num_classes\\)"),
        (torch.randint(0, 3, (4, 3)), torch.zeros(4, dtype=torch.long), "floating-point"),
        (torch.randn(4, 3), torch.zeros(5, dtype=torch.long), "4 samples but targets hold 5"),
        (torch.randn(4, 3), torch.zeros(4), "integer \\(N,\\) tensor"),
        (torch.randn(4, 3), torch.zeros(4, 3, dtype=torch.long), "one-hot"),
        (torch.randn(4, 3), torch.tensor([0, 1, 2, 3]), "in \\[0, 2\\]"),
        (torch.randn(0, 3), torch.zeros(0, dtype=torch.long), "zero samples"),
    ],
)
def test_bad_inputs_raise_clear_errors(outputs, targets, match):
    with pytest.raises(ValueError, match=match):
        calculate_metrics(outputs, targets)


def test_non_tensor_inputs():
    with pytest.raises(TypeError, match="torch.Tensors"):
        calculate_metrics([[0.1, 0.9]], torch.tensor([1]))
