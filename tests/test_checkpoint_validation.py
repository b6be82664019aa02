"""Hostile and damaged checkpoints: every wrong metadata type and size, absurd model sizes, NaN weights,
a digest that covers the metadata, damaged trainer / optimiser / RNG state. Each is refused when the file
is read, with a message that names the field, the value and what is valid; never Python's own errors."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as st_save

import hvit.registry as registry
from hvit.complexity import model_complexity
from hvit.config import HViTConfig, check_config
from hvit.data import ShapesDataset, build_transforms
from hvit.model import HierarchialViT, state_shapes
from hvit.train import CheckpointError, HViTTrainer, load_checkpoint, read_checkpoint
from hvit.train.checkpoint import _DIGEST_PLACEHOLDER, _seal

from helpers import PRE

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A complete checkpoint of a tiny run: weights, optimiser, trainer and RNG state."""
    torch.manual_seed(0)
    model = registry.create_model("hvit_nano", num_classes=6, img_size=16)
    model.preprocessing = PRE
    data = ShapesDataset(16, 16, seed=0, transform=build_transforms(PRE, train=True))
    path = tmp_path_factory.mktemp("ckpt") / "good.safetensors"
    trainer = HViTTrainer(model, None, None, "cpu", {"epochs": 1, "batch_size": 8, "warmup_epochs": 0},
                          train_data=data)  # fmt: skip
    trainer.fit()
    trainer.save_checkpoint(path)
    return path


