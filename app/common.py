"""What every page of the classroom app shares: the model in use, the image picker, cached loaders.

UI only. The work (building and loading models, reading images, attention, attributions, figures) is
done by `hvit`; this module decides where it is shown and keeps it per browser session:

- the model in use lives in ``st.session_state`` (one per session: a model trained in one browser
  never appears in another, and no session can change another's weights);
- ``st.cache_resource`` holds only things that never change (the list of sample images);
- ``st.cache_data`` caches computed results per input, keyed by a model key that names the weights
  (``shipped:<file>``, ``preset:<name>``, ``upload:<sha256>``, ``trained:<run id>``, ``imagenet``).
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import gc
import hashlib
import logging
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Imported here, once, before sessions run side by side: plotly and Streamlit import pandas lazily, and
# plotly takes it from sys.modules while another session's thread is still importing it ("partially
# initialized module 'pandas' has no attribute 'Series'": 6 of 8 students' attention pages failed at
# once in `python -m hvit.bench classroom --k 8`). An import inside this module's own import is finished
# before any other session gets past `import common`.
import pandas  # noqa: F401
import plotly.graph_objects  # noqa: F401 - every page draws with it: imported before the freeze below
import streamlit as st
from PIL import Image

# `streamlit run app/main.py` puts app/ on sys.path, not the repository root: this makes `import hvit`
# work even without the editable install that the README's set-up command performs.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import hvit  # noqa: E402
from hvit import demo  # noqa: E402
from hvit.demo.priority import lower_this_thread  # noqa: E402
from hvit.explain import default_cam_stage  # noqa: E402

# Where the model in use comes from. The keys are stable (tests and other pages use them).
SOURCES: dict[str, str] = {
    "shipped": "A shipped model (offline)",
    "trained": "Model trained on the training page",
    "preset": "A preset with random weights",
    "upload": "A checkpoint file you upload",
    "imagenet": "ImageNet pvt_v2_b0 (timm, needs internet)",
}
CHECKPOINT_TYPES = ["safetensors", "pt", "pth"]
# What the attention page computes before anyone asks (its form's defaults; `warm_up` uses the same).
DEFAULT_METHODS = ("saliency", "integrated_gradients", "grad_cam")
DEFAULT_IG_STEPS = 32
DEFAULT_NOISE_SAMPLES = 16
logger = logging.getLogger("hvit.app")
PAGE_ICON = Path(__file__).resolve().parent / "icon.png"  # a token pyramid: 4x4, 2x2, 1x1
SCORE_COLUMNS = {
    "pointing game": st.column_config.NumberColumn(
        format="%.2f", help="1: the map's maximum is on the object"
    ),
    "mask mass": st.column_config.ProgressColumn(
        format="percent", min_value=0.0, max_value=1.0, help="Share of the map's positive mass on the object"
    ),
    "chance": st.column_config.NumberColumn(format="percent", help="The object's share of the image"),
}


@dataclass
class ModelInUse:
    """The model every page works with, and how to name it.

    Attributes:
        model: the network, in eval mode.
        key: names the weights, for caching results (same key: same weights).
        label: one line for the UI.
        source: a key of `SOURCES`.
    """

    model: hvit.HierarchialViT
    key: str
    label: str
    source: str

    @property
    def class_names(self) -> list[str]:
        names = self.model.preprocessing.class_names
        return list(names) if names else [f"class {i}" for i in range(self.model.num_classes)]


def setup_page() -> None:
    """Page settings shared by every page; call first, once per run (done by ``app/navigation.py``)."""
    st.set_page_config(
        page_title="hvit classroom",
        page_icon=str(PAGE_ICON),  # a local file: a Material or emoji icon is fetched from the internet
        layout="wide",
        initial_sidebar_state="expanded",
    )
    # Slightly tighter top padding: a laptop screen at 1366x768 shows more of each page.
    st.html(
        "<style>"
        "[data-testid='stMainBlockContainer']{padding:2.5rem 3rem 3rem 3rem}"
        "[data-testid='stMain'] h1{font-size:2.3rem;padding-top:0}"
        "</style>"
    )


# Everything imported by now (torch, plotly, streamlit, hvit: ~450,000 objects) lives as long as the
# server. Freezing it once, here (this module is imported once per server), takes it out of Python's
# cyclic garbage collector, whose full collections would otherwise walk it all (0.5 s each on two
# cores) at random moments during a click. With `runner.postScriptGC = false` in
# .streamlit/config.toml (no forced full collection after every script run), a click pays only for the
# objects it makes.
gc.freeze()


# ---------------------------------------------------------------------------------------------------
# The model in use (sidebar)
# ---------------------------------------------------------------------------------------------------


def _set_model(model: hvit.HierarchialViT, key: str, label: str, source: str) -> ModelInUse:
    model.eval()
    st.session_state["model_in_use"] = ModelInUse(model, key, label, source)
    st.session_state.pop("model_error", None)
    return st.session_state["model_in_use"]


def _fail(key: str, message: str, hint: bool = False) -> None:
    """Record why the chosen model is unavailable; ``hint``: a next step to take, not a failure."""
    st.session_state.pop("model_in_use", None)
    st.session_state["model_error"] = (key, message, hint)


def _describe(model: hvit.HierarchialViT) -> str:
    cfg, pre = model.config, model.preprocessing
    classes = pre.class_names
    what = f"{len(classes)} classes" if classes else f"{cfg.num_classes} outputs"
    params = sum(p.numel() for p in model.parameters())
    return (
        f"{getattr(model, 'variant', 'custom')}, {pre.img_size} px, {what}, {params / 1e6:.2f} M parameters"
    )


def _load(key: str, label: str, source: str, build: Any, spinner: str) -> None:
    """Build the model behind ``key`` unless it is already the one in use (or already failed)."""
    current = st.session_state.get("model_in_use")
    if current is not None and current.key == key:
        return
    failed = st.session_state.get("model_error")
    if failed is not None and failed[0] == key:
        return
    try:
        with st.spinner(spinner):
            model = build()
    except hvit.PretrainedUnavailableError as err:
        _fail(key, f"{err}")
        return
    except (FileNotFoundError, ValueError, RuntimeError, OSError, KeyError) as err:
        _fail(key, f"{label} could not be loaded: {err}")
        return
    _set_model(model, key, f"{label}: {_describe(model)}", source)


def use_trained_model() -> None:
    """Callback of the training page's "use this model" button: switch every page to that model."""
    st.session_state["model_source"] = "trained"


