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
import csv
import dataclasses
import functools
import hashlib
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
from PIL import Image, ImageDraw

try:
    import hvit  # noqa: F401  (installed by the README's set-up command; a Space does not install it)
except ImportError:  # run as a script from a bare checkout: the package sits next to app/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hvit.assets import ROOT as ASSETS
from hvit.demo import (
    IMAGENET,
    MAX_IMAGE_SIDE,
    MAX_UPLOAD_BYTES,
    SHIPPED,
    SHIPPED_SHAPES,
    ImageInputError,
    enlarge,
    load_image,
    load_model_choice,
    model_choices,
    predict,
    sample_images,
)
from hvit.demo.domain import (
    PHOTO,
    SHAPES_IMAGE,
    SHAPES_PAIR_IMAGE,
    DomainNote,
    domain_note,
    image_kind,
    model_domain,
)
from hvit.explain import METHODS, AttributionSettings, compute_attribution, default_cam_stage, prepare_images
from hvit.explain._inputs import display_images
from hvit.explain.figures import head_grid_figure, panel_grid_figure, stage_panels_figure
from hvit.explain.rollout import rollout_all_stages
from hvit.explain.views import AttentionViews, attention_views
from hvit.interchange import PretrainedUnavailableError
from hvit.model import HierarchialViT
from hvit.train.checkpoint import CheckpointError

# The models offered in the selector, best first. Any other label of `hvit.demo.model_choices()` (the
# random-weight presets) works in the functions below and in `build_demo(models=...)`.
# The 96 px classroom model is the default (maps a class can read); the 32 px shapes model is the fast one.
DEMO_MODELS: tuple[str, ...] = (SHIPPED, SHIPPED_SHAPES, IMAGENET)
# Requests that run a model at the same time. A free Space has 2 vCPUs: two requests keep both busy
# while a third waits in the queue instead of slowing everyone down.
CONCURRENCY_LIMIT = 2
QUEUE_SIZE = 32  # waiting requests beyond this are turned away with "queue full"
# How the server is launched (by `main` and the tests). Each request that joins the queue holds one of
# the server's worker threads until it is queued; with Gradio's default of 40, joins stopped being
# answered after about 30 waiting requests (measured), so a full queue hung instead of saying "full".
# Gradio keeps cached example answers in a CSV file, one row per example, and reads it back with Python's
# csv module, whose default field limit is 128 KiB. A row of the 96 px model's plots (24x24 maps, the
# model's view as an image) is larger, so without this the second example clicked fails with
# "field larger than field limit". The file is the app's own, written by Gradio.
CSV_FIELD_LIMIT = 64 * 2**20
csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
LAUNCH_SETTINGS: dict[str, Any] = {
    "max_file_size": MAX_UPLOAD_BYTES,
    "max_threads": 2 * (CONCURRENCY_LIMIT + QUEUE_SIZE) + 32,
}
MAX_EXAMPLES = 12  # sample images per page of an example group (12 of each shapes kind, 4 photos shipped)


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

# Occlusion in the demo: the image is cut into this many squares a side, each hidden once (`demo_settings`).
OCCLUSION_GRID = 8
# Attribution methods offered, with their cost in passes through the model (the visitor waits for them).
METHOD_LABELS: dict[str, str] = {
    "integrated_gradients": "Integrated gradients (16 passes)",
    "grad_cam": "Grad-CAM on the chosen stage (1 pass)",
    "saliency": "Saliency: |gradient| (1 pass)",
    "input_x_gradient": "Input x gradient (1 pass)",
    "smoothgrad": "SmoothGrad (8 noisy passes)",
    "gradient_shap": "GradientSHAP (8 passes)",
    "occlusion": f"Occlusion: {OCCLUSION_GRID}x{OCCLUSION_GRID} squares, each hidden once ({OCCLUSION_GRID**2} passes)",
}
DEFAULT_METHOD = "integrated_gradients"
# Fewer integration steps and samples than the library's defaults: a demo answers in seconds on 2 vCPUs.
DEMO_SETTINGS = AttributionSettings(n_steps=16, nt_samples=8, shap_samples=8)


