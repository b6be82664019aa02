"""Plotly builders and the seed's PNG: assertions on the figure data, not on pixels."""

from __future__ import annotations

import base64
import io

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from PIL import Image

import hvit
from hvit.explain import colors, figures
from hvit.explain.ablation import HeadAblation
from hvit.explain.geometry import TokenMap, grid_to_image
from hvit.explain.head_stats import head_statistics, summarize_by_stage
from hvit.explain.views import attention_views


@pytest.fixture(scope="module")
def views():
    torch.manual_seed(0)
    return attention_views(hvit.create_model("hvit_nano_ms"), torch.randn(1, 3, 32, 32))


def _heatmaps(fig: go.Figure) -> list:
    return [t for t in fig.data if isinstance(t, go.Heatmap)]


def _decoded(trace: go.Image) -> np.ndarray:
    """The pixels of an ``Image`` trace's PNG data URI."""
    head, data = trace.source.split(",", 1)
    assert head == "data:image/png;base64"
    with Image.open(io.BytesIO(base64.b64decode(data))) as png:
        return np.asarray(png.convert("RGB"))


def _at_pixels(trace: go.Heatmap, size: tuple[int, int], what: str = "z") -> np.ndarray:
    """What a heat-map trace shows at every pixel centre (y, x) of an image of ``size``: the value of
    the cell whose edges (``trace.x``/``trace.y``, or one cell per pixel without them) hold it."""
    values = np.asarray(getattr(trace, what))
    if trace.x is None:
        assert values.shape[:2] == size
        return values
    ys, xs = np.asarray(trace.y), np.asarray(trace.x)
    assert (len(ys), len(xs)) == (values.shape[0] + 1, values.shape[1] + 1)  # cell edges
    assert ys[0] == xs[0] == -0.5 and (ys[-1], xs[-1]) == (size[0] - 0.5, size[1] - 0.5)
    rows = np.searchsorted(ys, np.arange(size[0]), side="right") - 1
    cols = np.searchsorted(xs, np.arange(size[1]), side="right") - 1
    return values[rows][:, cols]


def test_overlay_has_image_heatmap_and_an_opacity_slider():
    img = np.random.default_rng(0).random((8, 8, 3))
    heat = np.arange(64.0).reshape(8, 8) - 10
    fig = figures.overlay_figure(img, heat, opacity=0.4, signed=True)
    image, hm = fig.data
    assert isinstance(image, go.Image) and image.z is None  # a PNG, not an array to paint and re-encode
    np.testing.assert_array_equal(_decoded(image), np.round(img * 255).astype(np.uint8))
    assert (image.x0, image.y0, image.dx, image.dy) == (0, 0, 1, 1)  # pixel centres on integers
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
    assert len({(h.zmin, h.zmax) for h in hms}) == 1 and hms[0].zmin == 0  # shared, anchored at 0
    assert [h.showscale for h in hms] == [False, True]  # one colour bar, saying it is shared
    assert hms[1].colorbar.title.text == "× uniform (both panels)"
    assert 1.0 in hms[1].colorbar.tickvals and "1 = uniform" in hms[1].colorbar.ticktext
    # each head is drawn as a ratio to its own uniform level (1/keys): 4x4 keys and 16x16 keys
    expected = views.head_maps(0)
    assert [np.asarray(h.z).shape for h in hms] == [(16, 16), (16, 16)]  # one cell per stage-1 token
    np.testing.assert_allclose(_at_pixels(hms[0], (32, 32)), expected[0].numpy() * 16, rtol=1e-3)
    np.testing.assert_allclose(_at_pixels(hms[1], (32, 32)), expected[1].numpy() * 256, rtol=1e-3)
    assert hms[0].zmax == pytest.approx(
        max(2.0, float((expected[0] * 16).max()), float((expected[1] * 256).max())), rel=1e-3
    )
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["head 1 · keys 4x4", "head 2 · keys 16x16"]  # numbered from 1 on screen
    assert fig.layout.title.text.startswith("Stage 1, block 1: attention received")
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
        assert h.zmin == 0 and h.zmax == pytest.approx(float(m.max()), rel=1e-3)  # 4 significant digits
        assert h.showscale  # a panel on its own scale has its own colour bar
    assert len({h.colorbar.x for h in hms}) == 4  # each beside its own panel


