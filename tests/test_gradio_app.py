"""The Gradio demo: its event functions called directly, then the launched app driven by gradio_client.

Everything runs on CPU and offline. The server tests launch on 127.0.0.1 on a free port and close it.
"""

from __future__ import annotations

import base64
import csv
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from PIL import Image

import hvit.assets
from hvit import demo as core
from hvit.data import build_transforms

from helpers import png_header_only

REPO = Path(__file__).resolve().parent.parent
APP_FILE = REPO / "app" / "gradio_app.py"


def _load_app():
    """Import app/gradio_app.py the way a Space runs it: a file, not a package module."""
    spec = importlib.util.spec_from_file_location("gradio_app", APP_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gradio_app"] = module
    spec.loader.exec_module(module)
    return module


ga = _load_app()


# The model every test uses: the shipped one, as a visitor of the Space gets it.
MODEL = core.SHIPPED
FAST = "grad_cam"  # one backward pass: for tests where the attribution method does not matter


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread_per_request():
    """As `main()` sets it for the app's process; restored afterwards for the other test files."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> list[Path]:
    """The app's example images (shapes, then photos); generated shapes when none are shipped yet."""
    shipped = ga.example_images()
    if len(shipped) >= 6:
        return shipped
    from hvit.data import render_shape

    folder = tmp_path_factory.mktemp("samples")
    paths = []
    for i in range(6):
        pixels, _, _ = render_shape(i, img_size=64, split="demo")
        paths.append(folder / f"shape_{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return shipped + paths


@pytest.fixture(scope="module")
def model():
    with ga.MODELS.borrow(MODEL) as m:
        yield m


# --- event functions, called directly ---------------------------------------------------------------


def test_analyse_gives_the_models_top5_for_each_sample(samples, model):
    for path in samples[:3] + samples[-1:]:  # shapes, and a photo when there is one
        top, *_, summary = ga.analyse(str(path), MODEL, FAST, 1)
        # Computed here, independently of the app's code: the model's own softmax over its classes.
        with Image.open(path) as img:
            x = build_transforms(model.preprocessing, train=False)(img.convert("RGB")).unsqueeze(0)
        with torch.no_grad():
            probs = model(x).softmax(-1)[0]
        best = probs.argsort(descending=True)[:5].tolist()
        names = model.preprocessing.class_names
        assert list(top) == [names[i] for i in best]
        np.testing.assert_allclose(list(top.values()), probs[best].numpy(), rtol=1e-5)
        assert len(top) == min(5, model.config.num_classes)
        assert list(top.values()) == sorted(top.values(), reverse=True) and sum(top.values()) <= 1 + 1e-6
        assert names[best[0]] in summary


def _heatmaps(fig: go.Figure) -> list:
    return [t for t in fig.data if isinstance(t, go.Heatmap)]


def test_analyse_draws_every_stage_every_head_and_the_attribution_of_the_top_class(samples, model):
    size = model.preprocessing.img_size
    for stage in (1, len(model.stages)):
        top, _, stages_fig, heads_fig, attribution_fig, _ = ga.analyse(
            str(samples[0]), MODEL, "saliency", stage
        )
        stage_maps = _heatmaps(stages_fig)
        assert len(stage_maps) == len(model.stages)  # one panel per stage, over the image the model saw
        # one cell per token of each stage's grid, reaching exactly across the image
        strides = [info["reduction"] for info in model.feature_info]
        assert [np.asarray(t.z).shape for t in stage_maps] == [(size // r, size // r) for r in strides]
        assert all(
            (t.x[0], t.x[-1], t.y[0], t.y[-1]) == (-0.5, size - 0.5, -0.5, size - 0.5) for t in stage_maps
        )
        assert sum(isinstance(t, go.Image) for t in stages_fig.data) == len(model.stages)
        assert len(_heatmaps(heads_fig)) == model.config.num_heads[stage - 1]
        assert f"Stage {stage}" in heads_fig.layout.title.text
        (attr,) = _heatmaps(attribution_fig)
        assert np.asarray(attr.z).shape == (size, size) and np.abs(np.asarray(attr.z)).sum() > 0
        assert repr(next(iter(top))) in attribution_fig.layout.title.text  # explains the top class


@pytest.mark.parametrize("method", sorted(ga.METHOD_LABELS))
def test_every_attribution_method_gives_a_map(samples, model, method):
    fig = ga.show_attribution(str(samples[1]), MODEL, method, 2)
    (attr,) = _heatmaps(fig)
    z = np.asarray(attr.z, dtype=float)
    assert z.shape == (model.preprocessing.img_size,) * 2 and np.isfinite(z).all()
    if method in {"integrated_gradients", "input_x_gradient", "gradient_shap", "occlusion"}:
        assert attr.zmid == 0 and attr.zmin == -attr.zmax  # signed: diverging scale centred on zero
    if method == "occlusion":  # the demo's cheaper occlusion: each square of an 8x8 grid hidden once
        side = model.preprocessing.img_size // ga.OCCLUSION_GRID
        blocks = z.reshape(ga.OCCLUSION_GRID, side, ga.OCCLUSION_GRID, side)
        assert np.ptp(blocks, axis=(1, 3)).max() < 1e-6 * np.abs(z).max()  # one value per square
        assert len(np.unique(blocks[:, 0, :, 0])) > 1  # and the squares differ
        assert f"({ga.OCCLUSION_GRID**2} passes)" in ga.METHOD_LABELS[method]


# --- what the attention plots show: the query point, rollout, colours against uniform ----------------


def _select(x: int, y: int) -> gr.SelectData:
    """The event data of a click on pixel (x, y) of an image, as Gradio passes it."""
    return gr.SelectData(None, {"index": [x, y], "value": None, "selected": True})


def test_a_click_gives_the_query_point_in_per_cent_and_switches_to_the_query_view(samples):
    width, height = Image.open(samples[0]).size
    assert ga.pick_query(str(samples[0]), _select(0, height - 1)) == (
        round(50 / width, 1),
        round(100 * (height - 0.5) / height, 1),
        "query",
    )
    with pytest.raises(gr.Error, match="query_x must be a number from 0 to 100"):
        ga.analyse(str(samples[0]), MODEL, FAST, 1, "query", 101, 50)
    with pytest.raises(gr.Error, match="Unknown view 'heads'"):
        ga.show_attention(str(samples[0]), MODEL, 1, "heads", 50, 50)


def _rects(fig: go.Figure) -> list[tuple[float, float, float, float]]:
    return [(s.x0, s.y0, s.x1, s.y1) for s in fig.layout.shapes]


def test_the_query_point_is_outlined_on_every_panel_with_its_stages_token(samples, model):
    from hvit.explain.geometry import stage_strides

    strides = stage_strides(model)
    size = model.preprocessing.img_size
    picture, stages_fig, heads_fig = ga.show_attention(str(samples[0]), MODEL, 2, "query", 0, 100)
    # Bottom-left corner: each stage's token there is one stride wide, ending at the image's edge.
    assert _rects(stages_fig) == [(-0.5, size - st - 0.5, st - 0.5, size - 0.5) for st in strides]
    assert _rects(heads_fig) == [(-0.5, size - strides[1] - 0.5, strides[1] - 0.5, size - 0.5)] * len(
        _heatmaps(heads_fig)
    )
    assert "where the query looks" in heads_fig.layout.title.text
    # The model's view is enlarged by a whole factor to at least PICTURE_SIDE, and marked.
    factor = -(-ga.PICTURE_SIDE // size)
    assert picture.shape == (size * factor, size * factor, 3) and picture.dtype == np.uint8
    plain = ga.show_attention(str(samples[0]), MODEL, 2, "received", 50, 50)[0]
    assert not np.array_equal(picture, plain)  # the mark moved with the query


def test_another_query_point_changes_where_the_stages_look(samples, model):
    top_left = ga.show_attention(str(samples[0]), MODEL, 1, "query", 5, 5)[1]
    bottom_right = ga.show_attention(str(samples[0]), MODEL, 1, "query", 95, 95)[1]
    first = [np.asarray(t.z) for t in _heatmaps(top_left)]
    second = [np.asarray(t.z) for t in _heatmaps(bottom_right)]
    assert any(not np.allclose(a, b) for a, b in zip(first, second, strict=True))
    received = ga.show_attention(str(samples[0]), MODEL, 1, "received", 5, 5)[1]
    assert not received.layout.shapes  # attention received has no query point to outline


@pytest.mark.parametrize("view", sorted(ga.VIEW_LABELS))
def test_stage_panels_are_drawn_against_uniform(samples, model, view):
    """Rollout: one colour bar for every stage (all spread over the same stage-1 tokens). Query and
    received attention: each stage on its own bar (a deep stage's few keys reach many times uniform, which
    on one shared bar would draw the first stages near black), every bar marking 1 = uniform."""
    fig = ga.show_attention(str(samples[1]), MODEL, 1, view, 30, 60)[1]
    maps = _heatmaps(fig)
    assert len(maps) == len(model.stages)
    assert [a.text.split(" ")[:2] for a in fig.layout.annotations][: len(maps)] == [
        ["stage", f"{s + 1}"] if s + 1 < len(maps) or view != "rollout" else ["stage", f"{s + 1}:"]
        for s in range(len(maps))
    ]  # numbered from 1
    bars = [t for t in maps if t.showscale]
    assert all(t.zmin == 0 for t in maps)  # dark is zero
    for bar in bars:
        assert "uniform" in bar.colorbar.title.text and "1 = uniform" in bar.colorbar.ticktext
    if view == "rollout":  # a distribution over the image as a multiple of uniform: its mean is 1
        (bar,) = bars  # one colour bar for every panel, and it says so
        assert "all panels" in bar.colorbar.title.text
        assert all(t.zmax == bar.zmax >= 2 for t in maps)
        assert all(np.asarray(t.z).max() <= bar.zmax + 1e-6 for t in maps)
        for t in maps:
            assert np.asarray(t.z, dtype=float).mean() == pytest.approx(1.0, rel=1e-4)
        assert fig.layout.title.text.startswith("Attention rollout")
    else:
        assert len(bars) == len(maps)  # one bar per stage, each reaching its own maximum
        assert all(np.asarray(t.z).max() <= t.zmax + 1e-6 and t.zmax >= 2 for t in maps)
        assert "each stage on its own scale" in fig.layout.title.text


def test_the_grad_cam_title_names_its_stage(samples):
    fig = ga.show_attribution(str(samples[0]), MODEL, "grad_cam", 3)
    assert fig.layout.title.text.startswith("Grad-CAM on stage 3:")
    heads, attribution = ga.show_stage(str(samples[0]), MODEL, "grad_cam", 2)
    assert attribution.layout.title.text.startswith("Grad-CAM on stage 2:")
    assert heads.layout.title.text.startswith("Stage 2, block 1")
    heads, attribution = ga.show_stage(str(samples[0]), MODEL, "saliency", 2)
    assert attribution is not None and not isinstance(attribution, go.Figure)  # gr.skip(): unchanged


def test_a_photo_shown_to_the_shapes_model_gets_the_domain_note(samples, model, tmp_path):
    photos = [p for p in samples if "photos" in p.parts]
    shapes = [p for p in samples if "photos" not in p.parts]
    assert photos and shapes
    summary = ga.analyse(str(photos[0]), MODEL, FAST, 1)[-1]
    assert "⚠️" in summary and "means nothing" in summary
    assert all(name in summary for name in model.preprocessing.class_names)
    assert ">" not in ga.analyse(str(shapes[0]), MODEL, FAST, 1)[-1]  # its own domain: no note
    # Gradio passes a copy of an example from its cache: the photo is still recognised, by its pixels.
    copy = tmp_path / "upload.jpg"
    copy.write_bytes(photos[0].read_bytes())
    assert "⚠️" in ga.analyse({"path": str(copy), "url": None}, MODEL, FAST, 1)[-1]
    # An image the demo cannot place gets the milder note: what the model knows.
    drawn = _save(tmp_path / "drawing.png", (40, 30))
    assert "ℹ️" in ga.analyse(str(drawn), MODEL, FAST, 1)[-1]
    text = ga.describe_model(MODEL)
    size = model.preprocessing.img_size
    assert f"input {size}x{size} px" in text and "shapes" in text


def test_a_96_px_model_draws_every_view(monkeypatch, samples):
    """The demo is not tied to the 32 px shipped model: a 96 px one (random weights) works too."""
    from hvit.registry import create_model

    monkeypatch.setattr(ga, "load_model_choice", lambda label: create_model("hvit_micro", img_size=96).eval())
    monkeypatch.setattr(ga, "MODELS", ga.ModelPool())
    for view in ga.VIEW_LABELS:
        top, picture, stages_fig, heads_fig, attribution_fig, summary = ga.analyse(
            str(samples[0]), MODEL, FAST, 4, view, 50, 50
        )
        assert picture.shape == (288, 288, 3)  # 96 px enlarged 3 times: at least PICTURE_SIDE
        # one cell per token, the cells reaching exactly across the 96 px image
        assert all(
            (t.x[0], t.x[-1], t.y[0], t.y[-1]) == (-0.5, 95.5, -0.5, 95.5) for t in _heatmaps(stages_fig)
        )
        assert len(_heatmaps(heads_fig)) == 8 and len(_heatmaps(stages_fig)) == 4
        assert "Grad-CAM on stage 4" in attribution_fig.layout.title.text


def test_changing_inputs_without_an_image_clears_instead_of_complaining():
    assert ga.show_heads(None, MODEL, 2) is None
    assert ga.show_attribution(None, MODEL, "saliency", 1) is None
    assert ga.show_attention(None, MODEL, 1) == (None, None, None)
    assert ga.analyse_new_image(None, MODEL, FAST, 1) == (None, None, None, None, None, "")


def test_bad_stage_and_method_are_refused(samples):
    for stage in (0, 7, 1.5, "2", None):
        with pytest.raises(gr.Error, match="Stage must be"):
            ga.analyse(str(samples[0]), MODEL, "saliency", stage)
    with pytest.raises(gr.Error, match="Unknown attribution method"):
        ga.analyse(str(samples[0]), MODEL, "lime", 1)


def test_every_kind_of_input_reads_as_the_same_pixels(samples):
    path = samples[0]
    pil = Image.open(path).convert("RGB")
    data_url = f"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"
    sources = [
        str(path),
        path,
        pil,
        np.asarray(pil),
        {"path": str(path), "orig_name": path.name, "url": None},  # an upload, as Gradio sends it
        {"path": None, "url": data_url},  # an image the browser sent inline
    ]
    for source in sources:
        img = ga.read_image(source)
        assert img.mode == "RGB" and np.array_equal(np.asarray(img), np.asarray(pil)), type(source)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "No image yet"),
        (lambda d: _write(d / "notes.txt", b"hello"), "not a supported image file"),
        (lambda d: _write(d / "broken.png", b"\x89PNG but not really"), "not a readable image"),
        (lambda d: _save(d / "strip.png", (core.MAX_IMAGE_SIDE + 1, 2)), "pixels a side"),
        (lambda d: _write(d / "huge.png", b"0" * (core.MAX_UPLOAD_BYTES + 1)), "larger than"),
        (lambda d: {"path": str(_write(d / "x.gif", b"GIF89a-no")), "orig_name": "x.gif"}, "not a readable"),
    ],
    ids=["nothing", "text-file", "corrupt-png", "too-many-pixels", "too-many-bytes", "bad-payload"],
)
def test_bad_uploads_raise_a_gradio_error_that_says_what_to_do(tmp_path, make, message):
    image = make(tmp_path)
    with pytest.raises(gr.Error, match=message):
        ga.analyse(image, MODEL, FAST, 1)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("data:image/png;base64,abc", "its data: URL is not valid base64 (.*). Upload the image as a file"),
        ("data:image/png;base64,@@@@", "its data: URL is not valid base64"),
        ("data:image/png;base64", "a data: URL without a comma before its content"),
        ("data:image/png;base64,", r"'the image data' is empty \(0 bytes\)"),
        ("data:image/png,%89PNG", "'the image data' is not a readable image"),
        (
            "data:image/png;base64," + base64.b64encode(png_header_only(5000, 5000)).decode(),
            "is 5000x5000 pixels; use one between 1 and 4096 pixels a side",
        ),
        (
            "data:image/png;base64," + base64.b64encode(png_header_only(100_000, 100_000)).decode(),
            "declares far too many pixels",
        ),
        ("data:image/png;base64," + "A" * (core.MAX_UPLOAD_BYTES // 3 * 4 + 8), "larger than 10 MiB"),
    ],
    ids=[
        "bad-padding",
        "bad-characters",
        "no-comma",
        "empty",
        "percent-encoded",
        "too-large",
        "bomb",
        "long",
    ],
)
def test_malformed_inline_images_get_a_message(url, message):
    with pytest.raises(gr.Error, match=message) as info:
        ga.analyse({"path": None, "url": url}, MODEL, FAST, 1)
    assert info.value.title == "Image not accepted"


def test_a_capture_without_a_suffix_is_judged_by_its_content(tmp_path, samples):
    capture = _write(tmp_path / "webcam", samples[0].read_bytes())
    assert ga.read_image({"path": str(capture), "url": None}).size == Image.open(samples[0]).size
    with pytest.raises(gr.Error, match="'junk' is not a readable image"):
        ga.read_image({"path": str(_write(tmp_path / "junk", b"no image")), "url": None})


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _save(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size, "white").save(path)
    return path


def test_an_unknown_model_is_refused():
    with pytest.raises(gr.Error, match="Unknown model"):
        ga.analyse(np.zeros((8, 8, 3), np.uint8), "resnet50", FAST, 1)


def test_cached_example_answers_fit_the_csv_reader(samples):
    # Gradio caches example answers as CSV rows and reads them back with the csv module: the default
    # model's plots outgrow csv's 128 KiB default field limit, which the app raises well above them.
    figures = [o for o in ga.analyse(str(samples[0]), MODEL, FAST, 1) if isinstance(o, go.Figure)]
    biggest = max(len(f.to_json()) for f in figures)
    assert biggest > 131072
    assert csv.field_size_limit() >= ga.CSV_FIELD_LIMIT > 10 * biggest


def test_the_shipped_classroom_model_is_the_default_option():
    # the 96 px classroom model first, the fast 32 px shapes model and ImageNet offered beside it
    assert ga.DEMO_MODELS == (core.SHIPPED, core.SHIPPED_SHAPES, core.IMAGENET)
    assert core.SHIPPED == "Shipped classroom model, 96 px (offline)"
    assert core.SHIPPED_SHAPES == "Shipped shapes model, 32 px (fast)"
    with ga.MODELS.borrow(core.SHIPPED) as classroom, ga.MODELS.borrow(core.SHIPPED_SHAPES) as shapes:
        assert (classroom.preprocessing.img_size, shapes.preprocessing.img_size) == (96, 32)
        assert (classroom.preprocessing.domain, shapes.preprocessing.domain) == ("shapes-pair", "shapes")


def test_the_shipped_model_names_its_classes(samples):
    text = ga.describe_model(core.SHIPPED)
    with ga.MODELS.borrow(core.SHIPPED) as m:
        names = m.preprocessing.class_names
    assert names and all(name in text for name in names[:5])
    top = ga.analyse(str(samples[0]), core.SHIPPED, FAST, 1)[0]
    assert set(top) <= set(names)


def test_imagenet_offline_explains_itself_quickly(monkeypatch, samples):
    import hvit.interchange as interchange

    monkeypatch.setattr(interchange, "hub_reachable", lambda timeout=2.0: False)
    monkeypatch.setattr(interchange, "_cached_weights", lambda name: None)
    ga.MODELS.forget(core.IMAGENET)
    # Offline must mean an immediate answer, not a wait on retries: nothing may even try to connect.
    attempts: list[object] = []

    def no_network(sock, address):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    text = ga.describe_model(core.IMAGENET)
    assert "not available" in text and "choose the shipped classroom model" in text
    with pytest.raises(gr.Error, match="could not fetch the ImageNet weights") as info:
        ga.analyse(str(samples[0]), core.IMAGENET, FAST, 1)
    assert info.value.title == "ImageNet weights unavailable"
    # Picking the model with an image already there: the summary says so, no error pop-up.
    *plots, summary = ga.analyse_new_image(str(samples[0]), core.IMAGENET, FAST, 1)
    assert plots == [None] * 5 and "not available" in summary
    assert attempts == []


def test_a_missing_shipped_model_says_how_to_get_one(monkeypatch, tmp_path, samples):
    card = hvit.assets.asset_path("MODEL_CARD_classroom.md").read_text()  # the default model's card
    monkeypatch.setattr(hvit.assets, "ROOT", tmp_path)  # an install without the model file
    monkeypatch.setattr(ga, "MODELS", ga.ModelPool())
    assert "not available" in ga.describe_model(core.SHIPPED)
    with pytest.raises(gr.Error, match="re-clone the repository or train") as info:
        ga.analyse(str(samples[0]), core.SHIPPED, FAST, 1)
    assert info.value.title == "Model file unusable"
    # The command it offers is the model card's, word for word up to the output path.
    command = str(info.value.message).split("`")[1].split(" --output")[0]
    assert command.startswith("python -m hvit.train --model") and command in card


@pytest.mark.slow
def test_imagenet_option_when_online_predicts_imagenet_classes(monkeypatch, samples):
    """The online path end to end, offline: the Hub "answers" and timm "downloads" random weights."""
    import timm

    from hvit import interchange

    real_create = timm.create_model
    monkeypatch.setattr(interchange, "hub_reachable", lambda timeout=2.0: True)
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw: real_create(name, **kw))
    monkeypatch.setattr(ga, "MODELS", ga.ModelPool())
    top = ga.analyse(str(hvit.assets.asset_path("photos", "chelsea.jpg")), core.IMAGENET, FAST, 1)[0]
    names = set(interchange.imagenet_class_names())
    assert len(top) == 5 and set(top) <= names


# --- the model pool ---------------------------------------------------------------------------------


def test_pool_loads_once_and_lends_each_request_its_own_copy(monkeypatch):
    import hvit.registry

    calls = []

    def counting_load(label):
        calls.append(label)
        return hvit.registry.create_model("hvit_nano").eval()

    monkeypatch.setattr(ga, "load_model_choice", counting_load)
    pool = ga.ModelPool()
    with pool.borrow("a") as m1, pool.borrow("a") as m2:
        assert m1 is not m2  # two requests at once never share a model
        assert all(not p.requires_grad for p in m1.parameters())
    with pool.borrow("a") as m3:
        assert m3 in (m1, m2)  # copies are reused, not rebuilt
    assert calls == ["a"]


def test_a_failed_load_is_not_cached(monkeypatch):
    pool = ga.ModelPool()
    monkeypatch.setattr(
        ga, "load_model_choice", lambda label: (_ for _ in ()).throw(FileNotFoundError("gone"))
    )
    with pytest.raises(FileNotFoundError), pool.borrow("a"):
        pass
    import hvit.registry

    monkeypatch.setattr(ga, "load_model_choice", lambda label: hvit.registry.create_model("hvit_nano"))
    with pool.borrow("a") as m:
        assert m is not None


# --- the UI, built but not launched -----------------------------------------------------------------


def test_build_demo_wires_a_queue_and_a_predict_endpoint(samples):
    demo = ga.build_demo(models=[MODEL], examples=samples[:2])
    assert isinstance(demo, gr.Blocks)
    config = demo.get_config_file()
    api_names = {dep.get("api_name") for dep in config["dependencies"]}
    assert "predict" in api_names
    assert demo._queue.default_concurrency_limit == ga.CONCURRENCY_LIMIT
    assert demo._queue.max_size == ga.QUEUE_SIZE


def test_the_default_demo_offers_the_shipped_images_as_examples(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path))
    config = ga.build_demo().get_config_file()  # loads the shipped models its defaults come from
    datasets = [c for c in config["components"] if c["type"] == "dataset"]
    offered = ga.example_images()
    assert sum(len(d["props"]["samples"]) for d in datasets) == len(offered) > 0  # every shipped sample
    # Pair scenes, single shapes and photographs apart, the default model's own kind first, labelled.
    labels = [d["props"]["label"] for d in datasets]
    assert labels == [ga.EXAMPLES_LABEL, ga.SHAPES_LABEL, ga.PHOTOS_LABEL]
    assert all(len(d["props"]["samples"]) <= ga.MAX_EXAMPLES for d in datasets)  # one page each
    # Each group's rows choose the model that learned its images: one shape -> the 32 px shapes model.
    groups = ga._example_groups(offered, ga.DEMO_MODELS)
    assert [(len(paths), model) for paths, _, model in groups] == [
        (len(d["props"]["samples"]), model)
        for d, model in zip(datasets, (core.SHIPPED, core.SHIPPED_SHAPES, core.SHIPPED), strict=True)
    ]
    # without the shapes model on offer, its images fall back to the demo's default model
    assert ga._example_groups(offered, [core.SHIPPED])[1][2] == core.SHIPPED
    assert not any("mask" in str(p).lower() for p in offered)  # masks are ground truth, not examples
    assert {p.suffix.lower() for p in offered} <= set(core.IMAGE_SUFFIXES)
    if any("photos" in p.parts for p in offered):
        assert "photos" not in offered[0].parts  # the default model's kind of image comes first
    (dropdown,) = [c for c in config["components"] if c["props"].get("label") == "Model"]
    assert dropdown["props"]["value"] == core.SHIPPED
    # The stage starts on Grad-CAM's default for the default model: stage 2 (12x12) of the classroom
    # model, not stage 4 (3x3); each example row carries the default of the model it chooses.
    (radio,) = [c for c in config["components"] if str(c["props"].get("label", "")).startswith("Stage for")]
    assert radio["props"]["value"] == ga.start_stage(core.SHIPPED) == 2
    for paths, _, model in groups:
        row = ga.example_row(paths[0], model)
        assert row[:2] == [str(paths[0]), model] and row[3] == ga.start_stage(model)
        assert row == [str(paths[0]), model, ga.DEFAULT_METHOD, row[3], ga.DEFAULT_VIEW, 50, 50]
    assert ga.start_stage(core.SHIPPED_SHAPES) == 2  # the 32 px model's 8x8 stage


