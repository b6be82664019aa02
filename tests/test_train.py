"""Trainer, config, schedule, callbacks, stopping, failure, and the command line."""

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import hvit.registry as registry
from hvit.data import ShapesDataset, build_transforms
from hvit.train import (
    History,
    HViTTrainer,
    NonFiniteLossError,
    TrainConfig,
    build_optimizer,
    load_checkpoint,
    param_groups_weight_decay,
    read_checkpoint,
    warmup_cosine,
)
from hvit.train.cli import main as cli_main
from hvit.train.trainer import _EpochSampler, _SeededSamples

from helpers import PRE

pytestmark = pytest.mark.usefixtures("one_thread")


def shapes(n=40, train=True, seed=0):
    return ShapesDataset(
        n, 16, seed=seed, split="train" if train else "val", transform=build_transforms(PRE, train=train)
    )


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    model = registry.create_model("hvit_nano", num_classes=6, img_size=16, **overrides)
    model.preprocessing = PRE
    return model


# --- config and schedule --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("epochs", 0, "epochs must be an int >= 1, got 0"),
        ("batch_size", 2.5, "batch_size must be an int >= 1, got 2.5"),
        ("lr", -1.0, r"lr must be a number in \(0.0, inf\), got -1.0"),
        ("lr", float("nan"), "lr must be a number"),
        ("warmup_epochs", 20, r"warmup_epochs must be a number in \[0.0, 10.0\], got 20"),
        ("label_smoothing", 1.0, r"label_smoothing must be a number in \[0.0, 1.0\), got 1.0"),
        ("grad_clip", 0.0, r"grad_clip must be a number in \(0.0, inf\)"),
        ("amp", "yes", "amp must be True or False, got 'yes'"),
        ("workers", -1, "workers must be an int >= 0, got -1"),
        ("beta2", 1.0, r"beta2 must be a number in \[0.0, 1.0\), got 1.0"),
    ],
)
def test_config_validation_names_field_value_and_valid_range(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})


def test_config_accepts_a_plain_dict():
    assert TrainConfig.coerce({"epochs": 3}).epochs == 3
    assert TrainConfig.coerce(None) == TrainConfig()
    with pytest.raises(ValueError, match=r"unknown training config fields \['epoch'\]; valid fields are"):
        TrainConfig.coerce({"epoch": 3})
    assert TrainConfig.from_dict(TrainConfig(lr=0.01).to_dict()) == TrainConfig(lr=0.01)


def test_warmup_cosine_shape():
    total, warmup, floor = 100, 10, 0.05
    f = [warmup_cosine(s, total, warmup, floor) for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[warmup - 1] == 1.0 and f[warmup] == 1.0
    assert all(a < b for a, b in zip(f[:warmup], f[1:warmup], strict=False))  # rising warm-up
    assert all(a > b for a, b in zip(f[warmup:], f[warmup + 1 :], strict=False))  # falling cosine
    assert f[-1] == pytest.approx(floor)
    assert warmup_cosine(0, 10) == 1.0  # no warm-up: start at the peak


def test_weight_decay_skips_norms_biases_and_position_embeddings():
    model = tiny_model(pos_embed=True)
    no_decay, decay = param_groups_weight_decay(model, 0.05)
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
    names = {id(p): n for n, p in model.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert any(n.endswith("pos_embed") for n in skipped)
    assert all(p.ndim >= 2 for p in decay["params"])
    assert {n for n in names.values() if n.endswith((".bias", "norm.weight"))} <= skipped
    assert len(no_decay["params"]) + len(decay["params"]) == len(list(model.parameters()))


def test_build_optimizer_uses_config_and_the_fused_adamw():
    # beta2 reaches the optimiser, and on a CPU float32 model the fused kernel is chosen (the per-tensor
    # loop costs 5-10x more per step for a small model). Same update: one step of each agrees.
    model = tiny_model()
    opt = build_optimizer(model, {"lr": 0.01, "beta2": 0.95, "weight_decay": 0.1})
    assert all(g["betas"] == (0.9, 0.95) and g["lr"] == 0.01 and g["fused"] for g in opt.param_groups)
    twin = tiny_model()
    reference = torch.optim.AdamW(param_groups_weight_decay(twin, 0.1), lr=0.01, betas=(0.9, 0.95))
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    for m, o in ((model, opt), (twin, reference)):
        F.cross_entropy(m(x), y).backward()
        o.step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


# --- training -------------------------------------------------------------------------------------------


def test_training_learns_and_reports_through_callbacks(tmp_path):
    history = History()
    cfg = {"epochs": 4, "batch_size": 8, "lr": 3e-3, "warmup_epochs": 1}
    trainer = HViTTrainer(
        tiny_model(), None, None, "cpu", cfg, train_data=shapes(24), val_data=shapes(24), callbacks=[history]
    )
    trainer.fit()
    assert trainer.status == "completed" and trainer.step == 12 == len(history.batches)
    batch_keys = {
        "epoch",
        "step",
        "batch",
        "loss",
        "accuracy",
        "lr",
        "grad_norm",
        "images_per_sec",
        "eta_seconds",
    }
    assert all(set(b) == batch_keys for b in history.batches)
    # The learning rate followed the schedule exactly, step by step.
    assert [b["lr"] for b in history.batches] == [3e-3 * warmup_cosine(s, 12, 3, 0.01) for s in range(12)]
    assert history.batches[-1]["eta_seconds"] == 0.0 and history.batches[-1]["epoch"] == 4.0
    epochs = history.epochs
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4] and trainer.history == epochs
    assert {"train_loss", "val_loss", "val_accuracy", "val_f1", "val_top5_accuracy", "images_per_sec"} <= set(
        epochs[0]
    )
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]  # it learns on its own training set