def _shipped_name(label: str) -> str:
    """A shipped model's label without what the sidebar already says ("Classroom model, 96 px"), so it
    fits the sidebar's width."""
    short = label.removeprefix("Shipped ").removesuffix(" (offline)")
    return short[:1].upper() + short[1:]


def model_sidebar() -> ModelInUse | None:
    """Render the model chooser in the sidebar and load the chosen model into the session.

    Returns:
        The model in use, or ``None`` when the chosen one is unavailable (the sidebar says why).
    """
    with st.sidebar:
        st.markdown("#### Model in use")
        source = st.radio(
            "Model",
            list(SOURCES),
            format_func=SOURCES.get,
            key="model_source",
            label_visibility="collapsed",
            help="Chosen once here, used by every page of this browser tab.",
        )
        if source == "shipped":
            label = st.selectbox(
                "Shipped model",
                list(demo.SHIPPED_MODELS),
                format_func=_shipped_name,
                key="model_shipped",
                help="The classroom model (96 px) has maps fine enough to read on a projector; the 32 px "
                "shapes model is the fast one live training reproduces.",
            )
            name = demo.SHIPPED_MODELS[label]
            try:
                path = demo.shipped_checkpoint(name)
            except FileNotFoundError as err:
                _fail(f"shipped:{name}", f"{err}")
            else:
                _load(
                    _shipped_key(path),
                    label.removesuffix(" (offline)"),
                    source,
                    lambda: shipped_model(name),
                    "Loading…",
                )
        elif source == "trained":
            trained = st.session_state.get("trained_model")
            if trained is None:
                _fail(
                    "trained",
                    "No model has been trained in this session yet: train one on the Live training page.",
                    True,
                )
            else:
                _load(trained["key"], "Trained in this session", source, lambda: trained["model"], "Loading…")
        elif source == "preset":
            names = hvit.list_models()
            name = st.selectbox("Preset", names, index=names.index("hvit_nano"), key="model_preset")
            _load(
                f"preset:{name}",
                f"{name} (random weights)",
                source,
                lambda: _random_preset(name),
                f"Building {name}…",
            )
        elif source == "upload":
            upload = st.file_uploader(
                "Checkpoint (.safetensors from the training page or `hvit.save_checkpoint`)",
                type=CHECKPOINT_TYPES,
                key="model_upload",
            )
            if upload is None:
                _fail("upload", "Upload a checkpoint file above to use it.", True)
            else:
                data = upload.getvalue()
                digest = hashlib.sha256(data).hexdigest()[:16]
                _load(
                    f"upload:{digest}",
                    f"Uploaded {upload.name}",
                    source,
                    lambda: _checkpoint_from_bytes(data, upload.name),
                    "Reading the checkpoint…",
                )
        elif source == "imagenet":
            st.caption("Downloads timm's ImageNet weights once (about 15 MB), then works from the cache.")
            _load(
                "imagenet",
                "ImageNet pvt_v2_b0",
                source,
                lambda: demo.load_model_choice(demo.IMAGENET),
                "Fetching…",
            )
            failed = st.session_state.get("model_error")
            if (
                failed is not None
                and failed[0] == "imagenet"
                and st.button("Try again", key="imagenet_retry")
            ):
                st.session_state.pop("model_error", None)
                st.rerun()

        in_use = st.session_state.get("model_in_use")
        error = st.session_state.get("model_error")
        if in_use is not None and in_use.source == source:
            st.caption(in_use.label)
            return in_use
        if error is not None:
            if source == "imagenet":
                st.error(
                    "ImageNet weights are unavailable: this computer cannot reach the Hugging Face Hub and "
                    "has no cached copy. Connect to the internet once, or choose a shipped model.",
                    icon=":material/cloud_off:",
                )
                with st.expander("Details"):
                    st.caption(error[1])
            elif error[2]:
                st.info(error[1])
            else:
                st.error(error[1])
        return None


