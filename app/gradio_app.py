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
import binascii
import copy
import queue
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image

try:
    import hvit  # noqa: F401  (installed by the README's set-up command; a Space does not install it)
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
from hvit.explain import METHODS, AttributionSettings, compute_attribution, prepare_images
from hvit.explain._inputs import display_images
from hvit.explain.figures import head_grid_figure, panel_grid_figure, stage_panels_figure
from hvit.explain.views import AttentionViews, attention_views
from hvit.interchange import PretrainedUnavailableError
from hvit.model import HierarchialViT
from hvit.train.checkpoint import CheckpointError

# The models offered in the selector, best first. Any other label of `hvit.demo.model_choices()` (the
# random-weight presets) works in the functions below and in `build_demo(models=...)`.
DEMO_MODELS: tuple[str, ...] = (SHIPPED, IMAGENET)
# Requests that run a model at the same time. A free Space has 2 vCPUs: two requests keep both busy
# while a third waits in the queue instead of slowing everyone down.
CONCURRENCY_LIMIT = 2
QUEUE_SIZE = 32  # waiting requests beyond this are turned away with "queue full"
# How the server is launched (by `main` and the tests). Each request that joins the queue holds one of
# the server's worker threads until it is queued; with Gradio's default of 40, joins stopped being
# answered after about 30 waiting requests (measured), so a full queue hung instead of saying "full".
LAUNCH_SETTINGS: dict[str, Any] = {
    "max_file_size": MAX_UPLOAD_BYTES,
    "max_threads": 2 * (CONCURRENCY_LIMIT + QUEUE_SIZE) + 32,
}
MAX_EXAMPLES = 16  # sample images shown under the input (the 12 shapes and 4 photos shipped)


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
        self._lock = threading.Lock()  # guards the three dicts below
        self._load_locks: dict[str, threading.Lock] = {}
        self._pristine: dict[str, HierarchialViT] = {}
        self._free: dict[str, queue.SimpleQueue[HierarchialViT]] = {}

    def load(self, label: str) -> tuple[HierarchialViT, queue.SimpleQueue[HierarchialViT]]:
        """Load ``label`` once (later calls return at once): its pristine model and its free copies.

        Raises:
            whatever `hvit.demo.load_model_choice` raises; nothing is cached then, so the next call
            tries again (e.g. once the machine is online).
        """
        with self._lock:
            load_lock = self._load_locks.setdefault(label, threading.Lock())
        with load_lock:  # one load per label, even when many requests ask at once
            with self._lock:
                if label in self._pristine:
                    return self._pristine[label], self._free[label]
            model = load_model_choice(label)
            model.requires_grad_(False)  # attributions need gradients w.r.t. the input only
            with self._lock:
                self._pristine[label], self._free[label] = model, queue.SimpleQueue()
                return model, self._free[label]

    @contextmanager
    def borrow(self, label: str) -> Iterator[HierarchialViT]:
        """A model for ``label`` that no other request uses until the ``with`` block ends."""
        pristine, free = self.load(label)
        try:
            model = free.get_nowait()
        except queue.Empty:
            model = copy.deepcopy(pristine)  # never lent itself, so never holds a request's state
        try:
            yield model
        finally:
            free.put(model)

    def forget(self, label: str) -> None:
        """Drop the models of ``label``; the next request loads it again (e.g. after going online)."""
        with self._lock:
            self._pristine.pop(label, None)
            self._free.pop(label, None)


MODELS = ModelPool()


def _refusal(message: str, title: str = "Cannot do that") -> gr.Error:
    """A `gr.Error` for a visitor's input: shown to them, not logged as a server fault."""
    return gr.Error(message, title=title, print_exception=False)


def _check_model_label(label: str | None) -> str:
    if label not in model_choices():
        raise _refusal(f"Unknown model {label!r}. Pick one from the model list, e.g. {SHIPPED!r}.")
    return label


@contextmanager
def _model_for_request(label: str | None) -> Iterator[HierarchialViT]:
    """`ModelPool.borrow`, with load failures turned into messages for the visitor."""
    label = _check_model_label(label)
    try:
        MODELS.load(label)
    except PretrainedUnavailableError as err:
        raise _refusal(str(err), title="ImageNet weights unavailable") from err
    except (FileNotFoundError, CheckpointError) as err:  # the shipped file is missing or damaged
        raise gr.Error(str(err), title="Model file unusable") from err
    with MODELS.borrow(label) as model:
        yield model


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
        raise _refusal("No image yet: upload one, take one with the webcam, or click an example below.")
    source: Any = image
    if isinstance(image, dict):
        url = image.get("url") or ""
        if url.startswith("data:"):  # the browser may send small images inline
            source = _data_url_bytes(url)
        elif image.get("path"):
            source = Path(image["path"])  # a capture without a suffix is judged by its content
        else:
            raise _refusal("The upload arrived without a file; please upload the image again.")
    try:
        return load_image(source)
    except ImageInputError as err:
        raise _refusal(f"This image cannot be used: {err}.", title="Image not accepted") from err


