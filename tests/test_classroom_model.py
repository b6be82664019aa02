"""The classroom model: its "shapes-pair" data, its legible grids, and the shipped file."""

import numpy as np
import pytest
import torch

import hvit
from hvit.assets import shipped_checkpoint
from hvit.data import SHAPE_CLASSES, ShapesDataset, load_dataset, make_shapes
from hvit.explain.extract import extract_attention
from hvit.train import read_checkpoint

# The one place that says where the shipped classroom model lives.
CLASSROOM_CHECKPOINT = shipped_checkpoint("hvit_classroom")


# --- the "pair" scene -------------------------------------------------------------------------------------


def test_pair_scene_is_deterministic_and_prefix_stable():
    a = make_shapes(12, 48, seed=5, split="val", scene="pair")
    b = make_shapes(30, 48, seed=5, split="val", scene="pair")
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y[:12])
    single = make_shapes(12, 48, seed=5, split="val")
    assert not torch.equal(a[0], single[0])  # a different scene, not the default one relabelled


def test_pair_decoy_is_another_class_smaller_and_outside_the_mask(monkeypatch):
    # Record every outline drawn: the pair scene draws the decoy, then the labelled shape.
    from hvit.data import shapes

    drawn = []
    real = shapes._shape_alpha

    def spy(name, img_size, centre, radius, angle):
        alpha = real(name, img_size, centre, radius, angle)
        drawn.append((name, radius, alpha[..., 0] >= 0.5))
        return alpha

    monkeypatch.setattr(shapes, "_shape_alpha", spy)
    for index in range(18):
        drawn.clear()
        image, label, mask = shapes.render_shape(index, 64, seed=2, split="test", scene="pair")
        assert len(drawn) == 2
        (decoy, decoy_radius, decoy_mask), (name, radius, shape_mask) = drawn
        assert name == SHAPE_CLASSES[label] and decoy != name
        assert radius >= 2 * decoy_radius
        assert np.array_equal(mask, shape_mask)  # the mask is the labelled shape's, exactly
        assert decoy_mask.any() and not (decoy_mask & mask).any()  # the decoy is there, never in the mask
        assert 0.03 < mask.mean() < 0.33  # radius 24-32 % of the side


def test_default_scene_is_unchanged_and_bad_scene_names_fail():
    # The default scene is "single", the one the 32 px live-training model learns (pixels pinned in
    # test_data.py).
    assert torch.equal(make_shapes(4, 32)[0], make_shapes(4, 32, scene="single")[0])
    with pytest.raises(ValueError, match=r"scene must be one of \['single', 'pair'\], got 'pairs'"):
        make_shapes(2, 32, scene="pairs")


def test_shapes_pair_is_a_builtin_data_set():
    ds = load_dataset("shapes-pair", "val", num_samples=6, img_size=40, seed=3, return_mask=True)
    assert isinstance(ds, ShapesDataset) and ds.scene == "pair" and ds.classes == list(SHAPE_CLASSES)
    images, labels, masks = make_shapes(6, 40, seed=3, split="val", scene="pair")
    assert torch.equal(ds.images, images) and torch.equal(ds.masks, masks)
    assert "scene='pair'" in repr(ds)


# --- the preset -------------------------------------------------------------------------------------------


def test_classroom_preset_has_legible_grids():
    model = hvit.create_model("hvit_classroom").eval()
    assert model.config.img_size == 96 and model.num_classes == len(SHAPE_CLASSES)
    with torch.no_grad():
        maps = extract_attention(model, torch.zeros(1, 3, 96, 96))
    records = [maps.layer(stage, 0)[0] for stage in range(maps.num_stages)]
    assert [tuple(r.query_grid) for r in records] == [(24, 24), (12, 12), (6, 6), (3, 3)]
    assert [tuple(r.key_grid) for r in records] == [(6, 6), (6, 6), (6, 6), (3, 3)]
    assert [r.probs.shape[-2:] for r in records] == [(576, 36), (144, 36), (36, 36), (9, 9)]


# --- the shipped file -------------------------------------------------------------------------------------


def test_shipped_classroom_model_loads_with_its_preprocessing_and_data():
    model = hvit.load_checkpoint(CLASSROOM_CHECKPOINT)
    assert CLASSROOM_CHECKPOINT.stat().st_size < 25 * 2**20
    assert model.preprocessing.img_size == model.config.img_size == 96
    assert model.preprocessing.class_names == list(SHAPE_CLASSES) and model.num_classes == 6
    assert model.variant == "hvit_classroom"
    assert read_checkpoint(CLASSROOM_CHECKPOINT).extra["dataset"] == "shapes-pair"


def test_model_card_quotes_the_command_that_trained_the_classroom_model():
    cli = read_checkpoint(CLASSROOM_CHECKPOINT).extra["cli"]
    card = (CLASSROOM_CHECKPOINT.parent / "MODEL_CARD_classroom.md").read_text()
    assert f"--model {cli['model']} --dataset {cli['dataset']} --epochs {cli['epochs']}" in card
    assert f"--train-size {cli['train_size']}" in card and f"--lr {cli['lr']}" in card


def test_evaluation_draws_the_data_each_checkpoint_was_trained_on():
    from hvit.explain.evaluate import _trained_on

    assert _trained_on(str(CLASSROOM_CHECKPOINT)) == "shapes-pair"
    assert _trained_on(str(CLASSROOM_CHECKPOINT.parent / "hvit_shapes.safetensors")) == "shapes"
