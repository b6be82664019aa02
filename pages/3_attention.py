"""Attention and attributions: where each head looks, how attention flows, what the prediction uses."""

from __future__ import annotations

import streamlit as st

import common
from hvit import demo
from hvit.explain import default_cam_stage, figures

METHOD_LABELS = {
    "saliency": "Saliency",
    "integrated_gradients": "Integrated gradients",
    "input_x_gradient": "Input x gradient",
    "gradient_shap": "GradientSHAP",
    "smoothgrad": "SmoothGrad",
    "occlusion": "Occlusion",
    "grad_cam": "Grad-CAM",
}
CHART = {"width": "stretch", "config": {"displayModeBar": False}, "theme": None}  # hvit's own colours

st.title("Attention and attributions")
st.caption(
    "Attention shows where a layer looks; an attribution shows which pixels the prediction depends on. "
    "Pick an image, a stage, a block, a head and a query position (click the image or use the sliders)."
)
in_use = common.require_model()
model, mkey = in_use.model, in_use.key
size = model.preprocessing.img_size

# The image row reruns the whole page (every figure depends on the image); the controls below it and the
# attributions are fragments: a click on the image, a stage or a head reruns only the maps it changes.
picker, summary = st.columns([1.4, 2], gap="large", vertical_alignment="bottom")
with picker:
    picked = common.image_picker("att", in_use)
if picked is None:
    st.stop()
ikey = picked.key
with st.spinner("Running the model with attention recording…"):
    views = common.attention_views(model, mkey, picked.image, ikey)
    pred = common.prediction(model, mkey, picked.image, ikey)
image = views.images[0]
mask = demo.mask_at(picked.mask, size) if picked.mask is not None else None
with summary:
    truth = f" · true class **{picked.label}**" if picked.label else ""
    st.markdown(f"Prediction: **{pred.labels[0]}** ({pred.probs[0]:.0%}){truth}")
    common.domain_note(in_use, picked)


def _on_click() -> None:
    """A click on a query token of the image moves the query there."""
    points = st.session_state["att_query_chart"].selection.get("points") or []
    if points:
        st.session_state["att_qy"] = min(size - 1, max(0, int(round(points[0]["y"] + 0.5))))
        st.session_state["att_qx"] = min(size - 1, max(0, int(round(points[0]["x"] + 0.5))))