def _data_url_bytes(url: str) -> bytes:
    """The bytes of a ``data:[<type>][;base64],<payload>`` URL, refused in words when malformed."""
    header, comma, payload = url.partition(",")
    if not comma:
        raise _refusal(
            "The image sent inline by the browser is malformed (a data: URL without a comma before its "
            "content); upload the image as a file instead.",
            title="Image not accepted",
        )
    if len(payload) > (MAX_UPLOAD_BYTES + 2) // 3 * 4:  # base64 takes 4 characters per 3 bytes
        raise _refusal(
            f"The image is larger than {MAX_UPLOAD_BYTES // 2**20} MiB; use a smaller image.",
            title="Image not accepted",
        )
    if not header.endswith(";base64"):
        return urllib.parse.unquote_to_bytes(payload)
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as err:
        raise _refusal(
            f"The image sent inline by the browser is damaged: its data: URL is not valid base64 ({err}). "
            "Upload the image as a file instead.",
            title="Image not accepted",
        ) from err


# --------------------------------------------------------------------------------------------------
# Event functions: plain Python, called by the UI and by the tests
# --------------------------------------------------------------------------------------------------

# Attribution methods offered, with their cost in passes through the model (the visitor waits for them).
METHOD_LABELS: dict[str, str] = {
    "integrated_gradients": "Integrated gradients (16 passes)",
    "grad_cam": "Grad-CAM on the chosen stage (1 pass)",
    "saliency": "Saliency: |gradient| (1 pass)",
    "input_x_gradient": "Input x gradient (1 pass)",
    "smoothgrad": "SmoothGrad (8 noisy passes)",
    "gradient_shap": "GradientSHAP (8 passes)",
    "occlusion": "Occlusion (slow on 224 px models)",
}
DEFAULT_METHOD = "integrated_gradients"
# Fewer integration steps and samples than the library's defaults: a demo answers in seconds on 2 vCPUs.
DEMO_SETTINGS = AttributionSettings(n_steps=16, nt_samples=8, shap_samples=8)


def top_classes(model: HierarchialViT, image: Image.Image, k: int = 5) -> dict[str, float]:
    """``{class name: probability}`` of the ``k`` most likely classes, the form `gr.Label` shows."""
    pred = predict(model, image, k=k)
    return dict(zip(pred.labels, pred.probs, strict=True))


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise _refusal(f"Unknown attribution method {method!r}; choose one of {', '.join(METHODS)}.")
    return method


def _check_stage(model: HierarchialViT, stage: int | float | None) -> int:
    """0-based stage from the 1-based number the UI shows."""
    num_stages = len(model.stages)
    whole = isinstance(stage, (int, float)) and not isinstance(stage, bool) and float(stage).is_integer()
    if not whole or not 1 <= stage <= num_stages:
        raise _refusal(f"Stage must be a whole number from 1 to {num_stages}, got {stage!r}.")
    return int(stage) - 1


def _stages_figure(views: AttentionViews) -> go.Figure:
    titles = []
    for s in range(views.num_stages):
        (q_h, q_w), (k_h, k_w) = views.groups(s)[0].query_grid, views.groups(s)[0].key_grid
        titles.append(f"stage {s + 1}: {q_h}x{q_w} queries, {k_h}x{k_w} keys")
    # Each stage on its own colour scale: a stage with 4 keys gives each far more attention than one
    # with 64, and a shared scale would show the fine stages as blank.
    return stage_panels_figure(
        views.images[0], views.stage_maps(), titles, shared_scale=False,
        title="Attention each key receives (mean over queries and heads, last block of each stage)",
    )  # fmt: skip


def _heads_figure(views: AttentionViews, stage: int) -> go.Figure:
    return head_grid_figure(views, stage)  # one colour scale: a near-silent head stays visibly silent


def _attribution_figure(model: HierarchialViT, image: Image.Image, method: str, stage: int) -> go.Figure:
    result = compute_attribution(model, image, method=method, stage=stage, settings=DEMO_SETTINGS)
    names = model.preprocessing.class_names
    target = int(result.target[0])
    class_name = names[target] if names else f"class {target}"
    title = f"{METHOD_LABELS[method].split(' (')[0]} for {class_name!r}"
    if result.note:
        title += f"<br><sup>{result.note}</sup>"
    display = display_images(model, prepare_images(model, image))[0]  # what the model saw, in [0, 1]
    return panel_grid_figure(
        [result.map[0]], [""], image=display, cols=1, signed=result.signed, title=title, panel_height=340
    )