def demo_settings(model: HierarchialViT) -> AttributionSettings:
    """`DEMO_SETTINGS` for ``model``: occlusion hides each square of an `OCCLUSION_GRID` grid once.

    The library's occlusion slides a window of side / 8 by half its side (15 x 15 = 225 passes); here the
    squares do not overlap (64 passes): 0.25 s instead of 0.65 s for the 96 px model on one thread,
    which kept the Space's answers with occlusion over a second (`python -m hvit.bench space`). The map
    is coarser (one value per square), as the method's label says.
    """
    window = max(2, model.preprocessing.img_size // OCCLUSION_GRID)
    return dataclasses.replace(DEMO_SETTINGS, occlusion_window=window, occlusion_stride=window)


# What the stage panels (and the head grid) show. Only the first follows the query point.
VIEW_LABELS: dict[str, str] = {
    "query": "Where the query point looks",
    "rollout": "Rollout: what each stage's output draws from",
    "received": "Attention each key receives",
}
DEFAULT_VIEW = "query"
# Panels per row: at 1366 px a full-width plot holds four panels of about 270 px (issue 12: >= 240 px).
PANELS_PER_ROW = 4
PANEL_HEIGHT = 360  # pixels per row of panels; panels are square, so this also bounds their width
QUERY_COLOUR = "#40c057"  # the query token's outline on every panel
PICTURE_SIDE = 256  # the model's view is enlarged (sharp pixels) to at least this side, to click on


def top_classes(model: HierarchialViT, image: Image.Image, k: int = 5) -> dict[str, float]:
    """``{class name: probability}`` of the ``k`` most likely classes, the form `gr.Label` shows."""
    pred = predict(model, image, k=k)
    return dict(zip(pred.labels, pred.probs, strict=True))


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise _refusal(f"Unknown attribution method {method!r}; choose one of {', '.join(METHODS)}.")
    return method


def _check_view(view: str) -> str:
    if view not in VIEW_LABELS:
        raise _refusal(f"Unknown view {view!r}; choose one of {', '.join(VIEW_LABELS)}.")
    return view


def _check_stage(model: HierarchialViT, stage: int | float | None) -> int:
    """0-based stage from the 1-based number the UI shows."""
    num_stages = len(model.stages)
    whole = isinstance(stage, (int, float)) and not isinstance(stage, bool) and float(stage).is_integer()
    if not whole or not 1 <= stage <= num_stages:
        raise _refusal(f"Stage must be a whole number from 1 to {num_stages}, got {stage!r}.")
    return int(stage) - 1


def _check_query(query_x: float | None, query_y: float | None) -> tuple[float, float]:
    """The query point as fractions of the image's width and height, from the UI's percentages."""
    point = []
    for name, value in (("query_x", query_x), ("query_y", query_y)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
            raise _refusal(f"{name} must be a number from 0 to 100 (per cent of the image), got {value!r}.")
        point.append(float(value) / 100)
    return point[0], point[1]


def _query_pixel(views: AttentionViews, query: tuple[float, float]) -> tuple[int, int]:
    """The model-input pixel (y, x) at fractions ``query`` = (across, down) of the image.

    The model sees the whole image resized to a square (no crop), so a fraction of the image is the
    same fraction of the model's input.
    """
    height, width = views.image_size
    return min(int(query[1] * height), height - 1), min(int(query[0] * width), width - 1)


def _mark_query(fig: go.Figure, views: AttentionViews, pixel: tuple[int, int], stages: Sequence[int]) -> None:
    """Outline, on each map panel, the query token of its stage (``stages[i]`` for panel i)."""
    panels = [t for t in fig.data if isinstance(t, go.Heatmap)]
    for trace, s in zip(panels, stages, strict=True):
        stride = views.strides[s]
        i, j = views.query_token(s, pixel)
        fig.add_shape(
            type="rect",
            x0=j * stride - 0.5,
            y0=i * stride - 0.5,
            x1=(j + 1) * stride - 0.5,
            y1=(i + 1) * stride - 0.5,
            xref=trace.xaxis or "x",
            yref=trace.yaxis or "y",
            line={"color": QUERY_COLOUR, "width": 3},
        )


def _query_picture(views: AttentionViews, pixel: tuple[int, int]) -> np.ndarray:
    """What the model sees (its input, enlarged with sharp pixels) with the query point marked.

    A shapes image of 32 px would be a stamp in the upload box; this picture is big enough to click on.

    Returns:
        (S * f, S * f, 3) uint8, f the smallest whole factor reaching `PICTURE_SIDE`.
    """
    side = max(views.image_size)
    factor = max(1, -(-PICTURE_SIDE // side))  # ceil
    picture = enlarge(views.images[0], side * factor)
    draw = ImageDraw.Draw(picture)
    y, x = (pixel[0] + 0.5) * factor, (pixel[1] + 0.5) * factor
    radius = max(6, factor * 2)
    for width, colour in ((5, "black"), (3, QUERY_COLOUR)):  # a dark rim: visible on light and dark
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=colour, width=width)
        draw.line((x - 2 * radius, y, x - radius, y), fill=colour, width=width)
        draw.line((x + radius, y, x + 2 * radius, y), fill=colour, width=width)
        draw.line((x, y - 2 * radius, x, y - radius), fill=colour, width=width)
        draw.line((x, y + radius, x, y + 2 * radius), fill=colour, width=width)
    return np.asarray(picture)


def _stages_figure(
    model: HierarchialViT, views: AttentionViews, view: str, pixel: tuple[int, int]
) -> go.Figure:
    """One panel per stage measured against uniform attention: rollout on one colour scale, query and
    received attention each stage on its own."""
    n = views.num_stages
    if view == "rollout":
        # From what the next stage (or the classifier) reads of each stage: the mean of its tokens.
        # Not from the query point: a token's own residual path dominates a one-token rollout, which
        # then shows little more than the query itself.
        rollout = rollout_all_stages(
            views.maps, views.strides, model.config.downsample_stride, views.image_size
        )
        maps = [rollout.token_map(s) for s in range(n)]
        uniform: float | list[float] = views.rollout_uniform_level  # every map spreads over stage-1 tokens
        titles = [f"stage {s + 1} output" for s in range(n - 1)] + [f"stage {n}: what the classifier reads"]
        title = "Attention rollout: which pixels each stage's output draws from, through every block below it"
    else:
        maps = views.stage_maps(kind="query" if view == "query" else "received", pixel=pixel, on="tokens")
        uniform = [views.uniform_level(s) for s in range(n)]
        titles = []
        for s in range(n):
            (k_h, k_w) = views.groups(s)[0].key_grid
            titles.append(f"stage {s + 1} · keys {k_h}x{k_w}")
        title = (
            "Where the query point looks in each stage (last block, mean over heads)"
            if view == "query"
            else "Attention each key receives in each stage (mean over queries and heads, last block)"
        )
    # Rollout: one scale, every stage spreads over the same stage-1 tokens. Query and received attention:
    # each stage on its own bar (as the lesson's step 4), in multiples of its own uniform level: a deep
    # stage's few keys reach 10x uniform and more, which on a shared bar draws stages 1-2 near black. Two
    # panels a row leave each its bar and still more than 240 px.
    own = view != "rollout"
    fig = stage_panels_figure(
        views.images[0], maps, titles, cols=min(n, 2 if own else PANELS_PER_ROW), panel_height=PANEL_HEIGHT,
        uniform=uniform, title=title + (", each stage on its own scale" if own else ""), shared_scale=not own,
    )  # fmt: skip
    if view == "query":
        _mark_query(fig, views, pixel, range(n))
    return fig


def _heads_figure(views: AttentionViews, stage: int, view: str, pixel: tuple[int, int]) -> go.Figure:
    """Every head of ``stage``'s last block: the query point's attention ("query" view), else the
    attention each key receives.

    One colour scale for all heads, so a near-silent head stays visibly silent.
    """
    kind = "query" if view == "query" else "received"
    fig = head_grid_figure(
        views, stage, kind=kind, pixel=pixel, cols=PANELS_PER_ROW, panel_height=PANEL_HEIGHT
    )
    if kind == "query":
        _mark_query(fig, views, pixel, [stage] * views.num_heads(stage))
    return fig


def _attribution_figure(model: HierarchialViT, image: Image.Image, method: str, stage: int) -> go.Figure:
    result = compute_attribution(model, image, method=method, stage=stage, settings=demo_settings(model))
    names = model.preprocessing.class_names
    target = int(result.target[0])
    class_name = names[target] if names else f"class {target}"
    name = f"Grad-CAM on stage {stage + 1}" if method == "grad_cam" else METHOD_LABELS[method].split(" (")[0]
    title = f"{name}: the pixels behind {class_name!r}"
    if result.note:
        title += f"<br><sup>{result.note}</sup>"
    display = display_images(model, prepare_images(model, image))[0]  # what the model saw, in [0, 1]
    return panel_grid_figure(
        [result.map[0]], [""], image=display, cols=1, signed=result.signed, title=title, panel_height=340,
        colorbar_title="red: for, blue: against" if result.signed else "importance (0 = none)",
    )  # fmt: skip


def start_stage(label: str) -> int:
    """The 1-based stage the stage selector starts on for model ``label``: Grad-CAM's default stage
    (`hvit.explain.default_cam_stage`, the deepest stage fine enough to point at the object); 1 when the
    model cannot be loaded here (e.g. ImageNet offline). Loads the model (once), as a visitor would."""
    try:
        model, _ = MODELS.load(_check_model_label(label))
    except (PretrainedUnavailableError, FileNotFoundError, CheckpointError):
        return 1
    return default_cam_stage(model.config) + 1


def describe_model(label: str) -> str:
    """Markdown about the selected model: its domain (what it learned, its classes, its input size).

    Loading happens here, so choosing a model warms it up, and an unavailable one is explained at once.
    """
    label = _check_model_label(label)
    try:
        model, _ = MODELS.load(label)  # read-only look at the pristine copy
    except (PretrainedUnavailableError, FileNotFoundError, CheckpointError) as err:
        return f"**{label} is not available here.** {err}"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    variant = getattr(model, "variant", "hvit")
    return (
        f"{variant}, {params:.2f} M parameters, {len(model.config.depths)} stages. "
        f"{model_domain(model).summary()}."
    )


@functools.cache
def _sample_kinds() -> dict[str, str]:
    """The kind (`hvit.demo.image_kind`) of every shipped sample, keyed by a digest of its pixels."""
    kinds = {}
    for path in sample_images():
        kind = image_kind(path)
        if kind is not None:
            kinds[_pixel_digest(load_image(path))] = kind
    return kinds


def _pixel_digest(image: Image.Image) -> str:
    return hashlib.sha256(image.tobytes() + str(image.size).encode()).hexdigest()


def _image_kind(image: ImageInput, img: Image.Image) -> str | None:
    """What kind of image the visitor gave: a shipped sample's kind, else unknown (None).

    Gradio hands the functions a copy of an example in its own cache, so a sample is recognised by
    its pixels; only a path inside the shipped assets is judged by its folders.
    """
    if isinstance(image, (str, Path)) and Path(image).resolve().is_relative_to(ASSETS.resolve()):
        return image_kind(image)
    return _sample_kinds().get(_pixel_digest(img))


def _summary(top: dict[str, float], note: DomainNote | None, seconds: float) -> str:
    """The answer in words, with the domain note right under it when there is one."""
    best, prob = next(iter(top.items()))
    text = f"**{best}** ({prob:.0%}), answered in {seconds:.1f} s."
    if note is None:
        return text
    return text + f"\n\n> {'⚠️' if note.level == 'warning' else 'ℹ️'} {note.text}"


def analyse(
    image: ImageInput,
    model_label: str,
    method: str,
    stage: int,
    view: str = DEFAULT_VIEW,
    query_x: float = 50,
    query_y: float = 50,
) -> tuple[Any, ...]:
    """Everything the demo shows for one image, from one call.

    Args:
        image: see `read_image`.
        model_label: a label of `hvit.demo.model_choices()`.
        method: an attribution method, a key of `METHOD_LABELS`.
        stage: 1-based stage whose heads the head grid shows (and Grad-CAM uses).
        view: what the attention plots show, a key of `VIEW_LABELS`.
        query_x, query_y: the query point, in per cent of the image's width (from the left) and
            height (from the top).

    Returns:
        ``(top-5 {class: probability}, the model's view with the query point marked, per-stage
        attention figure, per-head figure of ``stage``, attribution figure, Markdown summary with the
        out-of-domain note when the image is not the kind the model learned)``.
    """
    img = read_image(image)
    method, view, query = _check_method(method), _check_view(view), _check_query(query_x, query_y)
    start = time.perf_counter()
    with _model_for_request(model_label) as model:
        s = _check_stage(model, stage)
        top = top_classes(model, img)
        note = domain_note(model_domain(model), _image_kind(image, img))
        views = attention_views(model, img)
        pixel = _query_pixel(views, query)
        picture = _query_picture(views, pixel)
        stages_fig = _stages_figure(model, views, view, pixel)
        heads_fig = _heads_figure(views, s, view, pixel)
        attribution_fig = _attribution_figure(model, img, method, s)
    summary = _summary(top, note, time.perf_counter() - start)
    return top, picture, stages_fig, heads_fig, attribution_fig, summary


def analyse_new_image(
    image: ImageInput,
    model_label: str,
    method: str,
    stage: int,
    view: str = DEFAULT_VIEW,
    query_x: float = 50,
    query_y: float = 50,
) -> tuple[Any, ...]:
    """`analyse`, run when the visitor gives an image or picks another model.

    Clears the outputs when the image is removed. A model that cannot be loaded is reported in the
    summary rather than as an error pop-up: the note under the model list already says why.
    """
    if image is None:
        return None, None, None, None, None, ""
    try:
        MODELS.load(_check_model_label(model_label))
    except (PretrainedUnavailableError, FileNotFoundError, CheckpointError):
        unavailable = f"**{model_label}** is not available here; see the note under the model list."
        return None, None, None, None, None, unavailable
    return analyse(image, model_label, method, stage, view, query_x, query_y)


def show_attention(
    image: ImageInput,
    model_label: str,
    stage: int,
    view: str = DEFAULT_VIEW,
    query_x: float = 50,
    query_y: float = 50,
) -> tuple[np.ndarray | None, go.Figure | None, go.Figure | None]:
    """The model's view, the stage panels and the head grid for another query point or view.

    One model pass. Returns ``(None, None, None)`` while there is no image yet.
    """
    if image is None:
        return None, None, None
    img = read_image(image)
    view, query = _check_view(view), _check_query(query_x, query_y)
    with _model_for_request(model_label) as model:
        s = _check_stage(model, stage)
        views = attention_views(model, img)
        pixel = _query_pixel(views, query)
        picture = _query_picture(views, pixel)
        return picture, _stages_figure(model, views, view, pixel), _heads_figure(views, s, view, pixel)


def pick_query(picture: ImageInput, evt: gr.SelectData) -> tuple[float, float, str]:
    """The query point where the visitor clicked an image, in per cent, and the view that shows it.

    Args:
        picture: the image clicked: the upload, or the model's view (the same picture, resized).
        evt: ``evt.index`` is the clicked pixel (x, y) of ``picture``.

    Returns:
        ``(query_x, query_y, "query")``: the click means "where does this point look?".
    """
    width, height = read_image(picture).size
    x, y = evt.index[0], evt.index[1]
    query_x = round(100 * (min(max(x, 0), width - 1) + 0.5) / width, 1)
    query_y = round(100 * (min(max(y, 0), height - 1) + 0.5) / height, 1)
    return query_x, query_y, "query"


def show_attribution(image: ImageInput, model_label: str, method: str, stage: int) -> go.Figure | None:
    """The attribution overlay of ``method``; ``None`` while there is no image yet."""
    if image is None:
        return None
    img = read_image(image)
    method = _check_method(method)
    with _model_for_request(model_label) as model:
        return _attribution_figure(model, img, method, _check_stage(model, stage))


def show_heads(
    image: ImageInput,
    model_label: str,
    stage: int,
    view: str = DEFAULT_VIEW,
    query_x: float = 50,
    query_y: float = 50,
) -> go.Figure | None:
    """The head grid of another stage (1-based); ``None`` while there is no image yet."""
    if image is None:
        return None
    img = read_image(image)
    view, query = _check_view(view), _check_query(query_x, query_y)
    with _model_for_request(model_label) as model:
        s = _check_stage(model, stage)
        views = attention_views(model, img)
        return _heads_figure(views, s, view, _query_pixel(views, query))


def show_stage(
    image: ImageInput,
    model_label: str,
    method: str,
    stage: int,
    view: str = DEFAULT_VIEW,
    query_x: float = 50,
    query_y: float = 50,
) -> tuple[Any, Any]:
    """Another stage chosen: its head grid, and a new map when the method is Grad-CAM (stage-bound)."""
    heads = show_heads(image, model_label, stage, view, query_x, query_y)
    if method != "grad_cam":
        return heads, gr.skip()
    return heads, show_attribution(image, model_label, method, stage)


# --------------------------------------------------------------------------------------------------
# The UI: widgets and wiring only
# --------------------------------------------------------------------------------------------------

INTRO = """\
# Where does a pyramid vision transformer look?
Drop in an image, take one with the webcam, or click an example. The model answers with its five most
likely classes. **Click the image** to choose a query point: the plots show where that point looks in
each **stage** of the pyramid, which pixels each stage's output draws from (**rollout**), how the
**heads** of one stage differ, and which pixels an **attribution** method credits for the answer.
"""
LIMITS = (
    f"PNG, JPEG, BMP, GIF, WebP or TIFF; up to {MAX_UPLOAD_BYTES // 2**20} MiB "
    f"and {MAX_IMAGE_SIDE} pixels a side."
)
HOW_TO_READ = """\
- **Stages.** Each stage works on a coarser grid of tokens than the one before (4, 8, 16 and 32 pixels
  per token in PVT). Its queries are the tokens; its keys are a spatially *reduced* grid, so every key
  summarises a patch of tokens, and a panel paints each key's value over the pixels it summarises.
  The green square is the query point's token in that stage: it grows as the grid gets coarser.
- **Against uniform.** Attention is drawn as a multiple of *uniform* attention (1 / keys: what every
  key would get if the query looked everywhere alike). 1 is marked on the colour bar; dark is less than
  uniform, bright more. All panels of a plot share one colour bar, so they can be compared.
- **Rollout** multiplies the attention of every block below a stage (with the residual path), carried
  back to the pixels: what the stage's output, as the next stage or the classifier reads it, has
  gathered information from. The last panel is what the answer rests on.
- **Heads.** The heads of one stage share one colour scale, so a head that barely varies looks flat
  instead of being stretched to look like the others.
- **Attribution.** Which input pixels the top class depends on. For the signed methods (integrated
  gradients, input x gradient, GradientSHAP, occlusion) red raises the class score and blue lowers it.
- **Opacity.** The slider under each plot fades the map over the image.
- **Domain.** A model only knows the images it learned (see the note under the model list). Shown
  anything else it still picks one of its classes; a note beside the answer says when that happens.
"""


EXAMPLES_LABEL = "Examples: scenes the classroom model learned (its answer is the large shape)"
SHAPES_LABEL = "One shape: for the fast 32 px shapes model"
PHOTOS_LABEL = "Photographs: for the ImageNet model (the shapes models cannot read them)"
# Example groups, in the order shown: the image kind, the group's label, and the model its rows choose
# (when offered; else the demo's default model). An example of no known kind joins the first group.
EXAMPLE_GROUPS: tuple[tuple[str, str, str], ...] = (
    (SHAPES_PAIR_IMAGE, EXAMPLES_LABEL, SHIPPED),
    (SHAPES_IMAGE, SHAPES_LABEL, SHIPPED_SHAPES),
    (PHOTO, PHOTOS_LABEL, SHIPPED),
)


def example_images() -> list[Path]:
    """The shipped sample images: shapes-pair scenes first (what the default model knows), then the
    one-shape images, then the photographs.

    Ground-truth masks are not examples (`hvit.assets.sample_images` leaves them out).
    """
    return sample_images()


def _example_groups(examples: Sequence[Path], models: Sequence[str]) -> list[tuple[list[Path], str, str]]:
    """``examples`` split by kind as `EXAMPLE_GROUPS` says: (paths, label, model label), empty groups
    left out."""
    known = {kind for kind, _, _ in EXAMPLE_GROUPS}
    groups = []
    for i, (kind, label, model) in enumerate(EXAMPLE_GROUPS):
        paths = [p for p in examples if image_kind(p) == kind or (i == 0 and image_kind(p) not in known)]
        if paths:
            groups.append((paths, label, model if model in models else models[0]))
    return groups


def example_row(path: Path, model_label: str) -> list[Any]:
    """One example's values for `analyse`'s inputs: the image, the model that learned its kind, and
    that model's defaults (method, stage, view, query point at the centre)."""
    return [str(path), model_label, DEFAULT_METHOD, start_stage(model_label), DEFAULT_VIEW, 50, 50]


def build_demo(models: Sequence[str] = DEMO_MODELS, examples: Sequence[Path] | None = None) -> gr.Blocks:
    """The Gradio app, not yet launched.

    Args:
        models: labels offered in the model selector, the first being the default.
        examples: example images; by default `example_images()`. The first one is the image the demo
            opens with (the default model's kind of image).

    Returns:
        A `gr.Blocks` with its queue configured; call ``.launch()`` on it.
    """
    for label in models:
        _check_model_label(label)
    if examples is None:
        examples = example_images()
    with gr.Blocks(title="hvit: where does a pyramid vision transformer look?") as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=2):
                with gr.Row():
                    image = gr.Image(
                        value=str(examples[0]) if examples else None,
                        label="Image",
                        sources=["upload", "webcam", "clipboard"],
                        type="filepath",
                        height=PICTURE_SIDE + 20,
                    )
                    # A click on either image moves the query point (this one is large enough to aim).
                    picture = gr.Image(
                        label="What the model sees",
                        show_label=False,  # a floating label would hide a query point near the top
                        interactive=False,
                        height=PICTURE_SIDE + 20,
                        buttons=[],
                        elem_id="model-view",
                    )
                gr.Markdown(
                    f"Right: what the model sees. **Click either image** to move the query point. {LIMITS}"
                )
                with gr.Row():
                    query_x = gr.Slider(0, 100, value=50, step=0.1, label="Query point: % from the left")
                    query_y = gr.Slider(0, 100, value=50, step=0.1, label="Query point: % from the top")
                model = gr.Dropdown(list(models), value=models[0], label="Model")
                model_info = gr.Markdown()
                method = gr.Dropdown(
                    [(text, name) for name, text in METHOD_LABELS.items()],
                    value=DEFAULT_METHOD,
                    label="Attribution method",
                )
                stage = gr.Radio(
                    [1, 2, 3, 4], value=start_stage(models[0]), label="Stage for the head grid (and Grad-CAM)"
                )
                run = gr.Button("Predict and explain", variant="primary")
            with gr.Column(scale=3):
                summary = gr.Markdown()
                top5 = gr.Label(num_top_classes=5, label="Top-5 classes")
                attribution = gr.Plot(label="Attribution")
        # Drawn below the examples (`.render()` at the end), so the examples sit next to the input.
        view = gr.Radio(
            [(text, name) for name, text in VIEW_LABELS.items()],
            value=DEFAULT_VIEW,
            label="The attention plots show",
            render=False,
        )
        stages = gr.Plot(label="Attention in each stage", render=False)
        heads = gr.Plot(label="Attention of each head in the chosen stage", render=False)

        inputs = [image, model, method, stage, view, query_x, query_y]
        outputs = [top5, picture, stages, heads, attribution, summary]
        attention_inputs = [image, model, stage, view, query_x, query_y]
        attention_outputs = [picture, stages, heads]
        # Every event that runs a model shares one concurrency group (`CONCURRENCY_LIMIT` at a time).
        # preprocess=False: the functions get the raw upload and check it themselves (`read_image`), so
        # a bad file gets a message that says what to do instead of a decoder traceback.
        run_model = dict(preprocess=False, concurrency_id="model")
        # `.input` fires on the visitor's own changes only, not when an example fills the inputs.
        on_input = dict(run_model, trigger_mode="always_last")  # clicking through: only the last one runs
        run.click(analyse, inputs, outputs, api_name="predict", **run_model)
        image.input(analyse_new_image, inputs, outputs, api_visibility="private", **on_input)
        # A click on an image moves the query point, then redraws the attention plots for it.
        for clicked in (image, picture):
            picked = clicked.select(
                pick_query, clicked, [query_x, query_y, view], api_visibility="private", preprocess=False
            )
            picked.then(
                show_attention, attention_inputs, attention_outputs, api_visibility="private", **run_model
            )
        gr.on(
            [query_x.input, query_y.input, view.input], show_attention, attention_inputs,
            attention_outputs, api_name="attention", **on_input,
        )  # fmt: skip
        stage.input(show_stage, inputs, [heads, attribution], api_visibility="private", **on_input)
        method.input(show_attribution, inputs[:4], attribution, api_name="attribution", **on_input)
        model.input(analyse_new_image, inputs, outputs, api_visibility="private", **on_input)
        model.change(describe_model, model, model_info, api_name="describe_model", **run_model)
        demo.load(describe_model, model, model_info, api_visibility="private", **run_model)
        if examples:  # the demo opens with an answer for its first example, not with empty plots
            demo.load(analyse_new_image, inputs, outputs, api_visibility="private", **run_model)
            # Grouped by kind, so a visitor sees which images each model can read before clicking; a
            # one-shape example chooses the shapes model that learned such images.
            for paths, label, row_model in _example_groups(examples, models):
                gr.Examples(
                    [example_row(p, row_model) for p in paths],
                    inputs=inputs,
                    outputs=outputs,
                    fn=analyse,
                    cache_examples=True,
                    cache_mode="lazy",  # computed on first click, then served to every visitor
                    preprocess=False,
                    examples_per_page=MAX_EXAMPLES,
                    visible_columns=[0],  # the images; the other columns are the defaults set above
                    label=label,
                )
        view.render()
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
    _sample_kinds()  # read the samples once now, not in the first visitor's request
    build_demo().launch(**LAUNCH_SETTINGS)


if __name__ == "__main__":
    main()
