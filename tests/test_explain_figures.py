"""Plotly builders and the seed's PNG: assertions on the figure data, not on pixels."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from PIL import Image

import hvit
from hvit.explain import figures
from hvit.explain.ablation import HeadAblation
from hvit.explain.head_stats import head_statistics, summarize_by_stage
from hvit.explain.views import attention_views


@pytest.fixture(scope="module")
def views():
    torch.manual_seed(0)
    return attention_views(hvit.create_model("hvit_nano_ms"), torch.randn(1, 3, 32, 32))


def _heatmaps(fig: go.Figure) -> list:
    return [t for t in fig.data if isinstance(t, go.Heatmap)]


def test_overlay_has_image_heatmap_and_an_opacity_slider():
    img = np.random.default_rng(0).random((8, 8, 3))
    heat = np.arange(64.0).reshape(8, 8) - 10
    fig = figures.overlay_figure(img, heat, opacity=0.4, signed=True)
    image, hm = fig.data
    assert isinstance(image, go.Image) and np.asarray(image.z).dtype == np.uint8
    assert hm.opacity == 0.4 and hm.zmid == 0 and hm.zmin == -hm.zmax == -53.0
    np.testing.assert_array_equal(np.asarray(hm.z), heat)
    (slider,) = fig.layout.sliders
    assert [s.args[0]["opacity"] for s in slider.steps] == list(figures.OPACITY_STEPS)
    assert all(s.method == "restyle" and list(s.args[1]) == [1] for s in slider.steps)
    assert slider.active == figures.OPACITY_STEPS.index(0.4)
    unsigned = figures.overlay_figure(None, np.ones((4, 4)), opacity_slider=False)
    assert (
        len(unsigned.data) == 1
        and unsigned.data[0].zmin < unsigned.data[0].zmax
        and not unsigned.layout.sliders
    )


def test_head_grid_shares_one_scale_and_shows_each_group_on_its_own_grid(views):
    fig = figures.head_grid_figure(views, stage=0)
    hms = _heatmaps(fig)
    assert len(hms) == 2 and len([t for t in fig.data if isinstance(t, go.Image)]) == 2
    assert len({(h.zmin, h.zmax) for h in hms}) == 1  # shared colour scale
    expected = views.head_maps(0)
    assert hms[0].zmax == pytest.approx(float(expected.max()))
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["head 0 · keys 4x4", "head 1 · keys 16x16"]
    on_keys = [views.received_attention(0, head=h, on="keys") for h in range(2)]
    raw = figures.panel_grid_figure(on_keys, ["g0", "g1"], image=views.images[0])
    assert [np.asarray(h.z).shape for h in _heatmaps(raw)] == [(4, 4), (16, 16)]
    assert not any(isinstance(t, go.Image) for t in raw.data)  # no image under maps of another size


def test_stage_panels_and_independent_scales(views):
    maps = views.stage_maps()
    fig = figures.stage_panels_figure(views.images[0], maps, shared_scale=False)
    hms = _heatmaps(fig)
    assert len(hms) == 4 and [a.text for a in fig.layout.annotations] == [f"stage {i}" for i in range(1, 5)]
    for h, m in zip(hms, maps, strict=True):
        assert h.zmax == pytest.approx(float(m.max()))


def test_footprint_curves_stats_ablation_and_attribution_figures(views):
    labels = views.footprint(0, head=0)
    fp = figures.footprint_figure(views.images[0], labels, key_grid=(4, 4))
    z = np.asarray(fp.data[-1].z)
    assert set(np.unique(z[~np.isnan(z)])) == {0.0, 1.0}  # checkerboard of the 4x4 keys
    assert z[0, 0] != z[0, 8] and z[0, 0] == z[8, 8]
    one = figures.footprint_figure(views.images[0], labels, key=5)
    assert np.asarray(one.data[-1].z).sum() == 64  # key 5 covers an 8x8 pixel block

    curves = {"a": {"fractions": [0, 0.5, 1], "deletion": [0.9, 0.2, 0.1], "insertion": [0.1, 0.8, 0.9]}}
    cf = figures.curves_figure(curves)
    assert len(cf.data) == 2 and {t.legendgroup for t in cf.data} == {"a"}
    assert list(cf.data[1].y) == [0.1, 0.8, 0.9]

    stats = summarize_by_stage(head_statistics(hvit.create_model("hvit_nano"), torch.randn(1, 3, 32, 32)))
    sf = figures.head_stats_figure(stats)
    assert sum(len(t.y) for t in sf.data if t.xaxis == "x") == len(stats)

    abl = [
        HeadAblation(0, [0], None, 1, 0.5, 0.4, -0.1, 1),
        HeadAblation(1, [1], None, 1, 0.5, 0.55, 0.05, 1),
    ]
    af = figures.ablation_figure(abl)
    assert list(af.data[0].y) == [-0.1, 0.05] and list(af.data[0].x) == ["S1 h0", "S2 h1"]

    maps = {"ig": np.array([[-2.0, 1.0], [0.0, 0.5]]), "saliency": np.array([[0.0, 1e-6], [0.0, 0.0]])}
    grid = figures.attribution_grid_figure(np.zeros((2, 2, 3)), maps, {"ig": True})
    ig, sal = _heatmaps(grid)
    assert ig.zmid == 0 and ig.zmax == 2.0 and sal.zmax == pytest.approx(1e-6)
    assert "1e-06" in grid.layout.annotations[1].text  # a near-zero map says so in its title


@pytest.mark.slow
def test_visualize_attention_writes_a_png_for_every_kind_of_input(tmp_path):
    torch.manual_seed(0)
    model = hvit.create_model("hvit_nano_ms")
    model.train()
    pixels = (np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    outs = [
        hvit.visualize_attention(model, Image.fromarray(pixels), tmp_path / "a.png"),
        hvit.visualize_attention(
            model, tmp_path / "in.png", tmp_path / "sub" / "b.png", kind="query", pixel=(3, 30)
        ),
        hvit.visualize_attention(model, torch.randn(3, 32, 32), str(tmp_path / "c.png")),
    ]
    for path in outs:
        with Image.open(path) as png:
            assert png.format == "PNG" and png.size[0] > png.size[1] > 200
    assert model.training
