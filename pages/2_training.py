"""Live training: train a small pyramid transformer and watch it learn, batch by batch."""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
import time
import uuid

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

import common
from hvit import demo

DATASETS = {
    "shapes": "Shapes (generated here, offline)",
    "mnist": "MNIST digits (downloads once, needs internet)",
    "fashion-mnist": "Fashion-MNIST (downloads once, needs internet)",
    "cifar10": "CIFAR-10 photos (downloads once, needs internet)",
    "zip": "Your own images (zip upload)",
}
LEARNING_RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]


def _run() -> demo.LiveTraining | None:
    return st.session_state.get("train_run")


def _session_id() -> str:
    return get_script_run_ctx().session_id


def _start() -> None:
    """Start button: a new run owned by this browser session joins the server's queue (any previous
    run of this session is stopped or leaves the queue)."""
    queue = demo.training_queue()
    previous = _run()
    if previous is not None and not previous.finished:
        queue.cancel(previous)
    dataset = st.session_state["train_dataset"]
    if dataset == "zip":
        dataset = st.session_state.get("train_zip_dataset")
    request = demo.TrainingRequest(
        dataset=dataset,
        preset=st.session_state["train_preset"],
        epochs=int(st.session_state["train_epochs"]),
        batch_size=int(st.session_state["train_batch"]),
        lr=float(st.session_state["train_lr"]),
        train_images=int(st.session_state["train_images"]),
        val_images=int(st.session_state["train_val_images"]),
        augment=st.session_state["train_augment"],
    )
    run = demo.LiveTraining(request)
    run.run_id = uuid.uuid4().hex[:12]
    try:
        queue.submit(run, _session_id())
    except demo.TrainingQueueFull as err:
        st.session_state["train_queue_error"] = str(err)
        return
    st.session_state.pop("train_queue_error", None)
    st.session_state["train_run"] = run
    st.session_state.pop("train_checkpoint", None)


def _stop() -> None:
    run = _run()
    if run is not None:
        demo.training_queue().cancel(run)


def _replace_upload(root: str | None) -> None:
    """This session's extracted zip is now ``root``: the previous one is deleted (unless a run reads it)."""
    previous = st.session_state.get("train_zip_root")
    if previous is not None and previous != root:
        demo.training_queue().release_upload(_session_id(), previous)
    if root is None:
        st.session_state.pop("train_zip_root", None)
        st.session_state.pop("train_zip_dataset", None)
    else:
        st.session_state["train_zip_root"] = root


def _use_model() -> None:
    run = _run()
    if run is None or run.model is None:
        return
    st.session_state["trained_model"] = {"model": run.model, "key": f"trained:{run.run_id}"}
    common.use_trained_model()


