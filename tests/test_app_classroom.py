"""AppTest of the classroom walkthrough: every step renders, Back/Next work, the URL keeps the view."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

NAVIGATION = str(Path(__file__).resolve().parents[1] / "app" / "navigation.py")
PAGE = "../pages/4_classroom.py"
HEADINGS = [
    "1 · Patches and tokens",
    "2 · Stage-1 attention",
    "3 · Spatial reduction",
    "4 · Downsampling into the pyramid",
    "5 · How the class is decided",
    "6 · Reading an attribution, and when not to trust it",
]


def _page(**query: str) -> AppTest:
    at = AppTest.from_file(NAVIGATION, default_timeout=120).run()
    at.switch_page(PAGE)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def _heading(at: AppTest) -> str:
    return at.subheader[0].value


def test_step_forward_and_back_through_the_lesson() -> None:
    at = _page()
    for i, heading in enumerate(HEADINGS, start=1):
        assert not at.exception and not at.error, heading
        assert _heading(at) == heading
        assert at.get("plotly_chart"), f"step {i} has a live figure"
        assert at.query_params["step"] == [str(i)] or at.query_params["step"] == str(i)
        if i < len(HEADINGS):
            at.button(key="cls_next").click().run()
    assert at.button(key="cls_next").disabled
    at.button(key="cls_back").click().run()
    assert _heading(at) == HEADINGS[4]


def test_a_link_reopens_the_same_view() -> None:
    at = _page(step="3", stage="2", qy="5", qx="20", img="shapes:7")
    assert not at.exception and not at.error
    assert _heading(at) == HEADINGS[2]
    assert at.selectbox(key="cls_stage").value == 1  # stage 2 in the URL, as on screen; index 1 in hvit
    assert at.session_state["cls_image_source"] == "shapes"
    assert at.session_state["cls_shapes_index"] == 7
    params = {k: at.query_params[k] for k in ("step", "stage", "qy", "qx", "img")}
    assert {k: v if isinstance(v, str) else v[0] for k, v in params.items()} == {
        "step": "3",
        "stage": "2",
        "qy": "5",
        "qx": "20",
        "img": "shapes:7",
    }


def test_a_broken_link_falls_back_to_defaults() -> None:
    at = _page(step="99", stage="x", img="sample:nope.png")
    assert not at.exception and not at.error
    assert _heading(at) == HEADINGS[-1]  # step clamped to the last one


def test_the_url_numbers_stages_and_heads_from_one() -> None:
    at = _page(step="2", head="1")
    assert not at.exception and not at.error
    assert at.selectbox(key="cls_head").value == 0  # head 1 on screen and in the URL; index 0 in hvit
    assert "head 1" in at.selectbox(key="cls_head").options
    params = {k: at.query_params[k] for k in ("stage", "head")}
    assert {k: v if isinstance(v, str) else v[0] for k, v in params.items()} == {"stage": "1", "head": "1"}


def test_the_pyramid_step_draws_each_stage_on_its_own_scale() -> None:
    """Step 4: a deep stage's few keys reach many times uniform; on one shared range stages 1-2 went
    dark, so every stage has its own colour bar, each marking uniform attention."""
    at = _page(step="4")
    assert not at.exception and not at.error
    fig = next(
        json.loads(c.proto.spec)
        for c in at.get("plotly_chart")
        if "every stage" in json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "")
    )
    heat = [t for t in fig["data"] if t["type"] == "heatmap"]
    assert len(heat) == 4 and all(t["showscale"] for t in heat)  # one bar per stage
    assert all("1 = uniform" in t["colorbar"]["ticktext"] for t in heat)
    assert all(t["zmin"] == 0 and t["zmax"] >= 2 for t in heat)  # anchored at 0, uniform mid-scale or lower
    assert len({t["zmax"] for t in heat}) > 1  # each range fits its own stage
    assert any("its own colour bar" in c.value for c in at.caption)