def test_footprint_curves_stats_ablation_and_attribution_figures(views):
    labels = views.footprint(0, head=0)
    fp = figures.footprint_figure(views.images[0], labels, key_grid=(4, 4))
    z = np.asarray(fp.data[-1].z)
    assert set(np.unique(z[~np.isnan(z)])) == {0.0, 1.0}  # checkerboard of the 4x4 keys
    assert z[0, 0] != z[0, 8] and z[0, 0] == z[8, 8]
    one = figures.footprint_figure(views.images[0], labels, key=5)
    assert np.asarray(one.data[-1].z).sum() == 64  # key 5 covers an 8x8 pixel block
    # per token: the same pixels, and the hover names the token, its pixels and its key
    per_token = figures.footprint_figure(
        views.images[0], views.footprint(0, head=0, on="tokens"), key_grid=(4, 4)
    )
    hm = per_token.data[-1]
    assert np.asarray(hm.z).shape == (16, 16)
    np.testing.assert_array_equal(_at_pixels(hm, (32, 32)), z)
    np.testing.assert_array_equal(_at_pixels(hm, (32, 32), "customdata")[..., 6], labels.numpy())
    assert hm.hovertemplate == figures.TOKEN_HOVER + ": key %{customdata[6]}<extra></extra>"
    token_labels = views.footprint(0, head=0, on="tokens")
    one_token = figures.footprint_figure(views.images[0], token_labels, key=5)
    np.testing.assert_array_equal(_at_pixels(one_token.data[-1], (32, 32)), np.asarray(one.data[-1].z))
    key5 = views.footprint(0, head=0, key=5, on="tokens")  # the key's own footprint, per token
    np.testing.assert_array_equal(key5.to_image().numpy(), views.footprint(0, head=0, key=5).numpy())

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
    assert list(af.data[0].y) == [-0.1, 0.05] and list(af.data[0].x) == ["S1 h1", "S2 h2"]  # from 1
    assert [t.name for t in sf.data if t.xaxis == "x"][0] == "head 1"

    maps = {"ig": np.array([[-2.0, 1.0], [0.0, 0.5]]), "saliency": np.array([[0.0, 1e-6], [0.0, 0.0]])}
    grid = figures.attribution_grid_figure(np.zeros((2, 2, 3)), maps, {"ig": True})
    ig, sal = _heatmaps(grid)
    assert ig.zmid == 0 and ig.zmin == -ig.zmax == -2.0 and ig.colorscale[0][1] == colors.DIVERGING[0][1]
    assert sal.zmin == 0 and sal.zmax == pytest.approx(1e-6) and ig.showscale and sal.showscale
    zero = figures.attribution_grid_figure(np.zeros((2, 2, 3)), {"cam": np.zeros((2, 2))})
    (cam,) = _heatmaps(zero)
    assert cam.zmin == 0 and cam.zmax == 1.0  # an all-zero map is drawn at the dark end


def test_twin_panels_share_one_scale_per_method():
    trained = {
        "IG": (np.array([[-1.0, 3.0]]), np.array([[0.5, -0.2]])),
        "Saliency": (np.ones((1, 2)), np.zeros((1, 2))),
    }
    fig = figures.twin_figure(None, trained, {"IG": True})
    ig, ig_random, sal, sal_random = _heatmaps(fig)
    assert (ig.zmin, ig.zmax, ig.zmid) == (ig_random.zmin, ig_random.zmax, ig_random.zmid) == (-3.0, 3.0, 0)
    assert (sal.zmin, sal.zmax) == (sal_random.zmin, sal_random.zmax) == (0, 1.0)
    assert [h.showscale for h in (ig, ig_random, sal, sal_random)] == [False, True, False, True]
    assert ig_random.colorbar.title.text == "one scale: both panels"
    assert [a.text for a in fig.layout.annotations][:2] == ["IG: trained model", "IG: random weights"]


