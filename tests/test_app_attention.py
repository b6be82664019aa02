"""AppTest of the attention and attributions page."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from hvit import demo

NAVIGATION = str(Path(__file__).resolve().parents[1] / "app" / "navigation.py")
PAGE = "../pages/3_attention.py"


def _page() -> AppTest:
    at = AppTest.from_file(NAVIGATION, default_timeout=120).run()
    return at.switch_page(PAGE).run()


def _figures(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _heat(fig: dict) -> list:
    return next(t["z"] for t in fig["data"] if t["type"] == "heatmap")


def test_renders_maps_for_the_default_model_and_image() -> None:
    at = _page()
    assert not at.exception and not at.error
    kinds = [fig["layout"].get("title", {}).get("text", "") for fig in _figures(at)]
    assert any("Where the query looks" in k for k in kinds)
    assert len(_figures(at)) >= 6  # query, key grid, heads, head stats, rollout, attributions
    # Grad-CAM starts on the classroom model's 12x12 stage 2 (hvit.explain.default_cam_stage), not the
    # 3x3 last stage, and the attribution panel's title names it
    (cam_stage,) = [s for s in at.selectbox if s.label == "Grad-CAM stage"]
    assert cam_stage.value == 1 and cam_stage.format_func(cam_stage.value) == "stage 2"
    assert any(
        "Grad-CAM (stage 2)" in json.dumps(fig["layout"].get("annotations", [])) for fig in _figures(at)
    )


def test_stage_head_and_query_change_the_maps() -> None:
    at = _page()
    before = _heat(_figures(at)[0])
    at.selectbox(key="att_stage").set_value(1).run()
    at.selectbox(key="att_head").set_value(1).run()
    assert not at.exception and not at.error
    after_stage = _heat(_figures(at)[0])
    assert after_stage != before
    at.slider(key="att_qy").set_value(2).run()
    at.slider(key="att_qx").set_value(2).run()
    assert not at.exception
    assert "Query token (0, 0)" in " ".join(c.value for c in at.caption)


def test_shapes_image_gets_scores_and_checks() -> None:
    at = _page()
    at.segmented_control(key="att_image_source").set_value("shapes").run()
    at.number_input(key="att_shapes_index").set_value(3).run()
    assert not at.exception and not at.error
    tables = [d.value for d in at.dataframe]
    assert any("pointing game" in t.columns for t in tables)  # scores next to the maps
    at.toggle(key="att_random").set_value(True).run()
    at.toggle(key="att_scan").set_value(True).run()
    assert not at.exception and not at.error
    tables = [d.value for d in at.dataframe]
    assert any("Spearman (trained vs random)" in t.columns for t in tables)
    assert any(m.label.startswith("p(") for m in at.metric)  # head ablation


def test_multi_scale_model_and_other_methods() -> None:
    at = AppTest.from_file(NAVIGATION, default_timeout=120).run()
    at.radio(key="model_source").set_value("preset").run()
    at.selectbox(key="model_preset").select("hvit_nano_ms").run()
    at.switch_page(PAGE).run()
    assert not at.exception and not at.error
    at.multiselect(key="att_methods").set_value(["occlusion", "smoothgrad"]).run()
    assert not at.exception and not at.error


def test_a_head_that_the_new_stage_lacks_falls_back_to_the_mean() -> None:
    at = _page()
    at.selectbox(key="att_stage").set_value(3).run()  # the shipped model's stage 4 has 8 heads
    at.selectbox(key="att_head").set_value(5).run()
    at.selectbox(key="att_stage").set_value(0).run()  # stage 1 has one
    assert not at.exception and not at.error
    assert at.selectbox(key="att_head").value == -1
    assert at.selectbox(key="att_head").options == ["mean of all heads", "head 1"]


def test_the_default_image_is_a_pair_scene_and_a_photo_gets_the_domain_note() -> None:
    at = _page()  # the default model: the 96 px classroom model, trained on shapes-pair
    assert not at.exception and not at.error
    default = at.selectbox(key="att_sample").value
    assert demo.image_kind(default) == demo.SHAPES_PAIR_IMAGE  # the model's own kind of image
    assert demo.sample_mask(default) is not None  # with its mask, so the maps are scored
    assert any("pointing game" in d.value.columns for d in at.dataframe)
    assert any("Learned from the shapes-pair data set" in c.value for c in at.caption)
    assert not at.warning  # a pair scene shown to the pair model: nothing to warn about
    single = next(p for p in at.selectbox(key="att_sample").options if str(p).startswith("one shape: "))
    at.selectbox(key="att_sample").set_value(single).run()
    assert any("A picture of one drawn shape is outside" in w.value for w in at.warning)
    photo = next(p for p in at.selectbox(key="att_sample").options if "astronaut" in str(p))
    at.selectbox(key="att_sample").set_value(photo).run()
    assert not at.exception and not at.error
    assert any("means nothing" in w.value and "A photograph is outside" in w.value for w in at.warning)
    figures = _figures(at)
    query = figures[0]["data"][1]  # the attention heat map over the image
    assert (
        query["zmin"] == 0 and query["colorscale"][0][1] == "rgb(0,0,4)"
    )  # dark at zero, not a theme colour
    assert "stage 1 · block 1" in figures[0]["layout"]["title"]["text"]  # the title names what it shows
