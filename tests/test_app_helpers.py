"""The non-UI helpers the classroom app relies on (`hvit.demo`): zip checks, costs, scores, live training."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hvit import demo
from hvit.registry import model_config


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def _zip(names: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in names:
            z.writestr(name, _png())
    return buf.getvalue()


def test_zip_in_the_dataset_layout_is_unpacked(tmp_path: Path) -> None:
    data = _zip(
        [f"mine/train/{c}/{i}.png" for c in ("cat", "dog") for i in range(3)] + ["mine/val/cat/9.png"]
    )
    root = demo.extract_dataset_zip(data, tmp_path)
    assert root == tmp_path / "mine"
    assert demo.folder_classes(root) == ["cat", "dog"]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["../evil/train/a/1.png", "train/b/1.png"], "unsafe path"),
        (["/abs/train/a/1.png"], "unsafe path"),
        (["train/a/1.png"], "at least two"),
        (["images/a/1.png", "images/b/1.png", "other/x.png"], "expected layout"),
    ],
)
def test_bad_zips_are_refused_in_words(tmp_path: Path, names: list[str], message: str) -> None:
    with pytest.raises(demo.DatasetZipError, match=message):
        demo.extract_dataset_zip(_zip(names), tmp_path)
    assert not any(tmp_path.parent.glob("evil"))


def test_not_a_zip_and_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(demo.DatasetZipError, match="not a readable zip"):
        demo.extract_dataset_zip(b"plain text", tmp_path)
    monkeypatch.setattr(demo.zip_upload, "MAX_UNZIPPED_BYTES", 10)
    with pytest.raises(demo.DatasetZipError, match="expands to"):
        demo.extract_dataset_zip(_zip(["train/a/1.png", "train/b/1.png"]), tmp_path)


def test_attention_cost_orders_the_three_attentions() -> None:
    cost = demo.attention_cost(model_config("pvt_v2_b0"), [224, 448, 896])
    glob, sra, lin = (cost[k]["gmacs"] for k in demo.ATTENTION_KINDS)
    assert all(g > s > 0 for g, s in zip(glob, sra, strict=True))
    # doubling the side: global attention x16 (N^2), linear SRA about x4 (N)
    assert glob[1] / glob[0] == pytest.approx(16, rel=0.05)
    assert lin[2] / lin[1] == pytest.approx(4, rel=0.05)


def test_pyramid_figure_draws_every_stage() -> None:
    from hvit.complexity import model_complexity

    fig = demo.pyramid_figure(model_complexity(model_config("hvit_nano_ms")))
    texts = " ".join(a.text for a in fig.layout.annotations)
    assert all(f"stage {i}" in texts for i in range(1, 5))
    assert "head group 2" in texts  # multi-scale: one key grid per head group


def test_scores_against_a_mask() -> None:
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:4] = True
    inside = np.zeros((8, 8))
    inside[3, 3] = 1.0
    rows = demo.map_scores({"hit": inside, "flat": np.ones((8, 8))}, mask)
    assert rows[0]["pointing game"] == 1.0 and rows[0]["mask mass"] == 1.0
    assert rows[1]["pointing game"] == 0.0 and rows[1]["mask mass"] == pytest.approx(rows[1]["chance"])
    assert demo.mask_at(mask, 16).shape == (16, 16) and demo.mask_at(mask, 16).sum() == 16


def test_live_training_runs_in_the_background_and_saves(tmp_path: Path) -> None:
    run = demo.LiveTraining(demo.TrainingRequest(epochs=1, train_images=32, val_images=16, batch_size=16))
    run.start()
    run.join(120)
    assert run.phase == "completed", run.message
    assert run.progress()["fraction"] == 1.0
    assert run.results["confusion"].sum() == 16
    from hvit.train import load_checkpoint

    path = tmp_path / "trained.safetensors"
    path.write_bytes(run.checkpoint_bytes())
    assert load_checkpoint(path).preprocessing.class_names == run.class_names


def test_training_curves_figure_draws_batches_epoch_means_and_validation():
    batches = [{"epoch": i / 4, "loss": 2.0 - i / 10, "accuracy": i / 10} for i in range(1, 9)]
    epochs = [
        {
            "epoch": e,
            "train_loss": 1.5 / e,
            "train_accuracy": 0.4 * e,
            "val_loss": 1.6 / e,
            "val_accuracy": 0.35 * e,
        }
        for e in (1, 2)
    ]
    fig = demo.training_curves_figure(batches, epochs)
    by_name = {}
    for trace in fig.data:
        by_name.setdefault(trace.name, []).append(trace)
    assert {k: len(v) for k, v in by_name.items()} == {
        "training (each batch)": 2,
        "training (epoch mean)": 2,
        "validation": 2,
    }
    loss_val, acc_val = by_name["validation"]
    assert list(loss_val.y) == [1.6, 0.8] and list(acc_val.y) == [0.35, 0.7] and list(acc_val.x) == [1, 2]
    assert list(by_name["training (each batch)"][1].y) == [b["accuracy"] for b in batches]
    # A run without validation (or before its first epoch ends) draws what it has, nothing invented.
    no_val = [{k: v for k, v in e.items() if not k.startswith("val_")} for e in epochs]
    assert {t.name for t in demo.training_curves_figure(batches, no_val).data} == {
        "training (each batch)",
        "training (epoch mean)",
    }
    assert {t.name for t in demo.training_curves_figure(batches, []).data} == {"training (each batch)"}