def test_sequential_scales_start_dark_and_attention_is_drawn_against_uniform():
    def luminance(colour: str) -> float:
        r, g, b = (int(v) for v in colour.removeprefix("rgb(").removesuffix(")").split(","))
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    assert luminance(colors.SEQUENTIAL[0][1]) < 10 < 200 < luminance(colors.SEQUENTIAL[-1][1])
    lum = [luminance(c) for _, c in colors.SEQUENTIAL]
    assert lum == sorted(lum)  # dark to bright, monotonically
    near_uniform = np.full((4, 4), 1 / 16) + np.linspace(-0.004, 0.004, 16).reshape(4, 4)
    fig = figures.overlay_figure(np.zeros((4, 4, 3)), near_uniform, uniform=1 / 16)
    d = fig.to_dict()["data"][1]
    assert d["colorscale"][0] == [0.0, "rgb(0,0,4)"] and d["zmin"] == 0 and d["zmax"] == 2.0
    # no hex colour: Streamlit's front end rewrites #000001-#000010 (its theme placeholders)
    assert not any(c.startswith("#") for _, c in colors.SEQUENTIAL + colors.DIVERGING)
    z = np.asarray(fig.data[1].z)
    assert 0.9 < z.min() and z.max() < 1.1  # near-uniform attention sits mid-scale: looks even
    assert d["colorbar"]["ticktext"][d["colorbar"]["tickvals"].index(1.0)] == "1 = uniform"
    keys = figures.overlay_figure(None, np.zeros((3, 3)), opacity_slider=False).to_dict()["data"][0]
    assert keys["zmin"] == 0 and keys["zmax"] == 1.0 and keys["showscale"]
    with pytest.raises(ValueError, match="uniform must be a positive probability"):
        colors.uniform_ratio(np.ones(2), 0.0)


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


