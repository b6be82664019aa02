"""Checkpoints: round trip, refusal of wrong files, atomic writes, no pickle, exact resumption."""

import os

import pytest
import torch
from safetensors.torch import save_file

import hvit.registry as registry
from hvit.data import SHAPE_CLASSES, ShapesDataset, build_transforms
from hvit.train import (
    CheckpointError,
    History,
    HViTTrainer,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)

from helpers import PRE

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = registry.create_model("hvit_nano", num_classes=6, img_size=16, **overrides)
    model.preprocessing = PRE
    return model


def tiny_trainer(model, tmp_path, callbacks=(), **config) -> HViTTrainer:
    data = ShapesDataset(40, 16, seed=0, transform=build_transforms(PRE, train=True))
    cfg = {
        "epochs": 2,
        "batch_size": 8,
        "lr": 2e-3,
        "warmup_epochs": 0.5,
        "checkpoint_path": str(tmp_path / "run.safetensors"),
        **config,
    }
    return HViTTrainer(model, None, None, "cpu", cfg, train_data=data, callbacks=list(callbacks))


def test_round_trip_rebuilds_a_ready_model(tmp_path):
    model = tiny_model().eval()
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    loaded = load_checkpoint(path)  # the caller knows nothing about the configuration
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.config == model.config and loaded.preprocessing == PRE
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(loaded(x), model(x))


def test_refuses_what_is_not_a_matching_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(300))
    with pytest.raises(CheckpointError, match="is not an hvit checkpoint"):
        load_checkpoint(junk)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="without hvit metadata"):
        load_checkpoint(plain)

    good = save_checkpoint(tmp_path / "good.safetensors", tiny_model())
    data = good.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt|truncated"):
        load_checkpoint(truncated)
    flipped = bytearray(data)
    flipped[-100] ^= 0xFF  # one byte of one weight
    (tmp_path / "flipped.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupt: its metadata or tensor bytes do not match"):
        load_checkpoint(tmp_path / "flipped.safetensors")

    other = tiny_model(embed_dims=(16, 32, 64, 96))
    with pytest.raises(
        CheckpointError,
        match=r"different model configuration: embed_dims: checkpoint \[16, 32, 64, 128\], model \[16, 32, 64, 96\]",
    ):
        load_checkpoint(good, model=other)
    foreign = torch.nn.Linear(3, 6)
    with pytest.raises(CheckpointError, match="does not fit this model .*missing 2 tensors"):
        load_checkpoint(good, model=foreign)


def test_loading_never_unpickles(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model())
    assert path.read_bytes()[8:9] == b"{"  # a safetensors JSON header, not a pickle or zip

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load must not be used")

    monkeypatch.setattr(torch, "load", no_pickle)
    load_checkpoint(path)


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model(seed=0))
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    for target in ("fsync", "replace"):
        with monkeypatch.context() as m:
            m.setattr(os, target, crash)
            with pytest.raises(OSError, match="disk full"):
                save_checkpoint(path, tiny_model(seed=1))
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temporary left behind
    save_checkpoint(path, tiny_model(seed=1))
    assert path.read_bytes() != before


def test_checkpoint_holds_everything_to_resume(tmp_path):
    trainer = tiny_trainer(tiny_model(), tmp_path, epochs=1)
    trainer.fit()
    ckpt = read_checkpoint(tmp_path / "run.safetensors")
    assert ckpt.preprocessing["class_names"] == list(SHAPE_CLASSES)
    assert ckpt.model["config"]["img_size"] == 16 and ckpt.model["variant"] == "hvit_nano"
    assert ckpt.trainer["epoch"] == 1 and ckpt.trainer["step"] == 5
    assert ckpt.scheduler == {
        "name": "warmup_cosine",
        "step": 5,
        "warmup_steps": 2,
        "total_steps": 5,
        "min_ratio": 0.01,
    }
    assert ckpt.train_config["batch_size"] == 8
    assert set(ckpt.optimizer["state_dict"]["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert torch.equal(ckpt.rng[0]["torch"], torch.get_rng_state())


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path):
    # Stochastic depth makes the model itself random, so the RNG state must be restored too.
    straight = History()
    tiny_trainer(tiny_model(drop_path_rate=0.2), tmp_path / "a", [straight]).fit()

    class StopAt:
        def on_batch_end(self, trainer, logs):
            if trainer.step == 7:  # in the middle of epoch 2
                trainer.request_stop()

    first = History()
    interrupted = tiny_trainer(tiny_model(drop_path_rate=0.2), tmp_path / "b", [first, StopAt()])
    interrupted.fit()
    assert interrupted.status == "stopped" and (interrupted.epoch, interrupted.batch_in_epoch) == (1, 2)

    second = History()
    # A fresh process would build a differently initialised model; the checkpoint must override it all.
    resumed = tiny_trainer(tiny_model(seed=123, drop_path_rate=0.2), tmp_path / "b", [second])
    resumed.load_checkpoint(tmp_path / "b" / "run.safetensors")
    resumed.fit()
    losses = [b["loss"] for b in first.batches + second.batches]
    assert losses == [b["loss"] for b in straight.batches]  # bit-for-bit, not approximately
    assert [b["lr"] for b in first.batches + second.batches] == [b["lr"] for b in straight.batches]
    final_a = load_checkpoint(tmp_path / "a" / "run.safetensors").state_dict()
    final_b = load_checkpoint(tmp_path / "b" / "run.safetensors").state_dict()
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    assert second.epochs[-1]["train_loss"] == straight.epochs[-1]["train_loss"]