def _shipped_key(path: Path) -> str:
    return f"shipped:{path.name}"


@st.cache_resource(show_spinner=False)
def _shipped_original(name: str) -> hvit.HierarchialViT:
    """A shipped model as read from disk, once per server; only ever copied (`shipped_model`)."""
    return demo.load_shipped_model(name)


def shipped_model(name: str) -> hvit.HierarchialViT:
    """A session's own copy of a shipped model (a name of `hvit.demo.SHIPPED_MODELS`'s values).

    The file is read once per server; each session gets a copy (milliseconds), because recording
    attention or switching heads off sets state on the modules, which must never reach another
    session's forward pass running at the same time.

    Raises:
        FileNotFoundError: no such shipped model, or its file is missing (the message says what to do).
    """
    return copy.deepcopy(_shipped_original(name))


def load_default_model() -> ModelInUse:
    """The model the sidebar starts with (the first shipped model), read into the server's cache.

    ``app/main.py`` calls it before the server answers, so the first page finds the model loaded; the
    result, with the key the sessions use for it, is what the warm-up starts from.

    Raises:
        FileNotFoundError: the shipped file is missing (the message says what to do).
    """
    name = demo.SHIPPED_MODELS[demo.SHIPPED]
    return ModelInUse(
        shipped_model(name), _shipped_key(demo.shipped_checkpoint(name)), demo.SHIPPED, "shipped"
    )