@pytest.mark.parametrize("kind", ["query", "received"])
def test_token_maps_cover_exactly_the_pixels_of_the_full_resolution_maps(views, kind):
    """A map drawn one cell per token shows, at every pixel centre, what the (S, S) map showed there,
    with the same probability in the hover, and names the token and its pixels."""
    pixel = (13, 22)
    on_image = views.stage_maps(kind=kind, pixel=pixel)
    on_tokens = views.stage_maps(kind=kind, pixel=pixel, on="tokens")
    uniform = [views.uniform_level(s) for s in range(views.num_stages)]
    old = _heatmaps(figures.stage_panels_figure(views.images[0], on_image, uniform=uniform))
    new = _heatmaps(figures.stage_panels_figure(views.images[0], on_tokens, uniform=uniform))
    for s, (a, b) in enumerate(zip(old, new, strict=True)):
        stride = views.strides[s]
        assert np.asarray(b.z).shape == (32 // stride, 32 // stride)  # the stage's token grid
        np.testing.assert_allclose(_at_pixels(b, (32, 32)), np.asarray(a.z), rtol=1e-3)
        cells = _at_pixels(b, (32, 32), "customdata")  # (32, 32, 7) what the hover reads at each pixel
        np.testing.assert_allclose(cells[..., 6], np.asarray(a.customdata), rtol=1e-3)  # probability
        y, x = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
        np.testing.assert_array_equal(cells[..., 0], y // stride)  # token row and column
        np.testing.assert_array_equal(cells[..., 1], x // stride)
        assert (cells[..., 2] <= y).all() and (y <= cells[..., 3]).all()  # pixels the token covers
        assert (cells[..., 4] <= x).all() and (x <= cells[..., 5]).all()
        np.testing.assert_array_equal(cells[..., 3] - cells[..., 2] + 1, stride)
        assert (a.zmin, a.showscale) == (b.zmin, b.showscale) and a.zmax == pytest.approx(b.zmax, rel=1e-3)
        assert b.hovertemplate.startswith("token (%{customdata[0]}, %{customdata[1]}) · pixels y")
        assert "× uniform (p %{customdata[6]:.3g})" in b.hovertemplate
    assert new[-1].colorbar.title.text == old[-1].colorbar.title.text  # the same shared colour bar


def test_rollout_and_head_token_maps_paint_back_to_the_image_maps(views):
    from hvit.explain.rollout import rollout_all_stages

    roll = rollout_all_stages(views.maps, views.strides, 2, views.image_size)
    for s in range(views.num_stages):
        tm = roll.token_map(s)
        assert tm.grid == (16, 16) and torch.equal(tm.to_image(), roll.to_image(s)[0])
        (hm,) = _heatmaps(figures.overlay_figure(None, tm, uniform=views.rollout_uniform_level))
        np.testing.assert_allclose(
            _at_pixels(hm, (32, 32)), roll.to_image(s)[0].numpy() / views.rollout_uniform_level, rtol=1e-3
        )
    heads = views.head_maps(1, kind="query", pixel=(3, 30), on="tokens")
    assert heads.values.shape == (views.num_heads(1), 8, 8)
    assert torch.equal(heads.to_image(), views.head_maps(1, kind="query", pixel=(3, 30)))


def test_a_grid_that_does_not_divide_the_image_reaches_its_edge():
    """As `grid_to_image` paints it: the last token takes the pixels up to the image's edge."""
    values = torch.arange(6.0).reshape(2, 3)
    tm = TokenMap(values, 4, (10, 11))  # 2 rows of 4 pixels over 10; 3 columns over 11
    assert tm.edges() == ([0, 4, 10], [0, 4, 8, 11])
    (hm,) = _heatmaps(figures.overlay_figure(np.zeros((10, 11, 3)), tm, opacity_slider=False))
    np.testing.assert_array_equal(_at_pixels(hm, (10, 11)), grid_to_image(values, (10, 11), 4).numpy())
    assert list(hm.x) == [-0.5, 3.5, 7.5, 10.5] and list(hm.y) == [-0.5, 3.5, 9.5]
    with pytest.raises(ValueError, match="3 tokens of 4 pixels do not fit 8 pixels"):
        TokenMap(torch.zeros(3, 2), 4, (8, 8))


def test_images_go_out_once_as_png_and_decode_to_the_same_pixels(views):
    fig = figures.stage_panels_figure(views.images[0], views.stage_maps(on="tokens"))
    images = [t for t in fig.data if isinstance(t, go.Image)]
    assert len(images) == 4 and len({t.source for t in images}) == 1  # encoded once
    expected = np.clip(np.round(views.images[0] * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(_decoded(images[0]), expected)
    assert all(t.z is None and (t.x0, t.y0, t.dx, t.dy) == (0, 0, 1, 1) for t in images)
    gray = figures.image_trace(np.full((3, 5), 0.5))  # a grey image is drawn as RGB
    np.testing.assert_array_equal(_decoded(gray), np.full((3, 5, 3), 128, dtype=np.uint8))


def test_values_keep_four_significant_digits():
    values = np.array([0.0123456, 98765.4321, -1.23456e-7, 0.0, np.nan, 1.0])
    out = figures.rounded(values)
    np.testing.assert_allclose(out[:4], [0.01235, 98770.0, -1.235e-7, 0.0], rtol=1e-12)
    assert np.isnan(out[4]) and out[5] == 1.0


def test_head_stats_legend_lists_every_head_below_the_plots():
    rows = [
        {"stage": s, "head": h, "mean_distance": 3.0 + h, "normalized_entropy": 0.5}
        for s in range(2)
        for h in range(12 if s else 4)
    ]
    fig = figures.head_stats_figure(rows)
    listed = [t.name for t in fig.data if t.showlegend]
    assert listed == [f"head {h}" for h in range(1, 13)]  # every head, in order
    legend = fig.layout.legend
    assert legend.orientation == "h" and legend.yanchor == "top" and legend.y < 0  # in rows under the plots
    assert fig.layout.margin.b >= 70 + 22 * 2  # room for two rows of entries
    assert len({t.marker.color for t in fig.data}) == 12  # one colour per head
    xs = [x for t in fig.data if t.xaxis == "x" for x in t.x]
    assert all(abs(x - round(x)) <= 0.3 + 1e-9 for x in xs)  # each head beside its own stage
