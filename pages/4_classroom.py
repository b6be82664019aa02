"""Classroom walkthrough: a guided lesson in six steps, each with a formula and a live figure.

The step and the choices (image, stage, head, query position) live in the address bar
(``st.query_params``), so a teacher can bookmark or share a link that reopens the same view. Stages and
heads in the address are numbered from 1, as on screen (``?step=2&stage=1&head=2``).
"""

from __future__ import annotations

import streamlit as st

import common
from hvit import demo
from hvit.explain import figures

STEPS = {1: "Patches", 2: "Attention", 3: "Reduction", 4: "Pyramid", 5: "Decision", 6: "Trust"}
KEYS = (
    "cls_step",
    "cls_stage",
    "cls_head",
    "cls_qy",
    "cls_qx",
    "cls_image_source",
    "cls_sample",
    "cls_shapes_index",
)
CHART = {"width": "stretch", "config": {"displayModeBar": False}, "theme": None}  # hvit's own colours

in_use = common.require_model()
model, mkey = in_use.model, in_use.key
size = model.preprocessing.img_size


# ----- state <-> URL ----------------------------------------------------------------------------------


def _int(value: str | None, lo: int, hi: int, default: int) -> int:
    try:
        return min(hi, max(lo, int(value))) if value is not None else default
    except ValueError:
        return default