def describe_model(label: str) -> str:
    """Markdown about the selected model: what it recognises and at what resolution it looks.

    Loading happens here, so choosing a model warms it up, and an unavailable one is explained at once.
    """
    label = _check_model_label(label)
    try:
        model, _ = MODELS.load(label)  # read-only look at the pristine copy
    except (PretrainedUnavailableError, FileNotFoundError, CheckpointError) as err:
        return f"**{label} is not available here.** {err}"
    pre, cfg = model.preprocessing, model.config
    params = sum(p.numel() for p in model.parameters()) / 1e6
    variant = getattr(model, "variant", "hvit")
    names = pre.class_names or []
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} classes)" if len(names) > 8 else "")
    return (
        f"{variant}: {params:.2f} M parameters, {len(cfg.depths)} stages; it sees every image resized to "
        f"{pre.img_size}x{pre.img_size} pixels. Classes: {shown or f'{cfg.num_classes}, unnamed'}."
    )


def analyse(image: ImageInput, model_label: str, method: str, stage: int) -> tuple[Any, ...]:
    """Everything the demo shows for one image, from one call.

    Args:
        image: see `read_image`.
        model_label: a label of `hvit.demo.model_choices()`.
        method: an attribution method, a key of `METHOD_LABELS`.
        stage: 1-based stage whose heads the head grid shows (and Grad-CAM uses).

    Returns:
        ``(top-5 {class: probability}, per-stage attention figure, per-head figure of ``stage``,
        attribution figure, Markdown summary)``.
    """
    img = read_image(image)
    method = _check_method(method)
    start = time.perf_counter()
    with _model_for_request(model_label) as model:
        s = _check_stage(model, stage)
        top = top_classes(model, img)
        views = attention_views(model, img)
        stages_fig = _stages_figure(views)
        heads_fig = _heads_figure(views, s)
        attribution_fig = _attribution_figure(model, img, method, s)
    seconds = time.perf_counter() - start
    best, prob = next(iter(top.items()))
    summary = f"**{best}** ({prob:.0%}), answered in {seconds:.1f} s."
    return top, stages_fig, heads_fig, attribution_fig, summary


def analyse_new_image(image: ImageInput, model_label: str, method: str, stage: int) -> tuple[Any, ...]:
    """`analyse`, run when the visitor gives an image or picks another model.

    Clears the outputs when the image is removed. A model that cannot be loaded is reported in the
    summary rather than as an error pop-up: the note under the model list already says why.
    """
    if image is None:
        return None, None, None, None, ""
    try:
        MODELS.load(_check_model_label(model_label))
    except (PretrainedUnavailableError, FileNotFoundError, CheckpointError):
        return (
            None,
            None,
            None,
            None,
            f"**{model_label}** is not available here; see the note under the model list.",
        )
    return analyse(image, model_label, method, stage)


def show_heads(image: ImageInput, model_label: str, stage: int) -> go.Figure | None:
    """The per-head grid of one stage (1-based); ``None`` while there is no image yet."""
    if image is None:
        return None
    img = read_image(image)
    with _model_for_request(model_label) as model:
        s = _check_stage(model, stage)
        return _heads_figure(attention_views(model, img), s)


def show_attribution(image: ImageInput, model_label: str, method: str, stage: int) -> go.Figure | None:
    """The attribution overlay of ``method``; ``None`` while there is no image yet."""
    if image is None:
        return None
    img = read_image(image)
    method = _check_method(method)
    with _model_for_request(model_label) as model:
        return _attribution_figure(model, img, method, _check_stage(model, stage))


# --------------------------------------------------------------------------------------------------
# The UI: widgets and wiring only
# --------------------------------------------------------------------------------------------------

INTRO = """\
# Where does a pyramid vision transformer look?
Drop in an image, take one with the webcam, or click an example. The model answers with its five most
likely classes. The plots show where each **stage** of the pyramid attends (averaged over its heads),
how the **heads** of one stage differ, and which pixels an **attribution** method credits for the answer.
"""
LIMITS = (
    f"PNG, JPEG, BMP, GIF, WebP or TIFF; up to {MAX_UPLOAD_BYTES // 2**20} MiB "
    f"and {MAX_IMAGE_SIDE} pixels a side."
)
HOW_TO_READ = """\
- **Stages.** Each stage works on a coarser grid of tokens than the one before (4, 8, 16 and 32 pixels
  per token in PVT). Its queries are the tokens; its keys are a spatially *reduced* grid, so every key
  summarises a patch of tokens. A panel shows how much attention each key receives, averaged over all
  queries and heads, painted over the pixels that key summarises.
- **Heads.** The heads of one stage share one colour scale, so a head that barely varies looks flat
  instead of being stretched to look like the others.
- **Attribution.** Which input pixels the top class depends on. For the signed methods (integrated
  gradients, input x gradient, GradientSHAP, occlusion) red raises the class score and blue lowers it.
- **Opacity.** The slider under each plot fades the map over the image.
"""


