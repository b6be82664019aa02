"""Data: folders of images, the generated shapes set, the classic torchvision sets, and transforms.

- `load_image`: the one way hvit reads an image (a path, bytes, a PIL image or an array), checked
  before decoding and converted to RGB by one rule; `ImageReadError` says what was wrong.
- `HViTDataset` reads ``root/<split>/<class name>/<image file>``.
- `ShapesDataset` / `make_shapes` / `write_shapes`: a procedural set with ground-truth masks, no internet
  (one shape per image, or ``scene="pair"``: a labelled large shape and a small decoy).
- `load_classic`: MNIST, Fashion-MNIST, CIFAR-10 through torchvision.
- `build_transforms`: a model's `Preprocessing` -> ``torchvision.transforms.v2`` pipeline.
- `load_dataset`: one entry point for all of them.
"""

from __future__ import annotations

from hvit._lazy import lazy_module

# public name -> module that defines it. Imported on first use: the data-set modules import torchvision,
# whose first import takes seconds, and the apps read single images long before they load a data set.
_LAZY: dict[str, str] = {
    "CLASSIC_DATASETS": "hvit.data.classic",
    "default_data_dir": "hvit.data.classic",
    "load_classic": "hvit.data.classic",
    "HViTDataset": "hvit.data.dataset",
    "infer_domain": "hvit.data.domains",
    "DEFAULT_MAX_BYTES": "hvit.data.images",
    "DEFAULT_MAX_PIXELS": "hvit.data.images",
    "DEFAULT_MAX_SIDE": "hvit.data.images",
    "IMG_EXTENSIONS": "hvit.data.images",
    "ImageReadError": "hvit.data.images",
    "load_image": "hvit.data.images",
    "BUILTIN_DATASETS": "hvit.data.load",
    "SHAPES_SIZES": "hvit.data.load",
    "dataset_stats": "hvit.data.load",
    "load_dataset": "hvit.data.load",
    "SHAPE_CLASSES": "hvit.data.shapes",
    "SHAPE_SCENES": "hvit.data.shapes",
    "SHAPES_MEAN": "hvit.data.shapes",
    "SHAPES_STD": "hvit.data.shapes",
    "ShapesDataset": "hvit.data.shapes",
    "make_shapes": "hvit.data.shapes",
    "render_shape": "hvit.data.shapes",
    "write_shapes": "hvit.data.shapes",
    "AUGMENTATIONS": "hvit.data.transforms",
    "build_transforms": "hvit.data.transforms",
    "estimate_mean_std": "hvit.data.transforms",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_module("hvit.data", _LAZY, globals())