def test_validate_matches_calculate_metrics():
    from hvit.metrics import calculate_metrics

    model, val = tiny_model().eval(), shapes(20, train=False)
    trainer = HViTTrainer(model, None, None, "cpu", {"batch_size": 7}, val_data=val)
    got = trainer.validate()
    xs, ys = zip(*[val[i] for i in range(len(val))], strict=True)
    with torch.no_grad():
        logits = model(torch.stack(xs))
    want = calculate_metrics(logits, torch.tensor(ys))
    assert got["accuracy"] == pytest.approx(want["accuracy"]) and got["f1"] == pytest.approx(want["f1"])
    assert got["loss"] == pytest.approx(
        nn.functional.cross_entropy(logits, torch.tensor(ys)).item(), rel=1e-5
    )


def test_stop_request_ends_at_a_batch_boundary(tmp_path):
    class StopAfterThree:
        def on_batch_end(self, trainer, logs):
            if logs["step"] == 3:
                trainer.request_stop()

    path = tmp_path / "ckpt.safetensors"
    cfg = {"epochs": 2, "batch_size": 8, "checkpoint_path": str(path)}
    trainer = HViTTrainer(
        tiny_model(), None, None, "cpu", cfg, train_data=shapes(40), callbacks=[StopAfterThree()]
    )
    trainer.fit()
    assert trainer.status == "stopped" and (trainer.epoch, trainer.batch_in_epoch, trainer.step) == (0, 3, 3)
    state = read_checkpoint(path).trainer
    assert (state["epoch"], state["batch_in_epoch"], state["step"], state["running"]["seen"]) == (0, 3, 3, 24)
    assert int(read_checkpoint(path).optimizer["state_dict"]["state"][0]["step"]) == 3  # optimiser agrees


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, caplog):
    class NaNAtStep:
        """Cross-entropy that returns NaN on its 7th call (epoch 2, batch 2)."""

        def __init__(self):
            self.calls = 0

        def __call__(self, logits, y):
            self.calls += 1
            loss = nn.functional.cross_entropy(logits, y)
            return loss * float("nan") if self.calls == 7 else loss

    path = tmp_path / "ckpt.safetensors"
    model = tiny_model()
    trainer = HViTTrainer(
        model,
        None,
        NaNAtStep(),
        "cpu",
        {"epochs": 3, "batch_size": 8, "checkpoint_path": str(path)},
        train_data=shapes(40),
    )
    weights = {}

    class Snapshot:
        def on_batch_end(self, trainer, logs):
            weights.update({k: v.clone() for k, v in model.state_dict().items()})

    trainer.add_callbacks([Snapshot()])
    good = None

    class KeepBytes:
        def on_epoch_end(self, trainer, logs):
            nonlocal good
            good = path.read_bytes()

    trainer.add_callbacks([KeepBytes()])
    with caplog.at_level(logging.ERROR, logger="hvit.train"), pytest.raises(NonFiniteLossError) as err:
        trainer.fit()
    message = str(err.value)
    assert "the loss became nan at epoch 2, batch 2 (step 7)" in message
    assert f"last good checkpoint, '{path}', was kept" in message and "learning rate" in message
    assert trainer.status == "failed" and message in caplog.text
    assert path.read_bytes() == good and read_checkpoint(path).trainer["epoch"] == 1
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())  # no NaN step taken