def example_images() -> list[Path]:
    """The shipped sample images, shapes first (what the default model knows), then the photographs.

    Ground-truth masks are not examples (`hvit.assets.sample_images` leaves them out).
    """
    return sample_images()


def build_demo(models: Sequence[str] = DEMO_MODELS, examples: Sequence[Path] | None = None) -> gr.Blocks:
    """The Gradio app, not yet launched.

    Args:
        models: labels offered in the model selector, the first being the default.
        examples: example images; by default the first ``MAX_EXAMPLES`` of `example_images()`.

    Returns:
        A `gr.Blocks` with its queue configured; call ``.launch()`` on it.
    """
    for label in models:
        _check_model_label(label)
    if examples is None:
        examples = example_images()[:MAX_EXAMPLES]
    with gr.Blocks(title="hvit: where does a pyramid vision transformer look?") as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(
                    label="Image", sources=["upload", "webcam", "clipboard"], type="filepath", height=320
                )
                gr.Markdown(LIMITS)
                model = gr.Dropdown(list(models), value=models[0], label="Model")
                model_info = gr.Markdown()
                method = gr.Dropdown(
                    [(text, name) for name, text in METHOD_LABELS.items()],
                    value=DEFAULT_METHOD,
                    label="Attribution method",
                )
                stage = gr.Radio([1, 2, 3, 4], value=1, label="Stage for the head grid (and Grad-CAM)")
                run = gr.Button("Predict and explain", variant="primary")
            with gr.Column(scale=3):
                summary = gr.Markdown()
                top5 = gr.Label(num_top_classes=5, label="Top-5 classes")
                attribution = gr.Plot(label="Attribution")
        # Drawn below the examples (`.render()` at the end), so the examples sit next to the input.
        stages = gr.Plot(label="Attention of each stage", render=False)
        heads = gr.Plot(label="Attention of each head in the chosen stage", render=False)

        inputs, outputs = [image, model, method, stage], [top5, stages, heads, attribution, summary]
        # Every event that runs a model shares one concurrency group (`CONCURRENCY_LIMIT` at a time).
        # preprocess=False: the functions get the raw upload and check it themselves (`read_image`), so
        # a bad file gets a message that says what to do instead of a decoder traceback.
        run_model = dict(preprocess=False, concurrency_id="model")
        # `.input` fires on the visitor's own changes only, not when an example fills the inputs.
        on_input = dict(run_model, trigger_mode="always_last")  # clicking through: only the last one runs
        run.click(analyse, inputs, outputs, api_name="predict", **run_model)
        image.input(analyse_new_image, inputs, outputs, api_visibility="private", **on_input)
        stage.input(show_heads, [image, model, stage], heads, api_name="heads", **on_input)
        method.input(show_attribution, inputs, attribution, api_name="attribution", **on_input)
        model.input(analyse_new_image, inputs, outputs, api_visibility="private", **on_input)
        model.change(describe_model, model, model_info, api_name="describe_model", **run_model)
        demo.load(describe_model, model, model_info, api_visibility="private", **run_model)
        if examples:
            gr.Examples(
                [[str(p), models[0], DEFAULT_METHOD, 1] for p in examples],
                inputs=inputs,
                outputs=outputs,
                fn=analyse,
                cache_examples=True,
                cache_mode="lazy",  # computed on first click, then served to every visitor
                preprocess=False,
                examples_per_page=MAX_EXAMPLES,
                visible_columns=[0],  # the images; the other columns are the defaults set above
            )
        stages.render()
        heads.render()
        with gr.Accordion("How to read these plots", open=False):
            gr.Markdown(HOW_TO_READ)
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    return demo


def main() -> None:
    """Start the demo; ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` choose the address (127.0.0.1:7860)."""
    if "OMP_NUM_THREADS" not in os.environ:
        # One torch thread per request: the queue's concurrency limit spreads requests over the cores.
        # Two requests each using every core oversubscribe the CPU, and OpenMP's busy-waiting then makes
        # the small models here many times slower (measured on 2 cores: 3 s per request instead of 0.4 s).
        torch.set_num_threads(1)
    build_demo().launch(**LAUNCH_SETTINGS)


if __name__ == "__main__":
    main()