@st.fragment
def query_maps() -> None:
    """Stage, block, head and query controls with the maps they drive (reruns on its own)."""
    controls, main = st.columns([1, 2.4], gap="large")
    with controls:
        c = st.columns(2)
        stage = c[0].selectbox(
            "Stage", range(views.num_stages), format_func=lambda s: f"stage {s + 1}", key="att_stage"
        )
        n_blocks = views.num_blocks(stage)
        if st.session_state.get("att_block", 0) >= n_blocks:
            st.session_state["att_block"] = n_blocks - 1
        block = c[1].selectbox(
            "Block", range(n_blocks), format_func=lambda b: f"block {b + 1}", key="att_block"
        )
        n_heads = views.num_heads(stage)
        head = common.head_selectbox(n_heads, key="att_head")  # None: the mean over the heads
        st.session_state.setdefault("att_qy", size // 2)
        st.session_state.setdefault("att_qx", size // 2)
        qy = st.slider("Query row (pixels from the top)", 0, size - 1, key="att_qy")
        qx = st.slider("Query column (pixels from the left)", 0, size - 1, key="att_qx")

    pixel = (int(qy), int(qx))
    groups = views.layer_info(stage, block)
    query_grid = groups[0]["query_grid"]
    stride = views.strides[stage]
    token = views.query_token(stage, pixel)
    if head is None and len(groups) > 1:
        record_info = groups
    else:
        record_info = [g for g in groups if head is None or head in g["heads"]]

    g = record_info[0]
    kh, kw = g["key_grid"]
    with main:
        left, right = st.columns(2, gap="medium")
        heat = views.query_attention(stage, block, head, pixel=pixel, on="tokens")
        who = "mean of the heads" if head is None else f"head {head + 1}"
        left.plotly_chart(
            demo.query_figure(
                image,
                heat,
                pixel,
                query_grid,
                stride,
                title=f"Where the query looks<br>stage {stage + 1} · block {block + 1} · {who}",
                height=420,
                uniform=views.uniform_level(stage, block, head),
            ),
            key="att_query_chart",
            on_select=_on_click,
            selection_mode="points",
            **CHART,
        )
        if len(record_info) == 1:
            keys = views.query_attention(stage, block, head, pixel=pixel, on="keys")
            right.plotly_chart(
                demo.key_grid_figure(
                    keys,
                    title=f"The same query on the {kh}x{kw} key grid",
                    height=420,
                    uniform=views.uniform_level(stage, block, head),
                ),
                **CHART,
            )
        else:
            right.info(
                "This stage is multi-scale: its head groups use different key grids. Pick one head to see it."
            )
        reduction = (
            f"SR {g['sr_ratio']}: each key summarises {g['sr_ratio']}x{g['sr_ratio']} tokens"
            if g["sr_ratio"]
            else "linear SRA: keys pooled to a fixed grid"
        )
        st.caption(
            f"Query token ({token[0]}, {token[1]}) of the {query_grid[0]}x{query_grid[1]} query grid of stage "
            f"{stage + 1} (each token covers {stride}x{stride} pixels, green square). Keys: {kh}x{kw} = "
            f"{kh * kw} ({reduction}). Each row of attention sums to 1 over the keys; the colour shows it "
            f"against uniform attention (1/{kh * kw} per key = 1 on the colour bar)."
        )
        if kh * kw == 1:
            st.warning(
                "This layer has a single key: every query puts all its attention on it, so the map is flat. "
                "Spatial reduction has collapsed attention into global pooling here.",
                icon=":material/warning:",
            )

    st.subheader(f"All heads of stage {stage + 1}, block {block + 1}")
    st.caption(
        "Each panel: where the same query looks, for one head, against uniform attention (1 = the query spreads "
        "evenly over that head's keys). One colour scale for all heads, so a head that spreads evenly looks even."
    )
    st.plotly_chart(
        figures.head_grid_figure(
            views,
            stage,
            block,
            kind="query",
            pixel=pixel,
            cols=min(3, n_heads),
            panel_height=290,
            opacity_slider=False,
        ),
        **CHART,
    )


query_maps()

st.subheader("Rollout across stages")
st.caption(
    "Attention rollout: where each stage's output draws from, on the stage-1 token grid, against a map "
    "spread evenly over the image (1 on the colour bar). The last panel is what the classifier reads."
)
rollout = common.rollout_maps(model, mkey, picked.image, ikey, on="tokens")  # drawn one cell per token
st.plotly_chart(
    figures.stage_panels_figure(
        image,
        rollout,
        titles=[f"rollout to the end of stage {s + 1}" for s in range(len(rollout))],
        cols=2 if len(rollout) == 4 else min(3, len(rollout)),
        panel_height=300,
        opacity_slider=False,
        uniform=views.rollout_uniform_level,
    ),
    **CHART,
)
if mask is not None:
    scores = demo.map_scores({f"rollout, stage {s + 1}": m.to_image() for s, m in enumerate(rollout)}, mask)
    st.dataframe(scores, hide_index=True, width="stretch", column_config=common.SCORE_COLUMNS)

st.subheader("Near and far heads")
st.caption(
    "Mean attention distance of every head, stage by stage: low = the head looks at local detail, high = "
    "at global context. Normalised entropy: 0 = looks at one key, 1 = spreads evenly over all keys."
)
stats = common.head_stats(model, mkey, picked.image, ikey)
st.plotly_chart(figures.head_stats_figure(stats, title=""), **CHART)

# ----- attributions ------------------------------------------------------------------------------------


@st.fragment
def attributions() -> None:
    """The attribution form, its maps, scores and checks (reruns on its own)."""
    st.subheader("Attributions")
    classes = in_use.class_names
    with st.form("att_form", border=True):
        # the methods on a row of their own: in a narrow column their chips were cut ("Grad-CA")
        methods = st.multiselect(
            "Methods",
            list(METHOD_LABELS),
            default=list(common.DEFAULT_METHODS),
            format_func=METHOD_LABELS.get,
            key="att_methods",
        )
        c = st.columns([1.6, 1, 1, 1], gap="medium")
        target = c[0].selectbox(
            "Explain the class",
            [-1, *range(len(classes))],
            format_func=lambda t: f"predicted ({pred.labels[0]})" if t < 0 else classes[t],
            key="att_target",
        )
        cam_stage = c[1].selectbox(
            "Grad-CAM stage",
            range(views.num_stages),
            index=default_cam_stage(model.config),  # the deepest stage fine enough to point at the object
            format_func=lambda s: f"stage {s + 1}",
        )
        steps = c[2].number_input(
            "IG steps",
            4,
            256,
            common.DEFAULT_IG_STEPS,
            step=4,
            help="Integration steps of integrated gradients.",
        )
        samples = c[3].number_input(
            "Noise samples",
            2,
            64,
            common.DEFAULT_NOISE_SAMPLES,
            step=2,
            help="SmoothGrad and GradientSHAP samples.",
        )
        st.form_submit_button("Compute attributions", type="primary", icon=":material/auto_awesome:")
    settings = common.attribution_settings(steps, samples)
    target_index = pred.class_index[0] if target < 0 else int(target)
    if not methods:
        st.info("Choose at least one method.")
    else:
        maps, signed, notes = {}, {}, []
        with st.status("Computing attributions…", expanded=False) as status:
            for method in methods:
                status.update(label=f"Computing {METHOD_LABELS[method]}…")
                result = common.attribution(
                    model, mkey, picked.image, ikey, method, target_index, cam_stage, settings
                )
                maps[METHOD_LABELS[method]] = result["map"]
                signed[METHOD_LABELS[method]] = result["signed"]
                if result["note"]:
                    notes.append(result["note"])
                if result["delta"] is not None:
                    notes.append(
                        f"Integrated gradients add up to the logit change within {abs(result['delta']):.3g} "
                        "(completeness check)."
                    )
            status.update(label=f"Attributions of class '{classes[target_index]}'", state="complete")
        titled = {
            (f"{name} (stage {cam_stage + 1})" if name == METHOD_LABELS["grad_cam"] else name): m
            for name, m in maps.items()
        }
        signed_titled = dict(zip(titled, signed.values(), strict=True))
        grid = figures.attribution_grid_figure(image, titled, signed_titled, cols=min(3, len(maps)))
        st.plotly_chart(grid, **CHART)
        st.caption(
            "Each panel has its own colour bar: methods measure different things in different units. "
            "Signed methods: red = evidence for the class, blue = against, white = no effect; the others "
            "start dark at zero. " + " ".join(notes)
        )
        if mask is not None:
            st.markdown("**Scores against the ground-truth mask** (the shape's pixels)")
            st.dataframe(
                demo.map_scores(maps, mask),
                hide_index=True,
                width="stretch",
                column_config=common.SCORE_COLUMNS,
            )
            st.caption(
                "Pointing game: does the map's maximum fall on the shape (1) or not (0)? Mask mass: the share of "
                "the map's positive mass on the shape; compare with chance, the shape's share of the image."
            )

        # ----- checks ------------------------------------------------------------------------------------
        st.subheader("Can we trust these maps?")
        random_maps = None
        left, right = st.columns(2, gap="large")
        with left:
            st.markdown("**Randomisation check** (Adebayo et al., 2018)")
            st.caption(
                "Compute each map again with every weight re-initialised. A map that barely changes shows the "
                "image, not what the model learned: its rank correlation with the original stays high."
            )
            if st.toggle("Run the randomisation check", key="att_random"):
                raw = {m: maps[METHOD_LABELS[m]] for m in methods}
                with st.spinner("Re-initialising the model and computing the maps again…"):
                    random_maps, corr = common.randomisation(
                        model,
                        mkey,
                        picked.image,
                        ikey,
                        raw,
                        tuple(methods),
                        target_index,
                        cam_stage,
                        settings,
                    )
                st.dataframe(
                    [
                        {
                            "method": METHOD_LABELS[m],
                            "Spearman (trained vs random)": c,
                            "verdict": "passes" if c < 0.5 else "suspicious: map ignores the weights",
                        }
                        for m, c in corr.items()
                    ],
                    hide_index=True,
                    width="stretch",
                )
        with right:
            st.markdown("**Head ablation**")
            st.caption("Switch one head off in every block of its stage and watch the class probability.")
            c = st.columns(2)
            ab_stage = c[0].selectbox(
                "Stage ", range(views.num_stages), format_func=lambda s: f"stage {s + 1}", key="att_ab_stage"
            )
            ab_head = c[1].selectbox(
                "Head ",
                range(views.num_heads(ab_stage)),
                format_func=lambda h: f"head {h + 1}",
                key="att_ab_head",
            )
            result = common.ablation(model, mkey, picked.image, ikey, ab_stage, ab_head, target_index)
            st.metric(
                f"p({classes[target_index]}) with stage {ab_stage + 1} head {ab_head + 1} off",
                f"{result['prob_after']:.1%}",
                delta=f"{result['delta'] * 100:+.1f} points",
            )
            if st.toggle("Scan every head", key="att_scan"):
                with st.spinner("Switching each head off in turn…"):
                    scan = common.ablation_scan(model, mkey, picked.image, ikey, target_index)
                st.plotly_chart(figures.ablation_figure(scan, title=""), **CHART)
        if random_maps is not None:  # full width: two panels per method, each large enough to read
            st.markdown("**Randomisation check: trained and random maps, one colour scale per method**")
            st.plotly_chart(
                figures.twin_figure(
                    image,
                    {METHOD_LABELS[m]: (maps[METHOD_LABELS[m]], random_maps[m]) for m in methods},
                    signed,
                ),
                **CHART,
            )


attributions()