def test_any_module_and_a_dataloader_train():
    # The trainer knows nothing about hvit models: a two-layer CNN trains the same way.
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 6)
    )
    loader = torch.utils.data.DataLoader(shapes(16), batch_size=8)
    trainer = HViTTrainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        "cpu",
        {"epochs": 1},
        train_data=loader,
    )
    logs = trainer.train_epoch()
    assert trainer.step == 2 and math.isfinite(logs["loss"])


def test_augmentation_does_not_depend_on_worker_count():
    data = _SeededSamples(shapes(12), seed=5)
    sampler = _EpochSampler(data, trainer_dist(), seed=5)
    sampler.set_epoch(1)

    def batches(workers):
        return list(torch.utils.data.DataLoader(data, sampler=sampler, batch_size=4, num_workers=workers))

    zero, two = batches(0), batches(2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(zero, two, strict=True))
    sampler.set_epoch(2)
    assert not torch.equal(batches(0)[0][0], zero[0][0])  # a new epoch: new order, new augmentation


def trainer_dist():
    from hvit.train.distributed import DistInfo

    return DistInfo()


# --- command line ---------------------------------------------------------------------------------------


def test_cli_stores_the_generated_set_it_learned_as_the_domain(tmp_path):
    # shapes and shapes-pair share their class names: only the stored domain tells the apps which it is
    out = tmp_path / "pair.safetensors"
    args = ["--model", "hvit_nano", "--dataset", "shapes-pair", "--epochs", "1", "--train-size", "16",
            "--val-size", "8", "--batch-size", "8", "--img-size", "32", "--output", str(out), "--no-progress"]  # fmt: skip
    assert cli_main(args) == 0
    assert read_checkpoint(out).preprocessing["domain"] == "shapes-pair"
    assert load_checkpoint(out).preprocessing.domain == "shapes-pair"


def test_cli_trains_a_folder_of_grayscale_digits_and_resumes(tmp_path, capsys):
    # Ten classes of 28x28 grayscale PNGs and no validation folder: the layout a user brings.
    rng = np.random.default_rng(0)
    for c in range(10):
        for i in range(4):
            pixels = (rng.random((28, 28)) * 60).astype(np.uint8)
            pixels[4 + 2 * c : 8 + 2 * c, 6:22] = 255  # a bar whose height encodes the class
            path = tmp_path / "digits" / "train" / f"class_{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, "L").save(path)
    out = tmp_path / "run.safetensors"
    args = ["--model", "hvit_nano", "--dataset", str(tmp_path / "digits"), "--epochs", "1", "--batch-size", "16",
            "--img-size", "16", "--output", str(out), "--no-progress"]  # fmt: skip
    assert cli_main(args) == 0
    model = load_checkpoint(out)
    pre = model.preprocessing
    assert pre.class_names == [f"class_{c}" for c in range(10)] and model.num_classes == 10
    assert pre.mean[0] == pre.mean[1] == pre.mean[2] < 0.35  # measured on the data, not ImageNet's
    assert pre.domain is None  # a folder of the user's own: no known data set
    ckpt = read_checkpoint(out)
    assert ckpt.trainer["epoch"] == 1 and len(ckpt.trainer["history"]) == 1
    assert cli_main(["--resume", str(out), "--epochs", "2", "--no-progress"]) == 0
    assert read_checkpoint(out).trainer["epoch"] == 2
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--resume", str(out), "--lr", "0.5"])
    assert exit_info.value.code == 2
    assert "--lr 0.5 differs from the resumed run's 0.001" in capsys.readouterr().err
