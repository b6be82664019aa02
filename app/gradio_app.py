"""The quick demo: drop in a photo, see what the model predicts and where each stage of the pyramid looks.

    python app/gradio_app.py    # http://127.0.0.1:7860; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT change it

The same file is the ``app_file`` of the Hugging Face Space (see the README's front matter).

The UI is thin. Every event calls one plain function below (`analyse`, `show_heads`, `show_attribution`,
`describe_model`) that tests call directly, without a server. Those functions check the input, borrow a
model and call `hvit`; the figures come from `hvit.explain.figures`, the builders the Streamlit app
uses too, so both apps draw the same thing.
"""

from __future__ import annotations

import os

# Before Gradio is imported: a demo that runs offline must not try to send usage statistics.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import base64
import copy
import queue
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

try:
    import hvit  # noqa: F401  (installed with `pip install -e .`, as requirements.txt does)
except ImportError:  # run as a script from a bare checkout: the package sits next to app/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hvit.demo import (
    IMAGENET,
    MAX_IMAGE_SIDE,
    MAX_UPLOAD_BYTES,
    SHIPPED,
    ImageInputError,
    load_image,
    load_model_choice,
    model_choices,
    predict,
    sample_images,
)
from hvit.interchange import PretrainedUnavailableError
from hvit.model import HierarchialViT

# The models offered in the selector, best first. Any other label of `hvit.demo.model_choices()` (the
# random-weight presets) works in the functions below and in `build_demo(models=...)`.
DEMO_MODELS: tuple[str, ...] = (SHIPPED, IMAGENET)
# Requests that run a model at the same time. A free Space has 2 vCPUs: two requests keep both busy
# while a third waits in the queue instead of slowing everyone down.
CONCURRENCY_LIMIT = 2
QUEUE_SIZE = 32  # waiting requests beyond this are turned away with "queue full"
MAX_EXAMPLES = 12  # sample images shown under the input


# --------------------------------------------------------------------------------------------------
# Models: loaded once per choice, one copy per concurrent request
# --------------------------------------------------------------------------------------------------