def _duration(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s" if seconds >= 60 else f"{seconds:.0f} s"


def _eta(seconds: float) -> str:
    return f"about {_duration(seconds)} left" if math.isfinite(seconds) else "estimating the time left"


# ----- settings ---------------------------------------------------------------------------------------

st.title("Live training")
st.caption(
    "Train a small pyramid transformer on this computer and watch it learn. Runs from every browser tab "
    "share one queue, first come first served, so each trains at full speed; closing the tab stops its run."
)
run = _run()
busy = run is not None and (run.running or run.waiting)

with st.container(border=True):
    c = st.columns([2.2, 1.3, 1, 1, 1], gap="medium")
    dataset = c[0].selectbox(
        "Data set", list(DATASETS), format_func=DATASETS.get, key="train_dataset", disabled=busy
    )
    c[1].selectbox(
        "Model preset",
        demo.TRAINING_PRESETS,
        key="train_preset",
        disabled=busy,
        help="Classroom models, small enough to train in a minute or two on a laptop CPU. hvit_nano_stem "
        "is hvit_nano after a small convolutional stem: train both on the same data to see how much faster "
        "a transformer learns when its tokens start from edges instead of raw pixels.",
    )
    c[2].number_input("Epochs", 1, 50, 3, key="train_epochs", disabled=busy)
    c[3].select_slider("Batch size", [16, 32, 64, 128], 64, key="train_batch", disabled=busy)
    c[4].select_slider(
        "Learning rate", LEARNING_RATES, 3e-3, key="train_lr", format_func=lambda v: f"{v:g}", disabled=busy
    )
    c = st.columns([2.2, 1.3, 2, 1], gap="medium", vertical_alignment="bottom")
    c[0].select_slider(
        "Training images per epoch",
        [60, 120, 300, 600, 1200, 2400, 6000],
        6000,
        key="train_images",
        disabled=busy,
        help="Shapes are generated in this number; larger data sets use a fixed random subset of this size.",
    )
    c[1].select_slider(
        "Validation images", [30, 60, 150, 300, 600], 150, key="train_val_images", disabled=busy
    )
    c[2].segmented_control(
        "Augmentation",
        ["none", "light", "strong"],
        default="none",
        key="train_augment",
        disabled=busy,
        help="light: small random shifts. strong: zoom, flip and colour changes (for photos). Shapes need "
        "none: every image already has its own position, size, rotation and colour.",
    )
    with c[3]:
        if busy:
            st.button(
                "Stop",
                key="train_stop",
                on_click=_stop,
                type="secondary",
                icon=":material/stop:",
                width="stretch",
            )
        else:
            ready = dataset != "zip" or st.session_state.get("train_zip_root") is not None
            st.button(
                "Start",
                key="train_start",
                on_click=_start,
                type="primary",
                icon=":material/play_arrow:",
                disabled=not ready,
                width="stretch",
            )

    if dataset == "zip":
        upload = st.file_uploader(
            "Zipped data set: train/<class name>/<image files> (optionally also val/<class name>/...)",
            type=["zip"],
            key="train_zip",
            disabled=busy,
            help=f"At most {demo.MAX_ZIP_BYTES // 2**20} MiB; at least two class folders.",
        )
        if upload is None:
            _replace_upload(None)
            st.session_state.pop("train_zip_digest", None)
            st.info("Upload a .zip with a train/ folder holding one folder of images per class.")
        else:
            data = upload.getvalue()
            digest = hashlib.sha256(data).hexdigest()
            if st.session_state.get("train_zip_digest") != digest:
                _replace_upload(None)
                folder = tempfile.mkdtemp(prefix="hvit-zip-")
                try:
                    root = demo.extract_dataset_zip(data, folder)
                    classes = demo.folder_classes(root)
                    demo.training_queue().track_upload(_session_id(), folder)
                except (demo.DatasetZipError, demo.TrainingQueueFull, FileNotFoundError, ValueError) as err:
                    shutil.rmtree(folder, ignore_errors=True)
                    st.session_state["train_zip_digest"] = digest
                    st.session_state["train_zip_error"] = str(err)
                else:
                    _replace_upload(folder)
                    st.session_state.update(train_zip_digest=digest, train_zip_dataset=str(root))
                    st.session_state["train_zip_classes"] = classes
                    st.session_state.pop("train_zip_error", None)
                st.rerun()  # the Start button above depends on the result
            if st.session_state.get("train_zip_error"):
                st.error(
                    f"This zip cannot be used: {st.session_state['train_zip_error']}",
                    icon=":material/folder_off:",
                )
            elif st.session_state.get("train_zip_root"):
                classes = st.session_state["train_zip_classes"]
                st.success(f"{upload.name}: {len(classes)} classes ({', '.join(classes[:8])}).")
    elif dataset != "shapes":
        st.caption(
            "This data set is downloaded on first use. Without internet the run stops with a message "
            "saying where to put the files; the shapes data set always works offline."
        )

if st.session_state.get("train_queue_error"):
    st.error(st.session_state["train_queue_error"], icon=":material/hourglass_disabled:")


# ----- while it trains (redrawn every second) ---------------------------------------------------------


def live_view() -> None:
    run = _run()
    if run is None:
        st.info(
            "Choose a data set and a preset, then press **Start**. Three epochs of shapes take about a minute."
        )
        return
    request = run.request
    if run.waiting:
        queue = demo.training_queue()
        place, wait = queue.position(run), queue.expected_wait(run)
        ahead = "you are next" if place == 1 else f"{place - 1} run{'s' if place > 2 else ''} ahead of yours"
        st.progress(
            0.0,
            text=f"Waiting for the training queue: place {place} ({ahead}) · expected wait "
            f"{_eta(wait).removeprefix('about ').removesuffix(' left')} · the server trains "
            f"{queue.max_jobs} run{'s' if queue.max_jobs > 1 else ''} at a time, each at full speed.",
        )
    elif run.running:
        p = run.progress()
        if run.phase == "preparing":
            st.progress(0.0, text="Preparing the data set and the model…")
        elif not p["step"]:
            st.progress(0.0, text=f"Epoch 1 of {request.epochs} · running the first batch…")
        else:
            st.progress(
                p["fraction"],
                text=f"Epoch {min(int(p['epoch']) + 1, request.epochs)} of {request.epochs} · "
                f"{p['images_per_sec']:.0f} images/s · {_eta(p['eta_seconds'])}",
            )
    elif run.phase == "failed":
        st.error(
            f"Training failed: {run.message}. Try the shapes data set, a smaller learning rate, or another preset.",
            icon=":material/error:",
        )
    elif run.phase == "stopped":
        st.warning(f"Training was stopped ({run.message}). The model keeps what it learned so far.")
    else:
        epochs_done = len(run.epochs)
        last = run.epochs[-1] if run.epochs else {}
        accuracy = f", validation accuracy {last['val_accuracy']:.0%}" if "val_accuracy" in last else ""
        # When and how long (the server's clock): a tab looked at again later still tells the run apart.
        ended = time.strftime("%H:%M:%S", time.localtime(run.ended_at))
        took = _duration(run.ended_at - run.started_at)
        st.success(
            f"Training completed at {ended}, after {took}: {epochs_done} epoch{'s' if epochs_done != 1 else ''}"
            f"{accuracy}.",
            icon=":material/check_circle:",
        )

    batches, epochs = run.logs()
    st.markdown("**Loss and accuracy**")
    if batches:
        st.plotly_chart(
            demo.training_curves_figure(batches, epochs),
            width="stretch",
            config={"displayModeBar": False},
            theme=None,
            key="train_curves",
        )
    else:
        st.caption("The curves appear after the first batch.")
    st.markdown(
        "**What the model looks at**: attention rollout of one validation image, before training and "
        "epoch by epoch"
    )
    snaps = list(run.snapshots)
    if snaps and run.snapshot_image is not None and run.snapshot_uniform is not None:
        st.plotly_chart(
            demo.snapshot_figure(snaps, run.snapshot_image, run.snapshot_uniform),
            width="stretch",
            config={"displayModeBar": False},
            theme=None,
            key="train_snapshots",
        )
        st.caption(
            "Brighter: the tokens the prediction draws on; 1 on the colour bar is a map spread evenly over "
            "the image. Before training the map is nearly even; as the model learns, it should gather on "
            "the shape."
        )
    else:
        st.caption("The snapshots appear when the data set is ready.")
    if run.finished and st.session_state.get("train_drawn_final") != run.run_id:
        st.session_state["train_drawn_final"] = run.run_id
        st.rerun()  # once: show the results below and the Start button


# Every redraw rebuilds two Plotly figures here and re-renders them in the browser, competing with the
# training thread for the CPU (and this process's GIL). Measured on a 2-core laptop-class CPU with the
# browser on the same machine, the default run (3 x 6000 shapes) took 120-148 s redrawing every second,
# 55 s every 2 s, 49 s every 3 s and 46 s with no page at all: every 2 s keeps the curves live at
# little cost.
st.fragment(run_every=2.0 if busy else None)(live_view)()


# ----- after training -------------------------------------------------------------------------------

if run is not None and run.finished and run.results is not None:
    st.divider()
    st.subheader("Results on the validation images")
    results = run.results
    left, right = st.columns([1, 1.2], gap="large")
    with left:
        st.markdown(f"**Confusion matrix** · accuracy {results['accuracy']:.1%}")
        st.plotly_chart(
            demo.confusion_figure(results["confusion"], run.class_names),
            width="stretch",
            config={"displayModeBar": False},
            theme=None,
            key="train_confusion",
        )
    with right:
        st.markdown("**Sample predictions**")
        samples = results["samples"]
        cols = st.columns(6)
        for i, image in enumerate(samples["images"]):
            true, pred = run.class_names[samples["labels"][i]], run.class_names[samples["predictions"][i]]
            mark = "✓" if true == pred else "✗"
            cols[i % 6].image(
                demo.enlarge(image, 96),
                caption=f"{mark} {pred} {samples['probabilities'][i]:.0%}"
                + ("" if true == pred else f" (is {true})"),
                width="stretch",
            )
    c = st.columns([1.4, 1.4, 3], vertical_alignment="center")
    if "train_checkpoint" not in st.session_state:
        st.session_state["train_checkpoint"] = run.checkpoint_bytes()
    name = run.request.dataset if run.request.dataset in DATASETS else "custom"
    c[0].download_button(
        "Download the checkpoint",
        st.session_state["train_checkpoint"],
        file_name=f"hvit_{run.request.preset}_{name}.safetensors",
        mime="application/octet-stream",
        icon=":material/download:",
        key="train_download",
        on_click="ignore",
        width="stretch",
    )
    in_use = common.model_in_use()
    using = in_use is not None and in_use.key == f"trained:{run.run_id}"
    c[1].button(
        "Using this model" if using else "Use this model everywhere",
        on_click=_use_model,
        disabled=using,
        type="primary",
        icon=":material/check:" if using else ":material/swap_horiz:",
        key="train_use",
        width="stretch",
    )
    c[2].caption(
        "The checkpoint holds the weights, the architecture and the preprocessing (input size, mean, std, "
        "class names): load it in the sidebar (upload), with `hvit.load_checkpoint`, or in the Gradio demo."
    )