def _random_preset(name: str) -> hvit.HierarchialViT:
    """A preset with random weights, the same in every session (seeded)."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return hvit.create_model(name)


def _checkpoint_from_bytes(data: bytes, name: str) -> hvit.HierarchialViT:
    suffix = Path(name).suffix.lower() or ".safetensors"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            return hvit.load_checkpoint(path)
        except Exception as err:  # any unreadable file: say what would work instead of a traceback
            raise ValueError(
                f"{name!r} is not an hvit checkpoint ({type(err).__name__}: {err}). Upload a .safetensors "
                "file downloaded from the training page or written by `hvit.save_checkpoint`."
            ) from err


def model_in_use() -> ModelInUse | None:
    """The model chosen in the sidebar for this session (``None`` when unavailable)."""
    return st.session_state.get("model_in_use")


def require_model() -> ModelInUse:
    """The model in use; otherwise explain how to get one and stop the page."""
    in_use = model_in_use()
    if in_use is None:
        st.info("Choose a model in the sidebar to use this page: the shipped models work offline.")
        st.stop()
    return in_use


# ---------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------


@dataclass
class PickedImage:
    """An image chosen by the user, with its ground-truth mask when it has one.

    Attributes:
        image: RGB image.
        mask: (H, W) bool mask of the object, or ``None``.
        name: short description for captions.
        key: names the pixels, for caching.
        label: true class name when known.
        kind: what the image is (`hvit.demo.image_kind`: "shapes", "photo"), None for an upload.
    """

    image: Image.Image
    mask: np.ndarray | None
    name: str
    key: str
    label: str | None = None
    kind: str | None = None


@st.cache_resource
def sample_paths() -> list[Path]:
    """The sample images shipped in ``hvit/assets/``, in `SAMPLE_GROUPS` order (never changes while the app runs)."""
    return demo.sample_images()  # shapes-pair scenes, one-shape images, then photographs


# Both shapes sets name their images alike (circle/test_00000): the picker says which set each is from.
_SAMPLE_KINDS = {demo.SHAPES_PAIR_IMAGE: "two shapes", demo.SHAPES_IMAGE: "one shape"}


def _sample_name(path: Path) -> str:
    """How the sample picker lists a sample: "two shapes: star/test_00004", "photos/astronaut"."""
    kind = _SAMPLE_KINDS.get(demo.image_kind(path))
    return f"{kind}: {path.parent.name}/{path.stem}" if kind else f"{path.parent.name}/{path.stem}"


def _image_key(image: Image.Image) -> str:
    return hashlib.sha256(image.tobytes() + str(image.size).encode()).hexdigest()[:16]


def image_picker(prefix: str, in_use: ModelInUse | None = None, on_pick: Any = None) -> PickedImage | None:
    """Widgets to choose an image: a shipped sample, an upload, or an image of the shapes data set.

    Args:
        prefix: widget-key prefix, so two pages keep their own choices.
        in_use: the model in use (the shapes data set is drawn at its input size).
        on_pick: called when an image is chosen (a sample, a shapes number, an upload), e.g. to close
            the popover holding the picker.

    Returns:
        The image, or ``None`` when none is chosen yet (the widgets say why).
    """
    kinds = {"sample": "Samples", "shapes": "Shapes set", "upload": "Upload"}
    kind = st.segmented_control(
        "Image source",
        list(kinds),
        format_func=kinds.get,
        default="sample",
        key=f"{prefix}_image_source",
        help="Samples: shipped shape scenes (with masks) and photos, the model's own kind first. Shapes "
        "set: any image of the generated test set the model learned, with its ground-truth mask. Upload: "
        "your own image.",
    )
    if kind is None:
        kind = "sample"
    if kind == "sample":
        # the model's own domain first: the default image is one the model can answer for
        paths = (
            demo.samples_for(demo.model_domain(in_use.model), sample_paths()) if in_use else sample_paths()
        )
        if not paths:
            st.error("No sample images were found in hvit/assets/; reinstall hvit or upload an image.")
            return None
        path = st.selectbox(
            "Sample",
            paths,
            format_func=_sample_name,
            key=f"{prefix}_sample",
            on_change=on_pick,
        )
        try:
            image = demo.load_image(path)
        except demo.ImageInputError as err:
            st.error(f"{err}")
            return None
        mask = demo.sample_mask(path)
        return PickedImage(
            image,
            mask,
            path.stem,
            f"sample:{path.parent.name}/{path.name}",
            demo.sample_label(path),
            demo.image_kind(path),
        )
    if kind == "shapes":
        index = st.number_input(
            "Image number (test split)", 0, 9999, 0, key=f"{prefix}_shapes_index", on_change=on_pick
        )
        # drawn as the model learned it: at its input size, one shape or a pair scene
        size = in_use.model.preprocessing.img_size if in_use is not None else 64
        scene = demo.model_domain(in_use.model).shapes_scene if in_use is not None else "single"
        image, label, mask = demo.shapes_example(int(index), max(size, 32), scene=scene)
        pair = scene == "pair"
        return PickedImage(
            image,
            mask,
            f"shapes{'-pair' if pair else ''} test #{index}",
            f"shapes:{scene}:{index}:{size}",
            label,
            demo.SHAPES_PAIR_IMAGE if pair else demo.SHAPES_IMAGE,
        )
    upload = st.file_uploader(
        "Image", type=[s.lstrip(".") for s in demo.IMAGE_SUFFIXES], key=f"{prefix}_upload", on_change=on_pick
    )
    if upload is None:
        st.info("Upload a PNG, JPEG, BMP, GIF, WebP or TIFF image (up to 10 MiB).")
        return None
    try:
        image = demo.load_image(upload.getvalue(), name=upload.name)
    except demo.ImageInputError as err:
        st.error(f"{err}")
        return None
    return PickedImage(image, None, upload.name, f"upload:{_image_key(image)}")


def domain_note(in_use: ModelInUse, picked: PickedImage, container: Any = st) -> None:
    """Beside a prediction: what the model learned, and a visible note when the image lies outside it."""
    domain = demo.model_domain(in_use.model)
    container.caption(domain.summary())
    note = demo.domain_note(domain, picked.kind)
    if note is not None:
        show = container.warning if note.level == "warning" else container.info
        show(note.text, icon=":material/warning:" if note.level == "warning" else ":material/info:")


def head_selectbox(
    n_heads: int, key: str, container: Any = st, mean_label: str = "mean of all heads"
) -> int | None:
    """A head picker: "mean of all heads" (returns None) or one head (returns its index).

    A head chosen for a stage with more heads is reset to the mean first, so switching to a stage with
    fewer heads never leaves the widget holding an index that no longer exists.
    """
    if st.session_state.get(key, -1) >= n_heads:
        st.session_state[key] = -1
    head = container.selectbox(
        "Head",
        [-1, *range(n_heads)],
        format_func=lambda h: mean_label if h < 0 else f"head {h + 1}",
        key=key,
    )
    return None if head < 0 else head


def show_errors_as_messages(err: Exception, what: str) -> None:
    """One consistent message for a failure the user can act on."""
    st.error(f"{what}: {err}", icon=":material/error:")


# ---------------------------------------------------------------------------------------------------
# Cached computations. Arguments starting with "_" are not hashed: the model and the image are
# identified by their keys (see the module docstring), so a cached result is reused only for the same
# weights and the same pixels.
# ---------------------------------------------------------------------------------------------------


@st.cache_data(max_entries=24, show_spinner=False)
def attention_views(_model: hvit.HierarchialViT, model_key: str, _image: Image.Image, image_key: str) -> Any:
    """`hvit.explain.views` of one image (one forward pass with attention recorded)."""
    from hvit.explain import attention_views as views

    return views(_model, _image)


@st.cache_data(max_entries=24, show_spinner=False)
def prediction(
    _model: hvit.HierarchialViT, model_key: str, _image: Image.Image, image_key: str
) -> demo.Prediction:
    return demo.predict(_model, _image, k=5)


@st.cache_data(max_entries=24, show_spinner=False)
def rollout_maps(
    _model: hvit.HierarchialViT,
    model_key: str,
    _image: Image.Image,
    image_key: str,
    head_fusion: str = "mean",
    on: str = "image",
) -> list:
    """Attention rollout of every stage: one (S, S) map per stage painted on the input, or with
    ``on="tokens"`` one `TokenMap` per stage (what the figures draw, one cell per stage-1 token)."""
    from hvit.explain import attention_rollout

    roll = attention_rollout(_model, _image, head_fusion=head_fusion)
    if on == "tokens":
        return [roll.token_map(s) for s in range(len(roll.maps))]
    return [roll.to_image(s)[0].numpy() for s in range(len(roll.maps))]


@st.cache_data(max_entries=24, show_spinner=False)
def head_stats(
    _model: hvit.HierarchialViT, model_key: str, _image: Image.Image, image_key: str
) -> list[dict]:
    """Mean attention distance and entropy per (stage, head), averaged over blocks."""
    from hvit.explain.head_stats import head_statistics, summarize_by_stage

    return summarize_by_stage(head_statistics(_model, _image))


def attribution(
    _model: hvit.HierarchialViT,
    model_key: str,
    _image: Image.Image,
    image_key: str,
    method: str,
    target: int,
    stage: int,
    settings: tuple,
) -> dict:
    """One Captum method's map of one image: ``map`` (S, S), ``signed``, ``note``, ``delta``.

    ``stage`` (Grad-CAM's stage) is ignored by the other methods, so it is left out of their cache key:
    the lesson and the attention page then share one integrated-gradients map.
    """
    return _attribution(
        _model, model_key, _image, image_key, method, target, stage if method == "grad_cam" else -1, settings
    )


@st.cache_data(max_entries=64, show_spinner=False)
def _attribution(
    _model: hvit.HierarchialViT,
    model_key: str,
    _image: Image.Image,
    image_key: str,
    method: str,
    target: int,
    stage: int,
    settings: tuple,
) -> dict:
    from hvit.explain import AttributionSettings, compute_attribution

    result = compute_attribution(_model, _image, target, method, stage, AttributionSettings(*settings))
    delta = None if result.convergence_delta is None else float(result.convergence_delta[0])
    return {"map": result.map[0].numpy(), "signed": result.signed, "note": result.note, "delta": delta}


@st.cache_data(max_entries=16, show_spinner=False)
def randomisation(
    _model: hvit.HierarchialViT,
    model_key: str,
    _image: Image.Image,
    image_key: str,
    _maps: dict,
    methods: tuple[str, ...],
    target: int,
    stage: int,
    settings: tuple,
) -> tuple[dict, dict]:
    from hvit.explain import AttributionSettings

    return demo.randomisation_check(
        _model, _image, _maps, methods, target, stage, AttributionSettings(*settings)
    )


@st.cache_data(max_entries=64, show_spinner=False)
def ablation(
    _model: hvit.HierarchialViT,
    model_key: str,
    _image: Image.Image,
    image_key: str,
    stage: int,
    head: int,
    target: int,
) -> dict:
    from hvit.explain import head_ablation

    return head_ablation(_model, _image, stage, head, None, target).to_dict()


@st.cache_data(max_entries=16, show_spinner=False)
def ablation_scan(
    _model: hvit.HierarchialViT, model_key: str, _image: Image.Image, image_key: str, target: int
) -> list[dict]:
    from hvit.explain import head_ablation_scan

    return [r.to_dict() for r in head_ablation_scan(_model, _image, target)]


@st.cache_data(max_entries=8, show_spinner=False)
def complexity_report(_model: hvit.HierarchialViT, model_key: str) -> Any:
    return hvit.model_complexity(_model)


def attribution_settings(steps: int = DEFAULT_IG_STEPS, samples: int = DEFAULT_NOISE_SAMPLES) -> tuple:
    """The attribution settings as the cached functions take them (a hashable tuple)."""
    from hvit.explain import AttributionSettings

    return dataclasses.astuple(
        AttributionSettings(n_steps=int(steps), nt_samples=int(samples), shap_samples=int(samples))
    )


# ---------------------------------------------------------------------------------------------------
# Work started before it is asked for
# ---------------------------------------------------------------------------------------------------

_warmed: set[str] = set()
_warm_lock = threading.Lock()
_warm_stop = threading.Event()
_warm_threads: list[threading.Thread] = []
# Background work begins once the server has answered its first page: that page is what someone is
# waiting for, and work beside it holds the GIL part of the time (a first load of the home page took
# 3.5-3.8 s with the imports or the warm-up running, 2.5 s without, on two cores with the browser).
_first_page_served = threading.Event()
FIRST_PAGE_WAIT_S = 10.0  # the most the background work waits for a first visitor


def page_served() -> None:
    """Called after every script run (``app/navigation.py``): from now on, work in the background."""
    _first_page_served.set()


def _after_first_page(work: Any) -> Any:
    """``work`` wrapped to wait for `page_served` (or `FIRST_PAGE_WAIT_S`), unless the server stops."""

    def run() -> None:
        _first_page_served.wait(FIRST_PAGE_WAIT_S)
        if not _warm_stop.is_set():
            work()

    return run


@atexit.register
def stop_warm_up() -> None:
    """At server exit, let a warm-up finish its current step instead of dying inside torch (which
    aborts the process: "terminate called without an active exception"). Called by the server's
    shutdown (``app/main.py``) and, for servers that do not run it, at interpreter exit."""
    _warm_stop.set()
    _first_page_served.set()  # wakes the threads still waiting for it: they see the stop and end
    for thread in _warm_threads:
        thread.join(timeout=10)


def import_in_background() -> threading.Thread:
    """Import, in a thread, the heavy modules the server starts without: the pages import them on
    first use (torchvision for every prediction's preprocessing, about 3 s; Captum for attributions).

    Called by ``app/main.py`` once the model is loaded, so the server answers without waiting for them;
    the thread starts once the first page is served (see `page_served`), and a page that needs them
    finds them imported, or half-way. The thread keeps the normal
    priority, unlike the warm-up: a page that needs a module being imported waits for this thread.
    Everything is then frozen, like this module's own imports (see `gc.freeze` above). ``HVIT_WARM_UP=0``
    does not turn it off: the first prediction imports the same, and nothing is computed.

    Returns:
        The started thread.
    """

    def _import() -> None:
        import captum.attr  # noqa: F401
        import torchvision.transforms.v2  # noqa: F401

        import hvit.explain.figures  # noqa: F401
        import hvit.explain.views  # noqa: F401

        gc.freeze()

    thread = threading.Thread(target=_after_first_page(_import), name="hvit-imports", daemon=True)
    thread.start()
    return thread


def warm_up(in_use: ModelInUse) -> None:
    """Compute, in a background thread, what the pages show for the model's own sample images.

    A class opens the same pages on the same samples: the first to ask should not wait for the model,
    and a click on "another sample" should find its maps ready. Once per model key per server, the
    thread fills the same caches the pages read (same functions, same arguments), sample by sample in
    the order the picker lists them: prediction, attention views, rollout, head statistics, the
    attention page's default attributions and the lesson's randomisation check. It starts once the
    server has answered its first page (`page_served`) and runs at the lowest CPU priority with one
    torch thread, so a click that needs the CPU gets it first. Set ``HVIT_WARM_UP=0`` to turn it off.
    """
    if os.environ.get("HVIT_WARM_UP", "1") == "0":
        return
    with _warm_lock:
        if in_use.key in _warmed:
            return
        _warmed.add(in_use.key)
    # The thread works on its own copy, as every session does (see `shipped_model`).
    own = dataclasses.replace(in_use, model=copy.deepcopy(in_use.model))
    thread = threading.Thread(
        target=_after_first_page(lambda: _warm(own)), name=f"hvit-warm-up {in_use.key}", daemon=True
    )
    _warm_threads.append(thread)
    thread.start()


def _warm(in_use: ModelInUse, max_images: int | None = None) -> None:
    """The warm-up itself (`warm_up` runs it in a thread): ``max_images`` samples at most."""
    import torch

    lower_this_thread(19)  # the lowest priority, for this thread only: a click gets the CPU first
    torch.set_num_threads(1)  # this thread's OpenMP team: leave the other core to the pages
    model, key = in_use.model, in_use.key
    settings = attribution_settings()
    cam_stage = default_cam_stage(model.config)
    domain = demo.model_domain(model)
    paths = [p for p in demo.samples_for(domain, sample_paths()) if demo.image_kind(p) in domain.image_kinds]
    try:
        for path in paths[:max_images]:
            if _warm_stop.is_set():
                return
            image = demo.load_image(path)
            ikey = f"sample:{path.parent.name}/{path.name}"
            target = prediction(model, key, image, ikey).class_index[0]
            attention_views(model, key, image, ikey)
            rollout_maps(model, key, image, ikey, on="tokens")
            head_stats(model, key, image, ikey)
            maps = {}
            for method in DEFAULT_METHODS:  # the slow steps: check for the server's exit between them
                if _warm_stop.is_set():
                    return
                maps[method] = attribution(model, key, image, ikey, method, target, cam_stage, settings)[
                    "map"
                ]
            if _warm_stop.is_set():
                return
            ig = {"integrated_gradients": maps["integrated_gradients"]}
            randomisation(model, key, image, ikey, ig, ("integrated_gradients",), target, -1, settings)
    except Exception:  # a cache left cold is only slower; the page computes it and shows any error
        logger.warning("warm-up of %s stopped", key, exc_info=True)
