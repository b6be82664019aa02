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
from hvit.assets import SAMPLE_GROUPS, asset_path, sample_images, shipped_checkpoint, shipped_models

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_model_and_its_card_are_inside_the_package():
    path = shipped_checkpoint()
    assert path == hvit.assets.ROOT / "hvit_shapes.safetensors" and path.is_file()
    assert path.parent == Path(hvit.__file__).parent / "assets"
    assert shipped_models()[0] == "hvit_shapes" and "hvit_shapes" in shipped_models()
    assert asset_path("MODEL_CARD.md").is_file() and asset_path("photos", "ATTRIBUTION.md").is_file()


def test_an_unknown_or_missing_model_says_what_exists_and_how_to_get_it(monkeypatch, tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"no shipped model named 'nope' .*shipped models: hvit_shapes"
    ):
        shipped_checkpoint("nope")
    card = asset_path("MODEL_CARD.md").read_text()
    monkeypatch.setattr(hvit.assets, "ROOT", tmp_path)  # an install without the model file
    with pytest.raises(FileNotFoundError) as info:
        shipped_checkpoint()
    message = str(info.value)
    assert (
        str(tmp_path / "hvit_shapes.safetensors") in message and "re-clone the repository or train" in message
    )
    command = message.split("`")[1].split(" --output")[0]
    assert command in card  # the card's command, word for word


def test_sample_images_list_shapes_first_then_photos_without_masks():
    samples = sample_images()
    groups = [p.relative_to(hvit.assets.ROOT).parts[0] for p in samples]
    assert groups == sorted(groups, key=SAMPLE_GROUPS.index)  # every shape before every photo
    assert groups[0] == "shapes_samples" and "photos" in groups
    assert not any("mask" in part for p in samples for part in p.relative_to(hvit.assets.ROOT).parts)
    assert sample_images("photos") == [p for p in samples if p.parent.name == "photos"]
    assert len(sample_images("shapes_samples")) == 12
    with pytest.raises(ValueError, match="unknown sample group 'cats'; use one of shapes_samples, photos"):
        sample_images("cats")


def test_the_classroom_lists_the_shapes_samples_first(monkeypatch):
    # The sample picker's order (app/common.py); its default is the first entry.
    monkeypatch.syspath_prepend(str(ROOT / "app"))
    import common

    paths = common.sample_paths()
    assert paths == sample_images()
    first_photo = next(i for i, p in enumerate(paths) if p.parent.name == "photos")
    assert first_photo == len(sample_images("shapes_samples")) > 0
    assert all(p.parent.parent.name == "test" for p in paths[:first_photo])  # shapes_samples/test/<class>/


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
    assert "assets/hvit_shapes.safetensors" in shipped

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
    assert Path(found["checkpoint"]) == target / "hvit" / "assets" / "hvit_shapes.safetensors"
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
