"""A model's domain: the data it learned, its classes and its input size, and a note for images outside it.

A classifier answers with one of its classes whatever it is shown. The shapes model shown a photograph
still says "ring (83 %)"; the apps put a note beside such an answer that it means nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from hvit.model import HierarchialViT

# Shapes images are rendered at a model's input size (32-128 px); a photograph or a webcam frame is
# far larger. Above this side an image is taken for a photograph when the model knows only shapes.
SHAPES_MAX_SIDE = 256


@dataclass(frozen=True)
class ModelDomain:
    """What a model knows.

    Attributes:
        kind: "shapes" (the synthetic shapes set), "imagenet" (photographs) or "unknown".
        data: the data it learned, in words.
        class_names: its classes.
        img_size: the side of the square it sees every image resized to.
    """

    kind: str
    data: str
    class_names: tuple[str, ...]
    img_size: int

    def describe(self) -> str:
        """One Markdown sentence: what the model learned, its classes and its input size."""
        names = list(self.class_names)
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} classes)" if len(names) > 8 else "")
        return (
            f"It learned {self.data}; it sees every image resized to {self.img_size}x{self.img_size} "
            f"pixels. Classes: {shown or 'unnamed'}."
        )


def model_domain(model: HierarchialViT) -> ModelDomain:
    """The domain of ``model``, from the class names and input size stored with its weights."""
    from hvit.data import SHAPE_CLASSES

    pre = model.preprocessing
    names = tuple(pre.class_names or (f"class {i}" for i in range(model.config.num_classes)))
    if pre.class_names and set(pre.class_names) <= set(SHAPE_CLASSES):
        kind, data = "shapes", "synthetic coloured shapes on cluttered backgrounds"
    elif model.config.num_classes == 1000:
        kind, data = "imagenet", "ImageNet photographs"
    else:
        kind, data = "unknown", "an unnamed data set (or nothing: random weights)"
    return ModelDomain(kind, data, names, pre.img_size)


def out_of_domain_note(model: HierarchialViT, image: Image.Image) -> str | None:
    """A warning to show beside the prediction when ``image`` is not the kind of image ``model`` learned.

    Returns:
        ``None`` for an image of the model's domain (or when that cannot be told), else one sentence.
    """
    domain = model_domain(model)
    if domain.kind == "shapes" and max(image.size) > SHAPES_MAX_SIDE:
        return (
            "**This looks like a photograph, and this model only knows "
            f"{len(domain.class_names)} shapes ({', '.join(domain.class_names)}).** "
            "It must answer with one of them, so here its answer means nothing. Try a shapes example, "
            "or the ImageNet model for photographs."
        )
    return None