# --- the launched app, through gradio_client --------------------------------------------------------


@pytest.fixture(scope="module")
def served(samples, tmp_path_factory):
    """The demo on a free loopback port, its example cache in a temporary folder: (url, demo)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path_factory.mktemp("examples_cache")))
        demo = ga.build_demo(models=[MODEL], examples=samples[:2])
        port = _free_port()
        demo.launch(
            server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
            **ga.LAUNCH_SETTINGS,
        )  # fmt: skip
        try:
            yield f"http://127.0.0.1:{port}/", demo
        finally:
            demo.close()


@pytest.fixture(scope="module")
def server(served):
    return served[0]


def _client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False, download_files=False)


def _confidences(label_output: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label_output["confidences"]}


@pytest.mark.slow
def test_a_prediction_round_trip(server, samples):
    from gradio_client import handle_file

    client = _client(server)
    start = time.perf_counter()
    result = client.predict(handle_file(str(samples[0])), MODEL, ga.DEFAULT_METHOD, 1, api_name="/predict")
    seconds = time.perf_counter() - start
    top = _confidences(result[0])
    expected = ga.analyse(str(samples[0]), MODEL, ga.DEFAULT_METHOD, 1)[0]
    assert list(top) == list(expected)
    np.testing.assert_allclose(list(top.values()), list(expected.values()), rtol=1e-4)
    print(f"round trip: {seconds * 1000:.0f} ms")


@pytest.mark.slow
def test_a_bad_upload_through_the_client_gets_the_message(server, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    bad = _write(tmp_path / "notes.txt", b"hello")
    with pytest.raises(AppError, match="not a supported image file"):
        _client(server).predict(handle_file(str(bad)), MODEL, ga.DEFAULT_METHOD, 1, api_name="/predict")


class _CountingPool:
    """Wraps the app's `ModelPool`, recording how many requests held a model at the same time.

    With ``gate`` set, every request waits inside the pool, holding its model, until the gate opens:
    the test decides when requests finish, so "two run at once" is a fact, not a timing accident.
    """

    def __init__(self, inner: ga.ModelPool, gate: threading.Event | None = None) -> None:
        self.inner, self.load, self.gate = inner, inner.load, gate
        self.active = self.peak = 0
        self.lent: set[int] = set()
        self.changed = threading.Condition()

    @contextmanager
    def borrow(self, label):
        with self.inner.borrow(label) as model:
            with self.changed:
                self.active += 1
                self.peak = max(self.peak, self.active)
                self.lent.add(id(model))
                self.changed.notify_all()
            try:
                if self.gate is not None:
                    self.gate.wait()
                yield model
            finally:
                with self.changed:
                    self.active -= 1
                    self.changed.notify_all()


def _wait_for(condition, what: str, timeout_s: float = 300.0) -> None:
    """Poll ``condition`` until it holds; the timeout only turns a hang into a failure that says what."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_two_requests_run_at_once_and_the_33rd_waiting_one_is_refused(served, samples, monkeypatch):
    from gradio_client import handle_file
    from gradio_client.utils import QueueError

    url, demo = served
    gate = threading.Event()
    pool = _CountingPool(ga.MODELS, gate)
    monkeypatch.setattr(ga, "MODELS", pool)  # the running server looks it up on every request
    client = _client(url)  # 40 worker threads: every job below gets one
    image = handle_file(str(samples[0]))
    jobs = []
    try:
        jobs += [
            client.submit(image, MODEL, FAST, 1, api_name="/predict") for _ in range(ga.CONCURRENCY_LIMIT)
        ]
        # Both hold a model at the same moment: a serial queue would never get here.
        _wait_for(
            lambda: pool.active == ga.CONCURRENCY_LIMIT, f"{ga.CONCURRENCY_LIMIT} requests running at once"
        )
        jobs += [client.submit(image, MODEL, FAST, 1, api_name="/predict") for _ in range(ga.QUEUE_SIZE)]
        _wait_for(lambda: len(demo._queue) == ga.QUEUE_SIZE, f"{ga.QUEUE_SIZE} requests waiting")
        assert pool.active == ga.CONCURRENCY_LIMIT  # the waiting ones really wait
        with pytest.raises(QueueError, match="Queue is full"):
            client.predict(image, MODEL, FAST, 1, api_name="/predict")
    finally:
        gate.set()
    expected = _confidences(jobs[0].result()[0])
    assert all(_confidences(job.result()[0]) == expected for job in jobs)  # every accepted one is answered
    assert pool.peak == ga.CONCURRENCY_LIMIT and pool.active == 0


