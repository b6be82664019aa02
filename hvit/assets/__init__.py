"""Files shipped inside the package: the trained classroom models, their cards, and sample images.

They are package data (see ``pyproject.toml``), found through `importlib.resources`, so the apps,
``python -m hvit.explain.evaluate`` and ``python -m hvit.bench`` find them however hvit is installed
(editable from a clone, a wheel, ``pip install --target``) and from any working directory.

    hvit_classroom.safetensors  the 96 px classroom model the apps load by default, trained on
                                shapes-pair (card: MODEL_CARD_classroom.md)
    hvit_shapes.safetensors     the fast 32 px shapes model, live training's default (card: MODEL_CARD.md)
    shapes_pair_samples/...     shapes-pair images (HViTDataset layout, masks in test_masks/)
    shapes_samples/test/...     shapes images in the HViTDataset layout, masks in test_masks/
    photos/                     public-domain / CC0 photographs (photos/ATTRIBUTION.md)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = [
    "DEFAULT_MODEL",
    "ROOT",
    "SAMPLE_GROUPS",
    "SHAPES_MODEL",
    "asset_path",
    "sample_images",
    "shipped_checkpoint",
    "shipped_models",
]

# A regular package installed as files (never a zip): its resources are plain paths, which torch,
# safetensors and PIL need.
ROOT: Path = Path(str(resources.files(__name__)))
# The apps' default: the 96 px classroom model, whose attention maps a class can read.
DEFAULT_MODEL = "hvit_classroom"
# The fast 32 px model on the one-shape set: what live training reproduces, and the benchmarks' model.
SHAPES_MODEL = "hvit_shapes"
# Sample-image folders, in the order the apps list them: the default model's shapes-pair scenes, the
# one-shape images (both with ground-truth masks), then photographs.
SAMPLE_GROUPS = ("shapes_pair_samples", "shapes_samples", "photos")
# How each shipped model was trained (the command its model card records), for the missing-file error.
_RECIPES = {
    "hvit_shapes": "python -m hvit.train --model hvit_nano_stem --dataset shapes --epochs 4 --train-size 6000 "
    "--batch-size 64 --lr 0.003 --warmup-epochs 0.6 --augment none",
    "hvit_classroom": "python -m hvit.train --model hvit_classroom --dataset shapes-pair --epochs 4 "
    "--train-size 5000 --val-size 500 --batch-size 32 --lr 0.0015 --warmup-epochs 0.5 --augment none --threads 1",
}


def asset_path(*parts: str) -> Path:
    """Path of a shipped file, e.g. ``asset_path("photos", "chelsea.jpg")`` (it may not exist)."""
    return ROOT.joinpath(*parts)


def shipped_models() -> list[str]:
    """Names of the shipped models (``shipped_checkpoint(name)`` opens each), the default first."""
    names = sorted(p.stem for p in ROOT.glob("*.safetensors"))
    return sorted(names, key=lambda n: n != DEFAULT_MODEL)


def shipped_checkpoint(name: str = DEFAULT_MODEL) -> Path:
    """Path of the shipped model ``name`` (a ``.safetensors`` checkpoint for `hvit.load_checkpoint`).

    Args:
        name: one of `shipped_models()`; default the apps' default, the classroom model.

    Raises:
        FileNotFoundError: the file is missing (e.g. a partial clone), naming where it should be and,
            for a model with a known recipe, the command that trains it again.
    """
    path = asset_path(f"{name}.safetensors")
    if path.is_file():
        return path
    recipe = _RECIPES.get(name)
    if recipe is None:
        raise FileNotFoundError(
            f"no shipped model named {name!r} (no {path}); shipped models: {', '.join(shipped_models()) or 'none'}"
        )
    raise FileNotFoundError(
        f"the shipped model ({path}) is missing; re-clone the repository or train it "
        f"with the command in its model card: `{recipe} --output {path}`"
    )


def sample_images(group: str | None = None) -> list[Path]:
    """Shipped example images in `SAMPLE_GROUPS` order (shapes-pair scenes, one-shape images, then
    photographs), each group sorted by path.

    Args:
        group: only this folder of `SAMPLE_GROUPS`; default all of them.

    Returns:
        Image paths; ground-truth masks (``shapes_samples/test_masks/...``) are not examples.

    Raises:
        ValueError: ``group`` is not one of `SAMPLE_GROUPS`.
    """
    from hvit.data.images import IMG_EXTENSIONS  # the suffixes HViTDataset reads

    if group is not None and group not in SAMPLE_GROUPS:
        raise ValueError(f"unknown sample group {group!r}; use one of {', '.join(SAMPLE_GROUPS)}")
    found: list[Path] = []
    for name in SAMPLE_GROUPS if group is None else (group,):
        folder = ROOT / name
        found += sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in IMG_EXTENSIONS
            and not any("mask" in part.lower() for part in p.relative_to(folder).parts)
        )
    return found
