"""What a model knows, in words, and whether an image is one it can answer for.

Every model carries its domain (`hvit.Preprocessing.domain`: the data it learned). Both apps show it
next to the prediction, open on a sample from that domain, and say plainly when an image lies outside
it: the shapes model shown a photo still picks one of its six shapes, and that answer means nothing.

Images are classified by where they come from, not by their pixels: a shipped sample is a "shapes"
image, a "shapes-pair" scene or a "photo" by its folder, an image of a generated set is of that set's
kind, and an upload is unknown (the note then says what the model knows and lets the user judge).
The two generated sets are each other's near neighbours: the one-shape model shown a pair scene (or the
classroom model shown one shape) is outside what it learned, and its answer is unreliable there
(measured on 60 images: 73 % and 62 % right, against 97 % and 100 % on their own kind).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hvit.data.domains import infer_domain
from hvit.model import HierarchialViT

SHAPES_IMAGE = "shapes"
SHAPES_PAIR_IMAGE = "shapes-pair"
PHOTO = "photo"


@dataclass(frozen=True)
class _Known:
    title: str
    what: str  # what its images show, as a phrase
    kinds: tuple[str, ...]  # image kinds inside the domain
    near: tuple[str, ...] = ()  # kinds outside it that look alike: the answer is unreliable, not meaningless


_KNOWN: dict[str, _Known] = {
    "shapes": _Known("the shapes data set", "synthetic pictures of one coloured shape on a cluttered background", (SHAPES_IMAGE,), (SHAPES_PAIR_IMAGE,)),
    "shapes-pair": _Known(
        "the shapes-pair data set",
        "synthetic pictures of a large coloured shape (the answer) and a small decoy of another class "
        "on a cluttered background",
        (SHAPES_PAIR_IMAGE,),
        (SHAPES_IMAGE,),
    ),
    "imagenet-1k": _Known("ImageNet-1k", "photographs of 1,000 kinds of objects and animals", (PHOTO,)),
    "cifar10": _Known("CIFAR-10", "tiny photographs of vehicles and animals", (PHOTO,)),
    "mnist": _Known("MNIST", "handwritten digits, white on black", ()),
    "fashion-mnist": _Known("Fashion-MNIST", "small grey pictures of clothes and shoes", ()),
}  # fmt: skip


@dataclass(frozen=True)
class Domain:
    """The data a model learned, described for people.

    Attributes:
        name: `Preprocessing.domain` ("shapes", "imagenet-1k", ...), or None when unknown.
        title: the data set's name ("the shapes data set", "ImageNet-1k", "your own images").
        what: what its images show.
        class_names: the model's classes (empty when it has none).
        img_size: the model's input side in pixels.
        image_kinds: the image kinds (`SHAPES_IMAGE`, `SHAPES_PAIR_IMAGE`, `PHOTO`) that belong to
            the domain.
        near_kinds: kinds outside the domain that look like it (the other generated shapes set): the
            answer there is unreliable rather than meaningless.
    """

    name: str | None
    title: str
    what: str
    class_names: tuple[str, ...]
    img_size: int
    image_kinds: tuple[str, ...]
    near_kinds: tuple[str, ...] = ()

    @property
    def shapes_scene(self) -> str:
        """The scene of the generated shapes set closest to this domain ("pair" for shapes-pair, else
        "single"), for drawing an image of the set at the model's input size."""
        return "pair" if SHAPES_PAIR_IMAGE in self.image_kinds else "single"

    @property
    def knows_its_classes(self) -> bool:
        return bool(self.class_names)

    def classes_text(self, limit: int = 8) -> str:
        """ "6 classes: circle, cross, ..." (the first ``limit`` names)."""
        if not self.class_names:
            return "no class names"
        shown = ", ".join(self.class_names[:limit])
        more = f" and {len(self.class_names) - limit:,} more" if len(self.class_names) > limit else ""
        return f"{len(self.class_names):,} classes: {shown}{more}"

    def summary(self) -> str:
        """One line for next to a prediction: what the model learned, its classes, its input size."""
        if not self.knows_its_classes:
            return (
                f"This model has no class names and no known training data (a preset with random weights, "
                f"or a checkpoint without them) · input {self.img_size}x{self.img_size} px"
            )
        return (
            f"Learned from {self.title}: {self.what} · {self.classes_text()} · "
            f"input {self.img_size}x{self.img_size} px"
        )