def parts(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """The tensors and the parsed metadata sections of a checkpoint."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    parsed = {
        k: (v if k in ("format", "format_version", "sha256") else json.loads(v)) for k, v in meta.items()
    }
    return load_file(str(path)), parsed


def write(
    path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, object], raw: dict | None = None
) -> Path:
    """A checkpoint with this content and a valid digest: only the content can be refused."""
    strings = {k: (v if k in ("format", "format_version") else json.dumps(v)) for k, v in meta.items()}
    strings["sha256"] = _DIGEST_PLACEHOLDER
    strings.update(raw or {})
    path.write_bytes(_seal(st_save(tensors, metadata=strings)))
    return path


def crafted(good: Path, tmp_path: Path, edit, raw: dict | None = None) -> Path:
    tensors, meta = parts(good)
    meta = copy.deepcopy(meta)
    edit(tensors, meta)
    return write(tmp_path / "crafted.safetensors", tensors, meta, raw)


def setter(*keys, value):
    """An edit that sets meta[keys[0]][keys[1]]... = value."""

    def edit(tensors, meta):
        target = meta
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return edit


BAD_METADATA = [
    # the model entry and its configuration
    (setter("model", value=[]), "model is [], but it must be a JSON object"),
    (setter("model", "config", value="hvit_nano"), "model.config is 'hvit_nano', but it must be a JSON object"),
    (setter("model", "config", "img_size", value="16"), "img_size must be an int from 1 to 8,192, got '16'"),
    (setter("model", "config", "img_size", value=30000), "img_size must be an int from 1 to 8,192, got 30000"),
    (setter("model", "config", "depths", value=[10**4, 2, 2, 2]), "depths[0] must be an int from 1 to 1,024"),
    (setter("model", "config", "num_classes", value=10**7), "num_classes must be an int from 0 to 1,000,000"),
    (setter("model", "config", "embed_dims", value=[10**6, 32, 64, 128]), "embed_dims[0] must be an int from 1"),
    (setter("model", "config", "sr_ratios", value=[10**30, 4, 2, 1]), "sr_ratios[0] must be an int from 1"),
    (setter("model", "config", "depths", value={"a": 1}), "depths must be a non-empty list"),
    (setter("model", "config", "qkv_bias", value="yes"), "qkv_bias must be true or false, got 'yes'"),
    (setter("model", "config", "mlp_ratios", value=[float("inf")] * 4), "mlp_ratios[0] must be a number above 0"),
    (setter("model", "config", "colour", value=1), "colour is not a config field"),
    # preprocessing
    (setter("preprocessing", value=[1, 2]), "preprocessing is [1, 2], but it must be a JSON object"),
    (setter("preprocessing", "mean", value=[0.5] * 4), "preprocessing.mean is [0.5, 0.5, 0.5, 0.5], but it must be a list of 3 values"),
    (setter("preprocessing", "mean", value="0.5"), "preprocessing.mean is '0.5', but it must be a list of 3 values"),
    (setter("preprocessing", "std", value=[0.2, 0, 0.2]), "preprocessing.std[1] is 0, but it must be a finite number above 0"),
    (setter("preprocessing", "mean", value=["a", 0.5, 0.5]), "preprocessing.mean[0] is 'a', but it must be a finite number"),
    (setter("preprocessing", "class_names", value=["a", "b", "c", "d", "e"]), "preprocessing.class_names is ['a', 'b', 'c', 'd', 'e'], but it must be a list of 6 values"),
    (setter("preprocessing", "class_names", value={"0": "a"}), "preprocessing.class_names is {'0': 'a'}, but it must be a list of 6 values"),
    (setter("preprocessing", "class_names", value=[1, 2, 3, 4, 5, 6]), "preprocessing.class_names[0] is 1, but it must be a string"),
    (setter("preprocessing", "img_size", value="big"), "preprocessing.img_size is 'big', but it must be an integer from 1"),
    (setter("preprocessing", "interpolation", value="lanczos"), "preprocessing.interpolation is 'lanczos'"),
    (setter("preprocessing", "colour", value=True), "preprocessing is ['colour'], but it must be an object with only the keys img_size"),
    # training settings and trainer state
    (setter("train_config", "epochs", value="ten"), "invalid train_config: epochs must be an int >= 1, got 'ten'"),
    (setter("train_config", value=[1]), "train_config is [1], but it must be a JSON object"),
    (setter("trainer", value=[]), "trainer is [], but it must be a JSON object"),
    (setter("trainer", "epoch", value="1"), "trainer.epoch is '1', but it must be an integer >= 0"),
    (setter("trainer", "running", value=[0, 0, 0]), "trainer.running is [0, 0, 0], but it must be a JSON object"),
    (setter("trainer", "running", "seen", value=-1), "trainer.running.seen is -1, but it must be an integer >= 0"),
    (setter("trainer", "history", value={"0": 1}), "trainer.history is {'0': 1}, but it must be a list"),
    (setter("trainer", "world_size", value=0), "trainer.world_size is 0, but it must be an integer >= 1"),
    # optimiser state
    (setter("optimizer", "param_groups", value="all"), "optimizer.param_groups is 'all', but it must be a list"),
    (setter("optimizer", "param_groups", 0, "params", value=["w"]), "optimizer.param_groups[0].params[0] is 'w'"),
    (setter("optimizer", "param_groups", 0, "betas", value=[2, 0.9]), "optimizer.param_groups[0].betas[0] is 2, but it must be a number in [0, 1)"),
    (setter("optimizer", "param_groups", 0, "lr", value=None), "optimizer.param_groups[0].lr is None"),
    (setter("optimizer", "scalars", value={"x": {}}), "optimizer.scalars key is 'x', but it must be the index of a parameter"),
    (setter("optimizer", value=None), "optimizer is None, but it must be present, since the file holds optimiser tensors"),
    # random-number-generator state
    (setter("rng", value={"torch": 1}), "rng is {'torch': 1}, but it must be a list"),
    (setter("rng", 0, "numpy", value=["MT19937", [1, 2], 0]), "rng[0].numpy is ['MT19937', [1, 2], 0], but it must be a list of 5 values"),
    (setter("rng", 0, "numpy", 1, value=[1, 2]), "rng[0].numpy[1] is [1, 2], but it must be a list of 624 integers"),
    (setter("rng", 0, "python", 1, value=list(range(10))), "rng[0].python[1] is [0, 1, 2"),
    (setter("rng", 0, "cuda", value=2), "the rng tensors is ['rng/0/cuda/0', 'rng/0/cuda/1']"),
    (setter("extra", value="notes"), "extra is 'notes', but it must be a JSON object"),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "fragment"), BAD_METADATA, ids=[m for _, m in BAD_METADATA])
def test_every_wrong_type_and_size_of_metadata_is_named(good, tmp_path, edit, fragment):
    path = crafted(good, tmp_path, edit)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"format_version": "two"}, "format_version is 'two', but it must be a whole number"),
        ({"sha256": "xyz"}, "sha256 is 'xyz', but it must be 64 lowercase hexadecimal digits"),
        ({"trainer": "{not json"}, "trainer is '{not json', but it must be JSON"),
    ],
)
def test_damaged_identity_fields_are_named(good, tmp_path, raw, fragment):
    path = crafted(good, tmp_path, lambda tensors, meta: None, raw=raw)
    with pytest.raises(CheckpointError, match="damaged or was not written by hvit") as info:
        read_checkpoint(path)
    assert fragment in str(info.value)


def test_tensors_that_disagree_with_the_stored_configuration_are_refused_before_loading(good, tmp_path):
    def other_config(tensors, meta):
        meta["model"]["config"]["embed_dims"] = [16, 32, 64, 96]  # the tensors are for 128

    with pytest.raises(CheckpointError, match="weights do not match its own model configuration") as info:
        read_checkpoint(crafted(good, tmp_path, other_config))
    assert "stages.3.downsample.proj.bias: [128] instead of [96]" in str(info.value)

    def dropped(tensors, meta):
        del tensors["model/head.weight"]

    with pytest.raises(CheckpointError, match=r"1 missing \(e.g. head.weight\)"):
        read_checkpoint(crafted(good, tmp_path, dropped))

    def stray(tensors, meta):
        tensors["junk/0"] = torch.zeros(3)

    with pytest.raises(CheckpointError, match="tensor name is 'junk/0', but it must be model/"):
        read_checkpoint(crafted(good, tmp_path, stray))

    def orphan_state(tensors, meta):
        tensors["optimizer/999/exp_avg"] = torch.zeros(3)

    with pytest.raises(CheckpointError, match="the parameter index of tensor optimizer/999/exp_avg is '999'"):
        read_checkpoint(crafted(good, tmp_path, orphan_state))

    def short_rng(tensors, meta):
        tensors["rng/0/torch"] = tensors["rng/0/torch"][:10].clone()

    with pytest.raises(
        CheckpointError, match="tensor rng/0/torch is .* but it must be a uint8 tensor of 5056 bytes"
    ):
        read_checkpoint(crafted(good, tmp_path, short_rng))


def test_a_model_over_the_memory_budget_is_refused_with_its_size_before_allocation(
    good, tmp_path, monkeypatch
):
    def huge(tensors, meta):  # valid ranges, but 9 G parameters: 33.5 GiB in fp32
        meta["model"]["config"].update(num_classes=1_000_000, embed_dims=[16, 32, 64, 8192])
        meta["preprocessing"]["class_names"] = None

    path = crafted(good, tmp_path, huge)
    built_on = []  # the device of every model built while loading: none (the cost is counted from the config)
    original = HierarchialViT.__init__

    def recording_init(self, *args, **kwargs):
        built_on.append(torch.get_default_device().type)
        original(self, *args, **kwargs)

    monkeypatch.setattr(HierarchialViT, "__init__", recording_init)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert (
        "describes a model of 9,003,602,912 parameters that needs about 33.54 GiB for one 16 px image"
        in message
    )
    assert "more than the memory budget of 4.00 GiB" in message and "HVIT_MEMORY_BUDGET_GB" in message
    assert built_on == []
    monkeypatch.undo()

    report = model_complexity(registry.model_config("hvit_nano", num_classes=6, img_size=16))
    with pytest.raises(CheckpointError, match="more than the memory budget of 0.00 GiB"):
        read_checkpoint(good, memory_budget=report.memory_bytes - 1)
    assert read_checkpoint(good, memory_budget=report.memory_bytes + good.stat().st_size)
    monkeypatch.setenv("HVIT_MEMORY_BUDGET_GB", "0.000001")
    with pytest.raises(CheckpointError, match="memory budget of 0.00 GiB"):
        read_checkpoint(good)
    monkeypatch.setenv("HVIT_MEMORY_BUDGET_GB", "lots")
    with pytest.raises(CheckpointError, match="HVIT_MEMORY_BUDGET_GB='lots' is not a positive number of GiB"):
        read_checkpoint(good)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_with_the_tensor_name(good, tmp_path, value):
    def poison(tensors, meta):
        tensors["model/stages.1.blocks.0.mlp.fc1.weight"][0, :3] = value

    with pytest.raises(
        CheckpointError,
        match=r"holds 3 NaN or infinite values in tensor model/stages.1.blocks.0.mlp.fc1.weight",
    ):
        load_checkpoint(crafted(good, tmp_path, poison))


def test_the_digest_covers_the_metadata(good, tmp_path):
    data = good.read_bytes()
    header_len = struct.unpack("<Q", data[:8])[0]
    assert data[8 : 8 + header_len].count(b'\\"circle\\"') == 1  # a class name inside the JSON metadata
    edited = data.replace(b'\\"circle\\"', b'\\"circlf\\"', 1)  # one byte, still valid metadata
    (tmp_path / "edited.safetensors").write_bytes(edited)
    with pytest.raises(CheckpointError, match="corrupt: its metadata or tensor bytes do not match"):
        read_checkpoint(tmp_path / "edited.safetensors")
    assert read_checkpoint(good).preprocessing["class_names"][0] == "circle"


def test_format_1_files_still_load_with_their_tensor_digest(good, tmp_path):
    tensors, meta = parts(good)
    strings = {k: (v if k in ("format", "format_version") else json.dumps(v)) for k, v in meta.items()}
    strings.update(format_version="1", sha256=_DIGEST_PLACEHOLDER)
    data = st_save(tensors, metadata=strings)
    header_len = struct.unpack("<Q", data[:8])[0]
    digest = hashlib.sha256(data[8 + header_len :]).hexdigest()  # format 1: the tensor bytes only
    old = tmp_path / "v1.safetensors"
    old.write_bytes(data.replace(_DIGEST_PLACEHOLDER.encode(), digest.encode(), 1))
    model = load_checkpoint(old)
    assert model.preprocessing.class_names == PRE.class_names
    flipped = bytearray(old.read_bytes())
    flipped[-100] ^= 0xFF
    old.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupt: its tensor bytes do not match"):
        read_checkpoint(old)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="is not a regular file"):
        read_checkpoint(fifo)


def test_resuming_with_a_different_optimiser_layout_restores_nothing(good, tmp_path):
    torch.manual_seed(1)
    model = registry.create_model("hvit_nano", num_classes=6, img_size=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW([{"params": list(model.parameters())}])  # one group; the file has two
    trainer = HViTTrainer(model, optimizer, None, "cpu", {"epochs": 1})
    with pytest.raises(CheckpointError, match=r"parameter groups of sizes \[\d+, \d+\], but this run's"):
        trainer.load_checkpoint(good)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # all or nothing


def test_config_bounds_and_the_config_only_complexity():
    assert check_config(sr_ratios=(10**30, 4, 2, 1))[0].field == "sr_ratios[0]"
    assert check_config(norm_eps=float("nan"))[0].field == "norm_eps"
    assert check_config(depths=(1,) * 17, embed_dims=(8,) * 17, num_heads=(1,) * 17, mlp_ratios=(1,) * 17,
                        sr_ratios=(1,) * 17)[0].message.endswith("at most 16 are supported")  # fmt: skip
    for name in ("hvit_nano_stem", "pvt_v2_b0", "pvt_tiny", "pvt_v2_b2_li"):
        model = registry.create_model(name)
        report = model_complexity(model.config)
        assert report.total_params == sum(p.numel() for p in model.parameters())
        assert state_shapes(model.config) == {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert report.memory_bytes > 4 * report.total_params
    # The largest configuration the bounds allow is costed from its shapes, without building it.
    deepest = HViTConfig(depths=(1024,) * 4, embed_dims=(64, 128, 256, 65536), num_classes=1_000_000)
    report = model_complexity(deepest)
    assert report.stages[0].depth == 1024 and report.total_params > 65536 * 1_000_000
    assert len(state_shapes(deepest)) > 4 * 1024 * 10
