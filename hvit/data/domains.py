"""The data set a model learned (its *domain*), recognised from its class names.

Checkpoints written before `hvit.Preprocessing.domain` existed do not name their data; the class names
of the data sets hvit knows identify it. This lives with the data sets (not in `hvit.preprocessing`,
the core) because it needs their class names.
"""

from __future__ import annotations

from hvit.data.shapes import SHAPE_CLASSES

# Class names of the data sets hvit knows by name, to recognise the domain of a checkpoint written
# before `Preprocessing.domain` existed (torchvision's names for MNIST, Fashion-MNIST and CIFAR-10).
_KNOWN_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(f"{i} - {w}" for i, w in enumerate(
        ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    )),
    "fashion-mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
        "Ankle boot",
    ),
    "cifar10": (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    ),
}  # fmt: skip
IMAGENET_NUM_CLASSES = 1000


def infer_domain(class_names: list[str] | None) -> str | None:
    """The domain of a model from its class names, for checkpoints that do not store one.

    Args:
        class_names: the model's class names, or None.

    Returns:
        ``"shapes"`` (two or more of the shapes set's classes, in its order), ``"mnist"``,
        ``"fashion-mnist"``, ``"cifar10"``, ``"imagenet-1k"`` (1,000 classes), or None when the
        names do not identify a known data set.
    """
    if not class_names:
        return None
    names = tuple(class_names)
    if len(names) >= 2 and set(names) <= set(SHAPE_CLASSES) and list(names) == sorted(names):
        return "shapes"
    for domain, known in _KNOWN_CLASS_NAMES.items():
        if names == known:
            return domain
    if len(names) == IMAGENET_NUM_CLASSES:
        return "imagenet-1k"
    return None