def model_domain(model: HierarchialViT) -> Domain:
    """The `Domain` of a model, from its preprocessing (domain name, class names, input size)."""
    pre = model.preprocessing
    classes = tuple(pre.class_names or ())
    name = pre.domain or infer_domain(pre.class_names)  # e.g. a preset's names, or an older file
    known = _KNOWN.get(name or "")
    if known is not None:
        return Domain(name, known.title, known.what, classes, pre.img_size, known.kinds, known.near)
    if name:  # a data set of the user's own, named when it was trained
        return Domain(name, name, "images of its own data set", classes, pre.img_size, ())
    what = "images of its own data set" if classes else "nothing known"
    return Domain(None, "its own images" if classes else "unknown data", what, classes, pre.img_size, ())


def image_kind(source: str | Path) -> str | None:
    """The kind of a shipped or generated image: `SHAPES_IMAGE`, `PHOTO`, or None when unknown.

    Args:
        source: a sample's path (its folders say what it is: ``photos/``, ``shapes_pair_samples/`` or
            ``shapes_samples/``), or ``"shapes"`` / ``"shapes-pair"`` for an image of that generated
            set. Anything else (an upload) is unknown.
    """
    if str(source) in (SHAPES_IMAGE, SHAPES_PAIR_IMAGE):
        return str(source)
    parts = [p.lower() for p in Path(source).parts[:-1]]
    if any("photo" in p for p in parts):
        return PHOTO
    if any("shapes" in p and "pair" in p for p in parts):
        return SHAPES_PAIR_IMAGE
    if any("shapes" in p for p in parts):
        return SHAPES_IMAGE
    return None


@dataclass(frozen=True)
class DomainNote:
    """A note to show beside a prediction.

    Attributes:
        level: "warning" (the image is outside the model's domain: the answer means nothing) or "info"
            (the app cannot tell: the note says what the model knows).
        text: the note, one or two sentences.
    """

    level: str
    text: str


# An image of each kind, as the subject of a sentence ("A photograph is outside what ...").
_KIND_WORDS = {
    SHAPES_IMAGE: "a picture of one drawn shape",
    SHAPES_PAIR_IMAGE: "a scene of two drawn shapes",
    PHOTO: "a photograph",
}


def domain_note(domain: Domain, kind: str | None) -> DomainNote | None:
    """What to say beside the prediction for an image of ``kind`` (see `image_kind`).

    Returns:
        A warning when the image is outside the model's domain (or the model has no classes at all):
        the answer means nothing, or, for a near kind (the other generated shapes set), is unreliable;
        an info note when the image's kind is unknown and the model's domain is a known data set, and
        None when the image belongs to the domain or the domain is the user's own (nothing to judge by).
    """
    if not domain.knows_its_classes:
        return DomainNote(
            "warning",
            "This model has no class names and was not trained on a known data set, so its answer means "
            "nothing. Choose a trained model.",
        )
    if domain.name not in _KNOWN:  # a data set of the user's own: the app cannot judge its images
        return None
    knows = f"only knows {domain.what} ({domain.classes_text(6)})"
    if kind is None:
        return DomainNote(
            "info", f"This model {knows}. If this image is not one of those, its answer means nothing."
        )
    if kind in domain.image_kinds:
        return None
    image = _KIND_WORDS.get(kind, "this image")
    outside = f"{image[0].upper()}{image[1:]} is outside what this model learned: it {knows}."
    if kind in domain.near_kinds:
        return DomainNote(
            "warning",
            f"{outside} Its answer here is unreliable: choose a sample of its own kind to see it at its best.",
        )
    return DomainNote(
        "warning", f"{outside} It still picks one of its classes, so the answer means nothing here."
    )


def samples_for(domain: Domain, samples: Sequence[Path]) -> list[Path]:
    """``samples`` with the model's own domain first (shapes-pair scenes for the classroom model, single
    shapes for the shapes model, photos for an ImageNet model), then the kinds near it, then the rest,
    each group in its original order. The first is the default image."""
    order = {kind: rank for rank, kind in enumerate(domain.image_kinds + domain.near_kinds)}
    return sorted(samples, key=lambda p: order.get(image_kind(p), len(order)))  # stable: keeps the order