@pytest.mark.slow
def test_eight_clients_at_once_are_all_answered_correctly(server, samples, monkeypatch):
    from gradio_client import handle_file

    images = [samples[i % len(samples)] for i in range(8)]
    expected = [ga.analyse(str(p), MODEL, ga.DEFAULT_METHOD, 1)[0] for p in images]
    clients = [_client(server) for _ in images]
    counting = _CountingPool(ga.MODELS)
    monkeypatch.setattr(ga, "MODELS", counting)  # the running server looks it up on every request

    def ask(i: int) -> dict[str, float]:
        out = clients[i].predict(
            handle_file(str(images[i])), MODEL, ga.DEFAULT_METHOD, 1, api_name="/predict"
        )
        return _confidences(out[0])

    with ThreadPoolExecutor(len(images)) as pool:
        answers = list(pool.map(ask, range(len(images))))
    for got, want in zip(answers, expected, strict=True):
        assert list(got) == list(want)
        np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=1e-4)
    # Never more than CONCURRENCY_LIMIT at once (that they do overlap is the gated test's job).
    assert 1 <= counting.peak <= ga.CONCURRENCY_LIMIT, counting.peak


@pytest.mark.slow
def test_the_script_serves_the_shipped_model_on_the_port_from_the_environment(tmp_path, samples):
    """`python app/gradio_app.py`, run from another folder, as a fresh machine would run it."""
    port = _free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1")
    env.pop("GRADIO_ANALYTICS_ENABLED", None)  # the app itself must switch analytics off
    log_path = tmp_path / "app.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(APP_FILE)], cwd=tmp_path, env=env, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as response:
                    config = json.load(response)
                    break
            except OSError:
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "the app did not answer within 90 s"
                time.sleep(0.5)
        assert config["analytics_enabled"] is False  # nothing phones home
        from gradio_client import handle_file

        client = _client(f"http://127.0.0.1:{port}/")
        out = client.predict(handle_file(str(samples[0])), core.SHIPPED, FAST, 1, api_name="/predict")
        with ga.MODELS.borrow(core.SHIPPED) as shipped:
            assert set(_confidences(out[0])) <= set(shipped.preprocessing.class_names)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
