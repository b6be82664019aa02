"""What both apps share and that is not UI, one module per part of the apps.

The Streamlit pages and the Gradio demo are thin layers over these functions, so they behave the same
and every rule (which model is the default, which images and zips are accepted) is written once:

- `hvit.demo.inputs`: the model choices and the shipped model, checked image input, prediction, and
  sample images with a known answer.
- `hvit.demo.domain`: what a model learned, in words, and the note shown when an image lies outside it.
- `hvit.demo.architecture`: the architecture explorer's figures (attention cost, the token pyramid).
- `hvit.demo.zip_upload`: a user's data set uploaded as a zip, checked and unpacked safely.
- `hvit.demo.live_training`: a trainer in a background thread, its curves and confusion matrix.
- `hvit.demo.training_queue`: one queue of training runs for the whole server, within a budget.
- `hvit.demo.inspection`: attention and attribution views, scores against a mask, sanity checks.

Everything public is also importable from ``hvit.demo`` itself.
"""

from __future__ import annotations

from hvit.demo.architecture import (
    ATTENTION_KINDS,
    attention_cost,
    attention_cost_figure,
    patch_grid_figure,
    pyramid_figure,
)
from hvit.demo.domain import (
    PHOTO,
    SHAPES_IMAGE,
    SHAPES_PAIR_IMAGE,
    Domain,
    DomainNote,
    domain_note,
    image_kind,
    model_domain,
    samples_for,
)
from hvit.demo.inputs import (
    IMAGE_SUFFIXES,
    IMAGENET,
    MAX_IMAGE_SIDE,
    MAX_UPLOAD_BYTES,
    SHIPPED,
    SHIPPED_MODELS,
    SHIPPED_SHAPES,
    ImageInputError,
    Prediction,
    enlarge,
    load_image,
    load_model_choice,
    load_shipped_model,
    model_choices,
    predict,
    preprocess,
    sample_images,
    sample_label,
    sample_mask,
    shapes_example,
    shipped_checkpoint,
)
from hvit.demo.inspection import (
    key_grid_figure,
    map_scores,
    mask_at,
    prediction_figure,
    query_figure,
    randomisation_check,
)
from hvit.demo.live_training import (
    TRAINING_PRESETS,
    LiveTraining,
    TrainingRequest,
    confusion_figure,
    snapshot_figure,
    training_curves_figure,
)
from hvit.demo.training_queue import TrainingQueue, TrainingQueueFull, training_queue
from hvit.demo.zip_upload import (
    MAX_COMPRESSION_RATIO,
    MAX_UNZIPPED_BYTES,
    MAX_ZIP_BYTES,
    MAX_ZIP_FILES,
    DatasetZipError,
    UnpackedDataset,
    extract_dataset_zip,
    folder_classes,
    unpack_dataset_zip,
)

__all__ = [
    "ATTENTION_KINDS",
    "DatasetZipError",
    "Domain",
    "DomainNote",
    "IMAGENET",
    "IMAGE_SUFFIXES",
    "ImageInputError",
    "LiveTraining",
    "MAX_COMPRESSION_RATIO",
    "MAX_IMAGE_SIDE",
    "MAX_UNZIPPED_BYTES",
    "MAX_UPLOAD_BYTES",
    "MAX_ZIP_BYTES",
    "MAX_ZIP_FILES",
    "PHOTO",
    "Prediction",
    "SHAPES_IMAGE",
    "SHAPES_PAIR_IMAGE",
    "SHIPPED",
    "SHIPPED_MODELS",
    "SHIPPED_SHAPES",
    "TRAINING_PRESETS",
    "TrainingQueue",
    "TrainingQueueFull",
    "TrainingRequest",
    "UnpackedDataset",
    "attention_cost",
    "attention_cost_figure",
    "confusion_figure",
    "domain_note",
    "enlarge",
    "extract_dataset_zip",
    "folder_classes",
    "image_kind",
    "key_grid_figure",
    "load_image",
    "load_model_choice",
    "load_shipped_model",
    "map_scores",
    "mask_at",
    "model_domain",
    "model_choices",
    "patch_grid_figure",
    "predict",
    "prediction_figure",
    "preprocess",
    "pyramid_figure",
    "query_figure",
    "randomisation_check",
    "sample_images",
    "sample_label",
    "sample_mask",
    "samples_for",
    "shapes_example",
    "shipped_checkpoint",
    "snapshot_figure",
    "training_curves_figure",
    "training_queue",
    "unpack_dataset_zip",
]
