"""AppTest of the classroom app's entry point: home page, navigation and the shared model chooser."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

NAVIGATION = str(Path(__file__).resolve().parents[1] / "app" / "navigation.py")


def _app() -> AppTest:
    return AppTest.from_file(NAVIGATION, default_timeout=90)


def _problems(at: AppTest) -> list[str]:
    return [e.value for e in at.exception] + [e.value for e in at.error]


def test_home_renders_with_the_shipped_model() -> None:
    at = _app().run()
    assert not _problems(at)
    assert at.title[0].value == "How a hierarchical vision transformer sees"
    assert at.session_state["model_source"] == "shipped"
    in_use = at.session_state["model_in_use"]
    assert in_use.source == "shipped" and in_use.key == "shipped:hvit_classroom.safetensors"  # the default
    assert in_use.model.preprocessing.img_size == 96
    assert any(m.label == "Classes" for m in at.metric)
    # every page is reachable from the navigation
    for page in ("1_architecture.py", "2_training.py", "3_attention.py", "4_classroom.py"):
        at.switch_page(f"../pages/{page}").run()
        assert not _problems(at), page


def test_the_fast_32_px_shapes_model_is_a_second_shipped_choice() -> None:
    from hvit import demo

    at = _app().run()
    # listed without "Shipped" and "(offline)": the source above says so, and the labels fit the sidebar
    assert at.selectbox(key="model_shipped").options == [
        "Classroom model, 96 px",
        "Shapes model, 32 px (fast)",
    ]
    assert at.selectbox(key="model_shipped").value == demo.SHIPPED
    at.selectbox(key="model_shipped").set_value(demo.SHIPPED_SHAPES).run()
    assert not _problems(at)
    in_use = at.session_state["model_in_use"]
    assert in_use.key == "shipped:hvit_shapes.safetensors" and in_use.model.preprocessing.img_size == 32
    at.switch_page("../pages/3_attention.py").run()
    assert not _problems(at) and at.session_state["model_in_use"].key == in_use.key


def test_preset_choice_is_shared_with_the_pages() -> None:
    at = _app().run()
    at.radio(key="model_source").set_value("preset").run()
    at.selectbox(key="model_preset").select("hvit_micro").run()
    assert not _problems(at)
    assert at.session_state["model_in_use"].key == "preset:hvit_micro"
    at.switch_page("../pages/3_attention.py").run()
    assert at.session_state["model_in_use"].key == "preset:hvit_micro"  # the same model on another page
    assert not _problems(at)


def test_missing_sources_explain_what_to_do() -> None:
    at = _app().run()
    at.radio(key="model_source").set_value("trained").run()
    assert "model_in_use" not in at.session_state
    assert any("train one on the Live training page" in i.value for i in at.info)
    at.switch_page("../pages/3_attention.py").run()
    assert not at.exception and any("Choose a model in the sidebar" in i.value for i in at.info)
    at.radio(key="model_source").set_value("upload").run()
    assert any("Upload a checkpoint" in i.value for i in at.info)


def test_imagenet_offline_is_an_error_message_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import hvit.interchange

    monkeypatch.setattr(hvit.interchange, "hub_reachable", lambda timeout=2.0: False)
    monkeypatch.setattr(hvit.interchange, "_cached_weights", lambda name: None)
    at = _app().run()
    at.radio(key="model_source").set_value("imagenet").run()
    assert not at.exception
    assert any("ImageNet weights are unavailable" in e.value for e in at.error)


def test_a_file_that_is_not_a_checkpoint_is_refused_in_words() -> None:
    import sys

    sys.path.insert(0, str(Path(NAVIGATION).parent))
    import common

    with pytest.raises(ValueError, match="is not an hvit checkpoint"):
        common._checkpoint_from_bytes(b"definitely not safetensors", "model.safetensors")


def test_the_warm_up_fills_the_caches_the_pages_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the warm-up computes is found by the pages: same functions, same cache keys."""
    import sys

    sys.path.insert(0, str(Path(NAVIGATION).parent))
    import torch

    import common
    import hvit.explain
    from hvit import demo

    model = demo.load_shipped_model(demo.SHIPPED_MODELS[demo.SHIPPED_SHAPES])
    in_use = common.ModelInUse(model, "shipped:warm-up-test", "shapes", "shipped")
    calls: list[str] = []
    real = hvit.explain.compute_attribution

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(hvit.explain, "compute_attribution", counting)
    threads = torch.get_num_threads()
    common._warm(in_use, max_images=1)
    torch.set_num_threads(threads)
    assert sorted(calls) == sorted(common.DEFAULT_METHODS)  # each default method computed once

    # the attention page's request for the first sample, as the page makes it: no new computation
    domain = demo.model_domain(model)
    path = next(
        p for p in demo.samples_for(domain, common.sample_paths()) if demo.image_kind(p) in domain.image_kinds
    )
    image, ikey = demo.load_image(path), f"sample:{path.parent.name}/{path.name}"
    target = common.prediction(model, in_use.key, image, ikey).class_index[0]
    settings = common.attribution_settings()
    cam_stage = hvit.explain.default_cam_stage(model.config)
    for method in common.DEFAULT_METHODS:
        common.attribution(model, in_use.key, image, ikey, method, target, cam_stage, settings)
    # the lesson asks for integrated gradients without a Grad-CAM stage: the same cached map
    common.attribution(model, in_use.key, image, ikey, "integrated_gradients", target, -1, settings)
    assert len(calls) == len(common.DEFAULT_METHODS)
