"""What an input image must go through before the model sees it.

Preprocessing travels with the weights (it is saved in every checkpoint), so the apps never hard-code
an input size or a normalisation: they ask the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

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
    from hvit.data.shapes import SHAPE_CLASSES  # lazily: hvit.data imports this module

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


@dataclass
class Preprocessing:
    """Input contract of a model.

    Args:
        img_size: side of the square image the model was built for, in pixels.
        mean: per-channel mean subtracted after scaling pixels to [0, 1].
        std: per-channel standard deviation divided by after the mean.
        interpolation: resize interpolation ("bilinear" or "bicubic").
        class_names: one readable name per output class, or None when unknown.
        domain: the data the model learned, as a short name: ``"shapes"``, ``"imagenet-1k"``,
            ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, or any other short string for a data set
            of your own. Stored in checkpoints as a plain JSON string. ``None`` (the default) is filled
            from the class names by `infer_domain` and stays ``None`` when they name no known data
            set. `hvit.demo.domain` turns it into the words the apps show.
    """

    img_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    class_names: list[str] | None = field(default=None)
    domain: str | None = None

    def __post_init__(self) -> None:
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        if isinstance(self.img_size, bool) or not isinstance(self.img_size, int) or self.img_size < 1:
            raise ValueError(f"img_size must be a positive int, got {self.img_size!r}")
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"mean and std must have the same length, got {len(self.mean)} and {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if self.interpolation not in ("bilinear", "bicubic", "nearest"):
            raise ValueError(
                f"interpolation must be 'bilinear', 'bicubic' or 'nearest', got {self.interpolation!r}"
            )
        if self.class_names is not None:
            self.class_names = [str(c) for c in self.class_names]
        if self.domain is None:
            self.domain = infer_domain(self.class_names)
        elif not isinstance(self.domain, str) or not self.domain.strip():
            raise ValueError(
                f"domain must be a short non-empty string such as 'shapes' or 'imagenet-1k', got {self.domain!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, as stored in checkpoints."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``.

        Files written before ``domain`` existed have no such key: their domain is inferred from the
        class names (`infer_domain`).
        """
        unknown = set(d) - {"img_size", "mean", "std", "interpolation", "class_names", "domain"}
        if unknown:
            raise ValueError(f"unknown preprocessing fields {sorted(unknown)}")
        return cls(**d)
