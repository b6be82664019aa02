"""A model knows its domain: stored with the weights, inferred for old checkpoints, shown in words, and
an image from outside it gets a note that the answer means nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import hvit
from hvit import demo
from hvit.assets import SHAPES_MODEL
from hvit.data import SHAPE_CLASSES, infer_domain
from hvit.preprocessing import Preprocessing
from hvit.train.checkpoint import stored_preprocessing

PHOTO = Path("hvit/assets/photos/astronaut.jpg")
SHAPE = Path("hvit/assets/shapes_samples/test/star/test_00004.png")
PAIR = Path("hvit/assets/shapes_pair_samples/test/star/test_00004.png")


def test_domain_is_inferred_from_class_names_for_old_checkpoints():
    assert infer_domain(list(SHAPE_CLASSES)) == "shapes"
    assert infer_domain(["circle", "star"]) == "shapes"  # a subset of the shapes, in order
    assert infer_domain(["cat", "dog"]) is None
    assert infer_domain([f"n{i}" for i in range(1000)]) == "imagenet-1k"
    assert infer_domain(None) is None
    old = {
        "img_size": 32,
        "mean": [0.5] * 3,
        "std": [0.2] * 3,
        "interpolation": "bilinear",
        "class_names": list(SHAPE_CLASSES),
    }
    assert Preprocessing.from_dict(old).domain is None  # the core keeps what the file says...
    assert stored_preprocessing(old).domain == "shapes"  # ...and loading recognises an older file
    # the generated sets share class names: the data set the checkpoint records tells them apart
    assert stored_preprocessing(old, "shapes-pair").domain == "shapes-pair"
    assert stored_preprocessing(old, "shapes").domain == "shapes"
    assert stored_preprocessing(old, "my_folder").domain == "shapes"  # not a generated set: names decide
    assert stored_preprocessing({**old, "domain": "fruit"}, "shapes-pair").domain == "fruit"  # stored wins
    with pytest.raises(ValueError, match="domain must be a short non-empty string"):
        Preprocessing(domain="  ")


def test_domain_travels_in_the_checkpoint(tmp_path):
    model = hvit.create_model("hvit_nano", num_classes=2)
    model.preprocessing = Preprocessing(img_size=32, class_names=["apple", "pear"], domain="fruit")
    path = hvit.save_checkpoint(tmp_path / "m.safetensors", model)
    loaded = hvit.load_checkpoint(path)
    assert loaded.preprocessing.domain == "fruit"
    assert json.loads(json.dumps(loaded.preprocessing.to_dict()))["domain"] == "fruit"  # plain JSON


def test_shapes_model_warns_about_a_photo_and_not_about_a_shape():
    model = demo.load_shipped_model(SHAPES_MODEL)
    domain = demo.model_domain(model)
    assert domain.name == "shapes" and domain.img_size == model.preprocessing.img_size == 32
    assert "6 classes: circle, cross, ring, square, star, triangle" in domain.summary()
    assert f"input {domain.img_size}x{domain.img_size} px" in domain.summary()
    assert demo.image_kind(PHOTO) == demo.PHOTO and demo.image_kind(SHAPE) == demo.SHAPES_IMAGE
    note = demo.domain_note(domain, demo.image_kind(PHOTO))
    assert (
        note.level == "warning"
        and "means nothing" in note.text
        and note.text.startswith("A photograph is outside")
    )
    assert demo.domain_note(domain, demo.image_kind(SHAPE)) is None
    assert demo.domain_note(domain, demo.SHAPES_IMAGE) is None  # the generated shapes set
    upload = demo.domain_note(domain, None)
    assert upload.level == "info" and upload.text.startswith("This model only knows")
    near = demo.domain_note(domain, demo.image_kind(PAIR))  # a pair scene: near, but not what it learned
    assert near.level == "warning"
    assert near.text.startswith(
        "A scene of two drawn shapes is outside what this model learned: it only knows"
    )
    assert "Its answer here is unreliable" in near.text
    assert domain.shapes_scene == "single"


def test_the_default_classroom_model_knows_pair_scenes():
    model = demo.load_shipped_model()  # the default: hvit_classroom, trained on shapes-pair
    domain = demo.model_domain(model)
    assert domain.name == "shapes-pair" and domain.img_size == 96 and domain.shapes_scene == "pair"
    assert domain.summary().startswith("Learned from the shapes-pair data set: synthetic pictures of a large")
    assert demo.image_kind(PAIR) == demo.SHAPES_PAIR_IMAGE and demo.image_kind("shapes-pair") == "shapes-pair"
    assert demo.domain_note(domain, demo.image_kind(PAIR)) is None
    single = demo.domain_note(domain, demo.image_kind(SHAPE))
    assert single.level == "warning" and "Its answer here is unreliable" in single.text
    photo = demo.domain_note(domain, demo.image_kind(PHOTO))
    assert photo.level == "warning" and photo.text == (
        "A photograph is outside what this model learned: it only knows synthetic pictures of a large "
        "coloured shape (the answer) and a small decoy of another class on a cluttered background "
        "(6 classes: circle, cross, ring, square, star, triangle). It still picks one of its classes, so "
        "the answer means nothing here."
    )
    # its default image is a pair scene, then the one-shape images, then the photographs
    ordered = demo.samples_for(domain, [PHOTO, SHAPE, PAIR])
    assert ordered == [PAIR, SHAPE, PHOTO]
    first = demo.samples_for(domain, demo.sample_images())[0]
    assert demo.image_kind(first) == demo.SHAPES_PAIR_IMAGE
    assert demo.sample_mask(first) is not None and demo.sample_label(first) == first.parent.name


def test_default_sample_comes_from_the_models_own_domain():
    samples = [PHOTO, Path("hvit/assets/photos/coffee.jpg"), SHAPE]
    shapes_model = demo.model_domain(demo.load_shipped_model(SHAPES_MODEL))
    assert demo.samples_for(shapes_model, samples)[0] == SHAPE
    imagenet = hvit.create_model("hvit_nano", num_classes=1000)
    imagenet.preprocessing = Preprocessing(img_size=224, class_names=[f"c{i}" for i in range(1000)])
    photos_first = demo.samples_for(demo.model_domain(imagenet), samples)
    assert photos_first[:2] == samples[:2] and photos_first[2] == SHAPE
    shape_note = demo.domain_note(demo.model_domain(imagenet), demo.SHAPES_IMAGE)
    assert shape_note.level == "warning"
    assert shape_note.text.startswith(
        "A picture of one drawn shape is outside what this model learned: it only"
    )
    assert "(1,000 classes: c0, c1, c2, c3, c4, c5 and 994 more)." in shape_note.text  # no nested brackets
    assert "c0, c1, c2, c3, c4, c5, c6, c7 and 992 more" in demo.model_domain(imagenet).summary()
    assert demo.domain_note(demo.model_domain(imagenet), demo.PHOTO) is None


def test_every_note_reads_as_sentences():
    """No capital after a colon ("learned: This model"), and every sentence starts with a capital."""
    imagenet = hvit.create_model("hvit_nano", num_classes=1000)
    imagenet.preprocessing = Preprocessing(img_size=224, class_names=[f"c{i}" for i in range(1000)])
    models = [demo.load_shipped_model(), demo.load_shipped_model(SHAPES_MODEL), imagenet]
    kinds = (None, demo.SHAPES_IMAGE, demo.SHAPES_PAIR_IMAGE, demo.PHOTO)
    notes = [demo.domain_note(demo.model_domain(m), k) for m in models for k in kinds]
    texts = [n.text for n in notes if n is not None]
    assert len(texts) == 9  # per model: unknown, and the two kinds outside its domain
    for text in texts:
        assert not re.search(r": [A-Z]", text), text
        assert all(s[0].isupper() for s in re.split(r"(?<=\.) ", text)), text
        assert text.endswith(".") and "  " not in text and ".." not in text, text


def test_a_model_without_classes_says_its_answer_means_nothing():
    torch.manual_seed(0)
    domain = demo.model_domain(hvit.create_model("hvit_micro", img_size=96))
    assert domain.name is None and not domain.knows_its_classes and "96x96" in domain.summary()
    note = demo.domain_note(domain, demo.SHAPES_IMAGE)
    assert note.level == "warning" and "means nothing" in note.text
    assert "sidebar" not in note.text  # shown by the Gradio demo too, which has none
    own = hvit.create_model("hvit_nano", num_classes=2)
    own.preprocessing = Preprocessing(img_size=32, class_names=["apple", "pear"], domain="fruit")
    assert demo.domain_note(demo.model_domain(own), demo.PHOTO) is None  # nothing to judge by