class ModelPool:
    """Loaded models, one pristine copy per choice plus a copy for each request running at once.

    Inference leaves the weights alone, but explaining a prediction does not leave the model alone:
    recording attention sets a recorder on every attention layer, and Captum adds hooks. Two requests
    sharing one model would see each other's records. So each request borrows a copy of its own; copies
    are made on demand (at most one per concurrent request, i.e. `CONCURRENCY_LIMIT`) and reused.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the two dicts below
        self._load_locks: dict[str, threading.Lock] = {}
        self._pristine: dict[str, HierarchialViT] = {}
        self._free: dict[str, queue.SimpleQueue[HierarchialViT]] = {}

    def _template(self, label: str) -> HierarchialViT:
        with self._lock:
            load_lock = self._load_locks.setdefault(label, threading.Lock())
        with load_lock:  # one load per label, even when many requests ask at once
            if label not in self._pristine:
                model = load_model_choice(label)  # raises: nothing is cached, the next request retries
                model.requires_grad_(False)  # attributions take gradients w.r.t. the input only
                with self._lock:
                    self._pristine[label] = model
                    self._free[label] = queue.SimpleQueue()
            return self._pristine[label]

    @contextmanager
    def borrow(self, label: str) -> Iterator[HierarchialViT]:
        """A model for ``label`` that no other request uses until the ``with`` block ends."""
        template = self._template(label)
        try:
            model = self._free[label].get_nowait()
        except queue.Empty:
            model = copy.deepcopy(template)
        try:
            yield model
        finally:
            self._free[label].put(model)

    def clear(self) -> None:
        """Forget every loaded model (tests use this to start cold)."""
        with self._lock:
            self._pristine.clear()
            self._free.clear()


MODELS = ModelPool()


def _check_model_label(label: str | None) -> str:
    if label not in model_choices():
        raise gr.Error(f"Unknown model {label!r}. Pick one from the model list, e.g. {SHIPPED!r}.")
    return label


@contextmanager
def _model_for_request(label: str | None) -> Iterator[HierarchialViT]:
    """`ModelPool.borrow`, with load failures turned into messages for the visitor."""
    label = _check_model_label(label)
    try:
        with MODELS.borrow(label) as model:
            yield model
    except PretrainedUnavailableError as err:
        raise gr.Error(f"{err}", title="ImageNet weights unavailable", print_exception=False) from err
    except FileNotFoundError as err:  # the shipped checkpoint is missing from this copy of the repository
        raise gr.Error(f"{err}", title="Model file missing") from err


# --------------------------------------------------------------------------------------------------
# Input images
# --------------------------------------------------------------------------------------------------

ImageInput = str | Path | dict | Image.Image | np.ndarray | None


def read_image(image: ImageInput) -> Image.Image:
    """A checked RGB image from what the image component sends, or what a test passes.

    Args:
        image: a file path; the raw upload payload (a dict with ``path`` or a ``data:`` URL; the events
            skip Gradio's own decoding so that a bad file reaches `hvit.demo.load_image` and gets its
            message); a PIL image; or an (H, W[, C]) uint8 array.

    Raises:
        gr.Error: no image, a file that is not an image, too large, or too many pixels; the message
            says what would work.
    """
    if image is None:
        raise gr.Error("No image yet: upload one, take one with the webcam, or click an example below.")
    source: Any = image
    if isinstance(image, dict):
        url = image.get("url") or ""
        if url.startswith("data:"):  # the browser may send small images inline
            source = base64.b64decode(url.partition(",")[2])
        elif image.get("path"):
            source = Path(image["path"])
        else:
            raise gr.Error("The upload arrived without a file; please upload the image again.")
    if isinstance(source, (str, Path)) and not Path(source).suffix and Path(source).is_file():
        # A capture without a file name (e.g. some webcams): let the decoder judge the bytes.
        if Path(source).stat().st_size > MAX_UPLOAD_BYTES:
            raise gr.Error(f"The file is larger than {MAX_UPLOAD_BYTES // 2**20} MiB; use a smaller image.")
        source = Path(source).read_bytes()
    try:
        return load_image(source)
    except ImageInputError as err:
        raise gr.Error(f"This image cannot be used: {err}.", title="Image not accepted") from err


# --------------------------------------------------------------------------------------------------
# Event functions: plain Python, called by the UI and by the tests
# --------------------------------------------------------------------------------------------------


def top_classes(model: HierarchialViT, image: Image.Image, k: int = 5) -> dict[str, float]:
    """``{class name: probability}`` of the ``k`` most likely classes, the form `gr.Label` shows."""
    pred = predict(model, image, k=k)
    return dict(zip(pred.labels, pred.probs, strict=True))


def describe_model(label: str) -> str:
    """Markdown about the selected model: what it recognises and at what resolution it looks.

    Loading happens here, so choosing a model warms it up; an unavailable one is explained at once.
    """
    label = _check_model_label(label)
    try:
        with MODELS.borrow(label) as model:
            pre = model.preprocessing
            cfg = model.config
    except (PretrainedUnavailableError, FileNotFoundError) as err:
        return f"**{label} is not available here.** {err}"
    names = pre.class_names or []
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} classes)" if len(names) > 8 else "")
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return (
        f"**{label}**: {getattr(model, 'variant', 'hvit')} with {params:.2f} M parameters and "
        f"{len(cfg.depths)} stages; it sees every image resized to {pre.img_size}x{pre.img_size} pixels. "
        f"Classes: {shown or f'{cfg.num_classes} unnamed classes'}."
    )


def analyse(image: ImageInput, model_label: str, method: str, stage: int) -> tuple[Any, ...]:
    """Everything the demo shows for one image.

    Args:
        image: see `read_image`.
        model_label: a label of `hvit.demo.model_choices()`.
        method: an attribution method (see ``ATTRIBUTION_METHODS``).
        stage: 1-based stage whose heads the head grid shows.

    Returns:
        ``(top-5 {class: probability}, per-stage attention figure, per-head figure of ``stage``,
        attribution figure, Markdown summary)``.
    """
    img = read_image(image)
    start = time.perf_counter()
    with _model_for_request(model_label) as model:
        top = top_classes(model, img)
        stages_fig = heads_fig = attribution_fig = None  # TODO(figures): wire hvit.explain.figures
    seconds = time.perf_counter() - start
    best, prob = next(iter(top.items()))
    summary = f"**{best}** ({prob:.0%}) by {model_label}, answered in {seconds * 1000:.0f} ms."
    return top, stages_fig, heads_fig, attribution_fig, summary


# --------------------------------------------------------------------------------------------------
# The UI
# --------------------------------------------------------------------------------------------------

INTRO = """\
# hvit: where does a pyramid vision transformer look?
Drop in an image (or use the webcam, or click an example). The model answers with its five most likely
classes; the plots show where each **stage** of the pyramid attends, how the **heads** of one stage
differ, and which pixels an **attribution** method credits for the answer. Images up to
{max_mib} MiB and {max_side} pixels a side; PNG, JPEG, BMP, GIF, WebP or TIFF.
"""


def build_demo(models: Sequence[str] = DEMO_MODELS, examples: Sequence[Path] | None = None) -> gr.Blocks:
    """The Gradio app, not yet launched.

    Args:
        models: labels offered in the model selector, the first being the default.
        examples: example images; by default up to ``MAX_EXAMPLES`` of `hvit.demo.sample_images()`.

    Returns:
        A `gr.Blocks` with its queue configured; call ``.launch()`` on it.
    """
    for label in models:
        _check_model_label(label)
    if examples is None:
        examples = sample_images()[:MAX_EXAMPLES]
    with gr.Blocks(title="hvit: pyramid vision transformers") as demo:
        gr.Markdown(INTRO.format(max_mib=MAX_UPLOAD_BYTES // 2**20, max_side=MAX_IMAGE_SIDE))
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="Image", sources=["upload", "webcam", "clipboard"], type="filepath")
                model = gr.Dropdown(list(models), value=models[0], label="Model")
                model_info = gr.Markdown()
                run = gr.Button("Predict and explain", variant="primary")
            with gr.Column(scale=1):
                top5 = gr.Label(num_top_classes=5, label="Top-5 classes")
                summary = gr.Markdown()
        outputs = [top5, summary]
        run.click(
            lambda *a: (lambda r: (r[0], r[4]))(analyse(*a, method="", stage=1)),
            inputs=[image, model],
            outputs=outputs,
            api_name="predict",
            preprocess=False,
            concurrency_id="model",
        )
        model.change(describe_model, inputs=model, outputs=model_info, concurrency_id="model")
        demo.load(describe_model, inputs=model, outputs=model_info, concurrency_id="model")
        if examples:
            gr.Examples([[str(p)] for p in examples], inputs=[image], label="Examples")
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    return demo


def main() -> None:
    """Start the demo; ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` choose the address."""
    build_demo().launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        max_file_size=MAX_UPLOAD_BYTES,
    )


if __name__ == "__main__":
    main()