def _from_url() -> dict:
    """Widget values from the address bar (anything missing or invalid falls back to a default)."""
    q = st.query_params
    state = {
        "cls_step": _int(q.get("step"), 1, len(STEPS), 1),
        "cls_stage": _int(q.get("stage"), 1, model.config.num_stages, 1) - 1,
        "cls_qy": _int(q.get("qy"), 0, size - 1, size // 2),
        "cls_qx": _int(q.get("qx"), 0, size - 1, size // 2),
    }
    head = q.get("head")
    state["cls_head"] = -1 if head in (None, "mean") else _int(head, 1, 64, 0) - 1
    image = q.get("img", "")
    if image.startswith("shapes:"):
        state.update(cls_image_source="shapes", cls_shapes_index=_int(image[7:], 0, 9999, 0))
    elif image.startswith("sample:"):
        match = [p for p in common.sample_paths() if f"{p.parent.name}/{p.name}" == image[7:]]
        if match:
            state.update(cls_image_source="sample", cls_sample=match[0])
    return state


def _to_url() -> None:
    s = st.session_state["cls_state"]
    params = {
        "step": s["cls_step"],
        "stage": s["cls_stage"] + 1,
        "head": "mean" if s.get("cls_head", -1) < 0 else s["cls_head"] + 1,
        "qy": s["cls_qy"],
        "qx": s["cls_qx"],
    }
    source = s.get("cls_image_source") or "sample"
    if source == "shapes":
        params["img"] = f"shapes:{s.get('cls_shapes_index', 0)}"
    elif source == "sample" and s.get("cls_sample") is not None:
        params["img"] = f"sample:{s['cls_sample'].parent.name}/{s['cls_sample'].name}"
    if {k: str(v) for k, v in st.query_params.to_dict().items()} != {k: str(v) for k, v in params.items()}:
        st.query_params.from_dict(params)


# First visit in this session: the URL decides. Later visits: what this session last had (widgets
# forget their values while another page is shown).
if "cls_state" not in st.session_state:
    st.session_state["cls_state"] = _from_url()
for key, value in st.session_state["cls_state"].items():
    st.session_state.setdefault(key, value)


def _go(delta: int) -> None:
    st.session_state["cls_step"] = min(len(STEPS), max(1, st.session_state["cls_step"] + delta))


# ----- header: title, step navigation, image -------------------------------------------------------------

head_row = st.columns([5, 1.3], vertical_alignment="bottom")
head_row[0].title("Classroom walkthrough")


def _close_image_popover() -> None:
    """A choice made in the Image popover closes it, so it no longer covers the step buttons."""
    st.session_state["cls_image_popover"] = False


with head_row[1].popover(
    "Image", icon=":material/image:", width="stretch", key="cls_image_popover", on_change="rerun"
):
    picked = common.image_picker("cls", in_use, on_pick=_close_image_popover)
nav = st.columns([1, 8, 1], vertical_alignment="center", gap="small")
nav[0].button(
    "Back",
    icon=":material/arrow_back:",
    on_click=_go,
    args=(-1,),
    disabled=st.session_state["cls_step"] == 1,
    key="cls_back",
    width="stretch",
)
step = nav[1].segmented_control(
    "Step",
    list(STEPS),
    format_func=lambda i: f"{i} · {STEPS[i]}",
    key="cls_step",
    label_visibility="collapsed",
    width="stretch",
)
if step is None:  # clicking the selected step again clears it: stay where we were
    step = st.session_state["cls_state"].get("cls_step", 1)
    st.session_state["cls_step"] = step
nav[2].button(
    "Next",
    icon=":material/arrow_forward:",
    icon_position="right",
    on_click=_go,
    args=(1,),
    disabled=step == len(STEPS),
    key="cls_next",
    width="stretch",
)
if picked is None:
    st.info("Choose an image with the Image button above.")
    st.stop()

views = common.attention_views(model, mkey, picked.image, picked.key)
pred = common.prediction(model, mkey, picked.image, picked.key)
image = views.images[0]
mask = demo.mask_at(picked.mask, size) if picked.mask is not None else None


# The step's body is a fragment: its sliders, head choice and clicks on the image rerun only the step;
# Back, Next, the step bar and the image rerun the page.
@st.fragment
def lesson_step() -> None:
    text, figure = st.columns([1.15, 1.5], gap="large")

    def stage_and_query(
        show_head: bool = False, show_stage: bool = True, show_query: bool = True
    ) -> tuple[int, int | None, tuple[int, int]]:
        """The step's controls: stage, head and query position (kept in the URL)."""
        with text:
            stage = 0
            if show_stage:
                stage = st.selectbox(
                    "Stage", range(views.num_stages), format_func=lambda s: f"stage {s + 1}", key="cls_stage"
                )
            head = None
            if show_head:
                head = common.head_selectbox(
                    views.num_heads(stage), key="cls_head", mean_label="mean of the heads"
                )
            if not show_query:
                return (
                    stage,
                    head,
                    (st.session_state["cls_state"]["cls_qy"], st.session_state["cls_state"]["cls_qx"]),
                )
            c = st.columns(2)
            qy = c[0].slider("Query row", 0, size - 1, key="cls_qy")
            qx = c[1].slider("Query column", 0, size - 1, key="cls_qx")
        return stage, head, (int(qy), int(qx))

    def _on_click() -> None:
        points = st.session_state["cls_query_chart"].selection.get("points") or []
        if points:
            st.session_state["cls_qy"] = min(size - 1, max(0, int(round(points[0]["y"] + 0.5))))
            st.session_state["cls_qx"] = min(size - 1, max(0, int(round(points[0]["x"] + 0.5))))

    cfg = model.config
    grids = [views.groups(s)[0].query_grid for s in range(views.num_stages)]

    # ----- the steps --------------------------------------------------------------------------------------------

    if step == 1:
        grid, stride = grids[0], views.strides[0]
        with text:
            st.subheader("1 · Patches and tokens")
            st.markdown(
                f"A transformer does not see pixels. It cuts the {size}x{size} image into patches of "
                f"{stride}x{stride} pixels and turns each patch into a **token**: a vector of "
                f"{cfg.embed_dims[0]} numbers computed from the patch's "
                f"{'stem features (see below)' if cfg.stem_channels else 'pixels'} by one learned linear map."
            )
            st.latex(
                r"N = \frac{H}{P}\cdot\frac{W}{P} = " + f"{grid[0]}\\cdot{grid[1]} = {grid[0] * grid[1]}"
            )
            st.latex(
                r"\mathbf{x}_i = W_e\,\mathrm{patch}_i + \mathbf{b}\ \in \mathbb{R}^{"
                + str(cfg.embed_dims[0])
                + "}"
            )
            if cfg.overlap_patch_embed:
                st.caption(
                    f"This model is a PVT v2: its patches overlap (kernel {2 * stride - 1}, stride {stride}), so "
                    "neighbouring tokens share a few pixels. The grid shows the stride."
                )
            if cfg.stem_channels:
                st.caption(
                    f"Before cutting patches, this model runs a small **convolutional stem** over the whole image "
                    f"({cfg.stem_channels} learned 3x3 filters, then GroupNorm and ReLU), so each token is computed "
                    "from edge and colour features of its patch rather than from raw pixels. A tiny transformer "
                    "learns several times faster this way (Xiao et al., 2021)."
                )
            st.caption("Ask the class: what happens to the number of tokens if the image is twice as wide?")
        with figure:
            st.plotly_chart(
                demo.patch_grid_figure(image, grid, stride, height=420), key="cls_patches", **CHART
            )
            st.caption(f"{grid[0] * grid[1]} tokens on a {grid[0]}x{grid[1]} grid: one cell per token.")

    elif step == 2:
        with text:
            st.subheader("2 · Stage-1 attention")
            st.markdown(
                "Every token asks a question (its **query**) and every token offers an answer (its **key**). "
                "The softmax of their dot products says how much of each answer (its **value**) the query "
                "takes. Click on the image (or move the sliders) to choose the query token."
            )
            st.latex(r"\mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d}}\right)V")
        _, head, pixel = stage_and_query(show_head=True, show_stage=False)
        heat = views.query_attention(0, -1, head, pixel=pixel, on="tokens")
        with figure:
            st.plotly_chart(
                demo.query_figure(
                    image,
                    heat,
                    pixel,
                    grids[0],
                    views.strides[0],
                    title=f"Stage 1: where the query token looks ({'mean of the heads' if head is None else f'head {head + 1}'})",
                    height=440,
                    uniform=views.uniform_level(0, -1, head),
                ),
                key="cls_query_chart",
                on_select=_on_click,
                selection_mode="points",
                **CHART,
            )
            st.caption(
                "Bright: keys that receive most of this query's attention; 1 on the colour bar is uniform "
                "attention (the query spreading evenly over every key). Each row of attention sums to 1."
            )

    elif step == 3:
        with text:
            st.subheader("3 · Spatial reduction")
            st.markdown(
                "Comparing every token with every token costs $N^2$. PVT keeps all $N$ queries but builds the "
                "keys and values from a grid **R times coarser** (a strided R x R convolution): each key "
                "summarises an R x R block of tokens."
            )
            st.latex(
                r"K, V = \mathrm{LN}\big(\mathrm{Conv}_{R\times R,\ \mathrm{stride}\ R}(X)\big)\,W_{K,V}"
            )
            st.latex(r"\mathrm{cost} \propto N\cdot\frac{N}{R^2}\ \text{ instead of }\ N^2")
        stage, _, _ = stage_and_query(show_query=False)
        record = views.groups(stage)[0]
        n = record.query_grid[0] * record.query_grid[1]
        m = record.key_grid[0] * record.key_grid[1]
        with text:
            c = st.columns(3)
            c[0].metric("Queries N", f"{n:,}")
            c[1].metric("Keys", f"{m:,}")
            c[2].metric("Pairs saved", f"{1 - m / n:.0%}" if n else "–")
            if m == 1:
                st.warning(
                    "A single key: every query attends to the same summary of the whole grid (global pooling)."
                )
        with figure:
            st.plotly_chart(
                figures.footprint_figure(
                    image,
                    views.footprint(stage, -1, 0, on="tokens"),
                    key_grid=record.key_grid,
                    title=f"Stage {stage + 1}: the {record.key_grid[0]}x{record.key_grid[1]} key grid over the image",
                ),
                key="cls_footprint",
                **CHART,
            )
            st.caption("Each coloured block is one key: the tokens (and pixels) it summarises.")

    elif step == 4:
        with text:
            st.subheader("4 · Downsampling into the pyramid")
            st.markdown(
                "Between stages, a strided patch embedding merges each 2x2 block of tokens into one, with more "
                "channels. The grid shrinks, the tokens get richer, and a query at a deeper stage covers more "
                "of the image: the same pyramid a CNN builds."
            )
            st.latex(r"H_{s+1}=\frac{H_s}{2},\qquad C_{s+1}>C_s")
            st.latex(r"\to".join(f"{g[0]}^2" for g in grids) + r"\ \text{tokens}")
        _, _, pixel = stage_and_query(show_stage=False)
        with figure:
            report = common.complexity_report(model, mkey)
            st.plotly_chart(demo.pyramid_figure(report, height=330), key="cls_pyramid", **CHART)
        # full width below: four stages, two by two, each panel large enough to read
        maps = views.stage_maps(kind="query", pixel=pixel, on="tokens")
        st.plotly_chart(
            figures.stage_panels_figure(
                image,
                maps,
                cols=2 if len(maps) == 4 else min(3, len(maps)),
                panel_height=280,
                opacity_slider=False,
                title="The same query's attention at every stage (mean of the heads), each on its own scale",
                uniform=[views.uniform_level(s) for s in range(len(maps))],
                # Each stage on its own bar: a deep stage's few keys reach many times uniform, and on
                # one shared range the early stages' structure (up to 2-3x) would be drawn near black.
                shared_scale=False,
            ),
            key="cls_stages",
            **CHART,
        )
        st.caption(
            "Each stage has its own colour bar, in multiples of uniform attention: 1 = the query spreading "
            "evenly over that stage's keys. Deeper stages have fewer keys, so their attention can reach "
            "many times uniform; compare the stages by where their maps stand against the 1 mark."
        )

    elif step == 5:
        rollout = common.rollout_maps(model, mkey, picked.image, picked.key, on="tokens")
        with text:
            st.subheader("5 · How the class is decided")
            st.markdown(
                "The last stage's tokens are averaged into one vector; a linear layer turns it into one score "
                "per class, and the softmax turns scores into probabilities. **Attention rollout** follows the "
                "attention back through every stage to show which input tokens that average draws from."
            )
            st.latex(
                r"p = \mathrm{softmax}\Big(W\,\tfrac{1}{N_4}\textstyle\sum_i \mathbf{x}^{(4)}_i + \mathbf{b}\Big)"
            )
            st.plotly_chart(demo.prediction_figure(pred, height=220), key="cls_pred", **CHART)
            common.domain_note(in_use, picked)
            if picked.label:
                verdict = "right" if picked.label == pred.labels[0] else "wrong"
                st.caption(f"The true class is **{picked.label}**: the model is {verdict}.")
        with figure:
            st.plotly_chart(
                figures.overlay_figure(
                    image,
                    rollout[-1],
                    opacity=0.6,
                    title="Attention rollout of the prediction (all stages)",
                    height=440,
                    uniform=views.rollout_uniform_level,
                ),
                key="cls_rollout",
                **CHART,
            )
            if mask is not None:
                score = demo.map_scores({"rollout": rollout[-1].to_image()}, mask)[0]
                st.caption(
                    f"Mask mass: {score['mask mass']:.0%} of the rollout lies on the shape (chance: {score['chance']:.0%})."
                )

    elif step == 6:
        settings = common.attribution_settings()
        target = pred.class_index[0]
        with st.spinner("Computing integrated gradients and checking them against a randomised model…"):
            ig = common.attribution(
                model, mkey, picked.image, picked.key, "integrated_gradients", target, -1, settings
            )
            random_maps, corr = common.randomisation(
                model,
                mkey,
                picked.image,
                picked.key,
                {"integrated_gradients": ig["map"]},
                ("integrated_gradients",),
                target,
                -1,
                settings,
            )
        with text:
            st.subheader("6 · Reading an attribution, and when not to trust it")
            st.markdown(
                "**Integrated gradients** add up, pixel by pixel, how the class score changes on the way from a "
                "blank image to this one. Red pixels raise the score, blue ones lower it. The pieces add up "
                "to the whole change (completeness):"
            )
            st.latex(
                r"\mathrm{IG}_i=(x_i-x'_i)\int_0^1\frac{\partial f(x'+\alpha(x-x'))}{\partial x_i}\,d\alpha"
            )
            st.latex(r"\textstyle\sum_i \mathrm{IG}_i(x) = f(x) - f(x')")
            rho = corr["integrated_gradients"]
            st.markdown(
                f"**Do not trust a map blindly.** Re-initialise every weight and compute it again: here the two "
                f"maps have rank correlation **{rho:.2f}**. "
                + (
                    "That is low: the map depends on what the model learned."
                    if rho < 0.5
                    else "That is high: the map mostly shows the image itself, not the model."
                )
            )
            if mask is not None:
                score = demo.map_scores({"IG": ig["map"]}, mask)[0]
                st.markdown(
                    f"Against the true shape: pointing game **{score['pointing game']:.0f}**, mask mass "
                    f"**{score['mask mass']:.0%}** (chance {score['chance']:.0%})."
                )
        with figure:
            fig = figures.twin_figure(
                image,
                {"Integrated gradients": (ig["map"], random_maps["integrated_gradients"])},
                {"Integrated gradients": True},
                labels=("trained", "random weights"),
                panel_height=280,
                cols=1,  # one under the other: side by side, the column would make each too narrow
            )
            st.plotly_chart(fig, key="cls_ig", **CHART)
            st.caption(
                f"Class explained: {pred.labels[0]}. Both panels share one colour scale centred on zero, so "
                "what changes between them is the map, not the scale."
            )

    st.session_state["cls_state"].update({k: st.session_state[k] for k in KEYS if k in st.session_state})
    _to_url()
    st.caption(f"Step {step} of {len(STEPS)} · this view's link: copy the address bar to reopen it.")


lesson_step()
