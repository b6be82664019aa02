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

from hvit.data.classic import CLASSIC_DATASETS, default_data_dir, load_classic
from hvit.data.dataset import HViTDataset
from hvit.data.domains import infer_domain
from hvit.data.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    IMG_EXTENSIONS,
    ImageReadError,
    load_image,
)
from hvit.data.load import BUILTIN_DATASETS, SHAPES_SIZES, dataset_stats, load_dataset
from hvit.data.shapes import (
    SHAPE_CLASSES,
    SHAPE_SCENES,
    SHAPES_MEAN,
    SHAPES_STD,
    ShapesDataset,
    make_shapes,
    render_shape,
    write_shapes,
)
from hvit.data.transforms import AUGMENTATIONS, build_transforms, estimate_mean_std

__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "BUILTIN_DATASETS",
    "CLASSIC_DATASETS",
    "IMG_EXTENSIONS",
    "SHAPES_MEAN",
    "SHAPES_SIZES",
    "SHAPES_STD",
    "SHAPE_CLASSES",
    "SHAPE_SCENES",
    "HViTDataset",
    "infer_domain",
    "ImageReadError",
    "ShapesDataset",
    "build_transforms",
    "dataset_stats",
    "default_data_dir",
    "estimate_mean_std",
    "load_classic",
    "load_dataset",
    "load_image",
    "make_shapes",
    "render_shape",
    "write_shapes",
]
