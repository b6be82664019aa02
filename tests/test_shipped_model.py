"""The 32 px shapes model shipped in hvit/assets/: small, self-describing, and >= 95% accurate on shapes it never saw."""

import pytest
import torch
from PIL import Image

import hvit
from hvit.assets import SHAPES_MODEL, asset_path, shipped_checkpoint
from hvit.data import SHAPE_CLASSES, HViTDataset, ShapesDataset, build_transforms
from hvit.train import read_checkpoint

SHIPPED = shipped_checkpoint(
    SHAPES_MODEL
)  # the 32 px shapes model (the classroom model: test_classroom_model.py)
UNSEEN_SEED = 12345  # training used seed 0 (splits "train" and "val"); this seed was never used


@pytest.fixture(scope="module")
def model():
    return hvit.load_checkpoint(SHIPPED)


def test_checkpoint_is_small_and_self_describing(model):
    assert SHIPPED.stat().st_size <= 10 * 2**20
    assert model.preprocessing.class_names == list(SHAPE_CLASSES)
    assert model.preprocessing.img_size == model.config.img_size == 32
    assert model.num_classes == len(SHAPE_CLASSES) and not model.training


def test_model_card_quotes_the_command_that_trained_it():
    cli = read_checkpoint(SHIPPED).extra["cli"]
    card = asset_path("MODEL_CARD.md").read_text()
    assert f"--model {cli['model']} --dataset {cli['dataset']} --epochs {cli['epochs']}" in card
    assert f"--train-size {cli['train_size']}" in card and f"--lr {cli['lr']}" in card


def test_accuracy_on_a_fresh_seed_is_at_least_95_percent(model):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batch inference of a tiny model: one thread is as fast and never spins
    try:
        data = ShapesDataset(
            600, 32, seed=UNSEEN_SEED, split="test", transform=build_transforms(model.preprocessing)
        )
        x = torch.stack([data[i][0] for i in range(len(data))])
        with torch.inference_mode():
            predictions = torch.cat([model(batch).argmax(1) for batch in x.split(200)])
    finally:
        torch.set_num_threads(threads)
    accuracy = (predictions == data.labels).float().mean().item()
    assert accuracy >= 0.95, f"shipped model accuracy {accuracy:.3f} on unseen seed {UNSEEN_SEED}"


def test_sample_images_come_with_their_masks():
    samples = HViTDataset(asset_path("shapes_samples"), split="test")
    assert samples.classes == list(SHAPE_CLASSES) and len(samples) == 2 * len(SHAPE_CLASSES)
    for path, _ in samples.samples:
        mask = Image.open(path.replace("/test/", "/test_masks/"))
        assert mask.mode == "L" and mask.size == Image.open(path).size
