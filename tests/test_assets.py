"""The shipped models and sample images are package data: found however hvit is installed, from anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hvit.assets
from hvit.assets import (
    DEFAULT_MODEL,
    SAMPLE_GROUPS,
    SHAPES_MODEL,
    asset_path,
    sample_images,
    shipped_checkpoint,
    shipped_models,
)

ROOT = Path(__file__).resolve().parents[1]
CARDS = {"hvit_classroom": "MODEL_CARD_classroom.md", "hvit_shapes": "MODEL_CARD.md"}


def test_the_shipped_models_and_their_cards_are_inside_the_package():
    # The apps' default is the 96 px classroom model; the 32 px shapes model ships beside it.
    assert (DEFAULT_MODEL, SHAPES_MODEL) == ("hvit_classroom", "hvit_shapes")
    path = shipped_checkpoint()
    assert path == hvit.assets.ROOT / "hvit_classroom.safetensors" and path.is_file()
    assert shipped_checkpoint(SHAPES_MODEL) == hvit.assets.ROOT / "hvit_shapes.safetensors"
    assert path.parent == Path(hvit.__file__).parent / "assets"
    assert shipped_models() == ["hvit_classroom", "hvit_shapes"]  # the default first
    for card in ("MODEL_CARD.md", "MODEL_CARD_classroom.md", "photos/ATTRIBUTION.md"):
        assert asset_path(*card.split("/")).is_file()


def test_an_unknown_or_missing_model_says_what_exists_and_how_to_get_it(monkeypatch, tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"no shipped model named 'nope' .*shipped models: hvit_classroom, hvit_shapes",
    ):
        shipped_checkpoint("nope")
    cards = {name: asset_path(card).read_text() for name, card in CARDS.items()}
    monkeypatch.setattr(hvit.assets, "ROOT", tmp_path)  # an install without the model files
    for name, card in cards.items():
        with pytest.raises(FileNotFoundError) as info:
            shipped_checkpoint(name)
        message = str(info.value)
        assert (
            str(tmp_path / f"{name}.safetensors") in message and "re-clone the repository or train" in message
        )
        command = message.split("`")[1].split(" --output")[0]
        assert command in card  # the card's command, word for word


def test_sample_images_list_shapes_first_then_photos_without_masks():
    samples = sample_images()
    groups = [p.relative_to(hvit.assets.ROOT).parts[0] for p in samples]
    assert groups == sorted(groups, key=SAMPLE_GROUPS.index)  # every shape scene before every photo
    assert SAMPLE_GROUPS == ("shapes_pair_samples", "shapes_samples", "photos")
    assert groups[0] == "shapes_pair_samples" and "photos" in groups
    assert not any("mask" in part for p in samples for part in p.relative_to(hvit.assets.ROOT).parts)
    assert sample_images("photos") == [p for p in samples if p.parent.name == "photos"]
    assert len(sample_images("shapes_samples")) == len(sample_images("shapes_pair_samples")) == 12
    with pytest.raises(
        ValueError,
        match="unknown sample group 'cats'; use one of shapes_pair_samples, shapes_samples, photos",
    ):
        sample_images("cats")


def test_the_shapes_pair_samples_are_96_px_scenes_with_a_mask_and_a_label_each():
    from hvit import demo
    from hvit.data import SHAPE_CLASSES, render_shape

    pairs = sample_images("shapes_pair_samples")
    assert sorted({demo.sample_label(p) for p in pairs}) == list(SHAPE_CLASSES)  # two of each class
    for path in pairs:
        image, mask = demo.load_image(path), demo.sample_mask(path)
        assert image.size == (96, 96) and mask is not None and mask.shape == (96, 96)
        # the large labelled shape only: 5-40 % of the image, never the decoy as well
        assert 0.05 < mask.mean() < 0.4
    # exactly the scenes the README's command writes: test image i of seed 2024, pair scene
    first = pairs[0]
    index = int(first.stem.split("_")[1])
    pixels, label, truth = render_shape(index, 96, seed=2024, split="test", scene="pair")
    assert SHAPE_CLASSES[label] == demo.sample_label(first)
    assert (truth == demo.sample_mask(first)).mean() > 0.99


def test_the_classroom_lists_the_shape_scenes_first(monkeypatch):
    # The sample picker's order (app/common.py); its default is the first entry.
    monkeypatch.syspath_prepend(str(ROOT / "app"))
    import common

    paths = common.sample_paths()
    assert paths == sample_images()
    first_photo = next(i for i, p in enumerate(paths) if p.parent.name == "photos")
    assert first_photo == len(sample_images("shapes_samples")) + len(sample_images("shapes_pair_samples")) > 0
    assert all(p.parent.parent.name == "test" for p in paths[:first_photo])  # shapes*_samples/test/<class>/


@pytest.mark.slow
def test_a_non_editable_install_finds_its_assets_from_any_folder(tmp_path):
    """`pip install .` (not editable), then the library and `python -m hvit.explain.evaluate` elsewhere."""
    source, target, elsewhere = tmp_path / "src", tmp_path / "site", tmp_path / "elsewhere"
    source.mkdir()
    elsewhere.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(ROOT / "hvit", source / "hvit", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            target,
            source,
        ],
        check=True,
        capture_output=True,
    )
    shipped = {
        p.relative_to(ROOT / "hvit").as_posix() for p in (ROOT / "hvit" / "assets").rglob("*") if p.is_file()
    }
    shipped = {p for p in shipped if "__pycache__" not in p}
    installed = {
        p.relative_to(target / "hvit").as_posix()
        for p in (target / "hvit" / "assets").rglob("*")
        if p.is_file()
    }
    assert shipped - installed == set()  # the model, its card, the photos, the shapes and their masks
    assert {"assets/hvit_shapes.safetensors", "assets/hvit_classroom.safetensors"} <= shipped
    assert any(p.startswith("assets/shapes_pair_samples/test_masks/") for p in shipped)

    # Only the installed copy and the environment's own packages: no repository anywhere on the path.
    env = {"PYTHONPATH": str(target), "HOME": os.environ.get("HOME", str(tmp_path)), "HF_HUB_OFFLINE": "1"}
    script = (
        "import json, hvit, hvit.assets as a, hvit.demo as d\n"
        "model = hvit.load_checkpoint(a.shipped_checkpoint())\n"
        "print(json.dumps({'hvit': hvit.__file__, 'checkpoint': str(a.shipped_checkpoint()),"
        " 'classes': model.preprocessing.class_names, 'samples': [str(p) for p in d.sample_images()]}))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert Path(found["hvit"]).is_relative_to(target)
    assert Path(found["checkpoint"]) == target / "hvit" / "assets" / "hvit_classroom.safetensors"
    assert found["classes"] == ["circle", "cross", "ring", "square", "star", "triangle"]
    assert len(found["samples"]) == len(sample_images()) and all(
        Path(p).is_relative_to(target) for p in found["samples"]
    )

    cli = [sys.executable, "-m", "hvit.explain.evaluate", "--num-images", "2", "--methods", "saliency"]
    run = subprocess.run(
        [*cli, "--no-randomization", "--threads", "1"], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert f"Model: {target / 'hvit' / 'assets' / 'hvit_shapes.safetensors'}" in run.stdout
