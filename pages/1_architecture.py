"""Architecture explorer: set every parameter of the pyramid and see what it costs, live."""

from __future__ import annotations

import dataclasses
import json
import re

import streamlit as st

import common
import hvit
from hvit import demo
from hvit.complexity import format_bytes, format_count
from hvit.config import HViTConfig
from hvit.registry import model_config

IN_USE = "the model in use"
DEFAULT_PRESET = "pvt_v2_b0"
STAGE_FIELDS = {  # config field -> (widget key stem, UI name)
    "embed_dims": ("dim", "width"),
    "num_heads": ("heads", "heads"),
    "mlp_ratios": ("mlp", "MLP ratio"),
    "depths": ("depth", "depth"),
    "sr_ratios": ("sr", "SR ratio"),
}


# ----- state: the preset fills the widgets; the values survive a visit to another page -------------


def _preset_config(choice: str) -> HViTConfig:
    if choice == IN_USE:
        in_use = common.model_in_use()
        return in_use.model.config if in_use is not None else model_config(DEFAULT_PRESET)
    return model_config(choice)


def _sr_text(ratio: int | tuple[int, ...]) -> str:
    return str(ratio) if isinstance(ratio, int) else ", ".join(map(str, ratio))


def _values_from_config(cfg: HViTConfig) -> dict:
    values = {
        "arch_img_size": cfg.img_size,
        "arch_patch_size": cfg.patch_size,
        "arch_num_stages": cfg.num_stages,
    }
    for i in range(cfg.num_stages):
        values[f"arch_dim_{i}"] = cfg.embed_dims[i]
        values[f"arch_heads_{i}"] = cfg.num_heads[i]
        values[f"arch_mlp_{i}"] = float(cfg.mlp_ratios[i])
        values[f"arch_depth_{i}"] = cfg.depths[i]
        values[f"arch_sr_{i}"] = _sr_text(cfg.sr_ratios[i])
    return values


def _apply_preset() -> None:
    st.session_state["arch_values"] = _values_from_config(_preset_config(st.session_state["arch_preset"]))
    st.session_state.update(st.session_state["arch_values"])


if "arch_values" not in st.session_state:
    st.session_state["arch_preset"] = DEFAULT_PRESET
    st.session_state["arch_values"] = _values_from_config(model_config(DEFAULT_PRESET))
for key, value in st.session_state["arch_values"].items():  # widgets forget their value on other pages
    st.session_state.setdefault(key, value)


# ----- cached computations (keyed by the configuration as JSON) -----------------------------------


@st.cache_data(max_entries=64, show_spinner=False)
def _report(cfg_json: str, img_size: int) -> tuple[list[dict], dict, object]:
    report = hvit.model_complexity(HViTConfig.from_dict(json.loads(cfg_json)), img_size)
    totals = {
        "params": report.total_params,
        "gmacs": report.gmacs,
        "head_params": report.head_params,
        "stage_notes": [s.notes for s in report.stages],
        "notes": report.notes,
    }
    return report.rows(), totals, demo.pyramid_figure(report)


@st.cache_data(max_entries=64, show_spinner=False)
def _cost_figure(cfg_json: str, img_size: int) -> object:
    return demo.attention_cost_figure(HViTConfig.from_dict(json.loads(cfg_json)), img_size)


# ----- page ------------------------------------------------------------------------------------------

st.title("Architecture explorer")
st.caption(
    "Every number below is computed from the shapes alone, as you type: no model is run. "
    "MACs are multiply-accumulates for one image, the unit the PVT papers call FLOPs."
)

top = st.columns([2, 1.25, 1.25, 3], gap="medium", vertical_alignment="top")
choices = [IN_USE, *hvit.list_models()] if common.model_in_use() is not None else hvit.list_models()
if st.session_state.get("arch_preset") not in choices:
    st.session_state["arch_preset"] = DEFAULT_PRESET
top[0].selectbox(
    "Start from a preset",
    choices,
    key="arch_preset",
    on_change=_apply_preset,
    help="Fills every control below; then change any of them.",
)
top[1].number_input(
    "Image size (px)",
    8,
    2048,
    step=16,
    key="arch_img_size",
    help="Side of the square input image, in pixels.",
)
top[2].number_input(
    "Patch size (px)",
    1,
    64,
    step=1,
    key="arch_patch_size",
    help="Stage 1 cuts the image into patches this many pixels a side; each patch becomes one token.",
)
placeholders = {("img_size", None): top[1].empty(), ("patch_size", None): top[2].empty()}
base = _preset_config(st.session_state["arch_preset"])
family = "PVT v2 blocks" if base.overlap_patch_embed else "PVT v1 blocks"
extras = [
    *([f"a {base.stem_channels}-channel convolutional stem"] if base.stem_channels else []),
    "overlapping patch embedding" if base.overlap_patch_embed else "non-overlapping patches",
    "position embeddings" if base.pos_embed else "no position embedding",
    "class token in the last stage" if base.cls_token else "average pooling",
    "linear SRA (7x7 keys)" if base.linear_sra else "SRA",
]
top[3].markdown(f"**{family}** from the preset: " + ", ".join(extras) + ".")
metrics_box = top[3].container()

n_stages = st.session_state["arch_num_stages"]
with st.expander(
    "Per-stage settings: width, heads, MLP ratio, depth, spatial-reduction (SR) ratio", expanded=True
):
    columns = st.columns(n_stages, gap="medium")
    notes_boxes = []
    for i, col in enumerate(columns):
        with col:
            st.markdown(f"**Stage {i + 1}**")
            st.number_input("Width (channels)", 1, 4096, step=16, key=f"arch_dim_{i}", help="Token width C.")
            placeholders[("embed_dims", i)] = st.empty()
            st.number_input("Heads", 1, 64, step=1, key=f"arch_heads_{i}", help="Must divide the width.")
            placeholders[("num_heads", i)] = st.empty()
            st.number_input(
                "MLP ratio",
                0.25,
                16.0,
                step=0.5,
                key=f"arch_mlp_{i}",
                help="Hidden width of the MLP / width.",
            )
            placeholders[("mlp_ratios", i)] = st.empty()
            st.number_input("Depth (blocks)", 1, 64, step=1, key=f"arch_depth_{i}")
            placeholders[("depths", i)] = st.empty()
            st.text_input(
                "SR ratio",
                key=f"arch_sr_{i}",
                help="Keys come from a grid this many times coarser. A list such as '4, 1' splits the heads "
                "into groups that attend at different scales.",
            )
            placeholders[("sr_ratios", i)] = st.empty()
            notes_boxes.append(st.container())

# Stores what the widgets hold, so a visit to another page does not reset them.
st.session_state["arch_values"] = {k: st.session_state[k] for k in st.session_state["arch_values"]}


def _parse_sr(text: str, stage: int) -> int | tuple[int, ...] | None:
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        placeholders[("sr_ratios", stage)].error(
            f"'{text}' is not an SR ratio: type a whole number such as 8 (or a list such as 4, 1).",
            icon=":material/error:",
        )
        return None
    return values[0] if len(values) == 1 else values


def _plain(message: str) -> str:
    """Config field names -> the names on the controls (embed_dims[1] -> stage 2 width)."""
    for field, (_, name) in STAGE_FIELDS.items():
        message = re.sub(rf"{field}\[(\d+)\]", lambda m, n=name: f"stage {int(m.group(1)) + 1} {n}", message)
    return message.replace("img_size", "image size").replace("patch_size", "patch size")


def _control(field: str) -> tuple[str, int | None]:
    """A `ConfigProblem` field ("num_heads[2]", "patch_size") -> the placeholder key of its control."""
    m = re.fullmatch(r"([a-z_]+)(?:\[(\d+)\])?", field)
    name, index = (m.group(1), None if m.group(2) is None else int(m.group(2))) if m else (field, None)
    return (name, index) if (name, index) in placeholders else ("img_size", None)


sr = [_parse_sr(st.session_state[f"arch_sr_{i}"], i) for i in range(n_stages)]
cfg = None
if all(r is not None for r in sr):
    fields = dataclasses.asdict(base) | {
        "img_size": int(st.session_state["arch_img_size"]),
        "patch_size": int(st.session_state["arch_patch_size"]),
        "embed_dims": tuple(int(st.session_state[f"arch_dim_{i}"]) for i in range(n_stages)),
        "num_heads": tuple(int(st.session_state[f"arch_heads_{i}"]) for i in range(n_stages)),
        "mlp_ratios": tuple(float(st.session_state[f"arch_mlp_{i}"]) for i in range(n_stages)),
        "depths": tuple(int(st.session_state[f"arch_depth_{i}"]) for i in range(n_stages)),
        "sr_ratios": tuple(sr),
    }
    problems = hvit.check_config(**fields)  # every problem at once, each tied to its field
    by_control: dict[tuple[str, int | None], list[str]] = {}
    for problem in problems:
        message = _plain(problem.message)
        by_control.setdefault(_control(problem.field), []).append(message[0].upper() + message[1:])
    for control, messages in by_control.items():
        with placeholders[control].container():
            for message in messages:
                st.error(message, icon=":material/error:")
    if not problems:
        cfg = HViTConfig(**fields)

if cfg is None:
    st.warning("Fix the settings marked in red above to see the pyramid, the table and the cost curves.")
    st.stop()

img_size = cfg.img_size
with st.spinner("Counting tokens, keys, parameters and MACs…"):
    rows, totals, pyramid = _report(json.dumps(cfg.to_dict()), img_size)

# Plain-words notes about degenerate settings, next to the control that causes them.
notes_at: dict[object, list[str]] = {}
for note in totals["notes"]:
    notes_at.setdefault(("img_size", None), []).append(note)
for i, stage_notes in enumerate(totals["stage_notes"]):
    for note in stage_notes:
        if "SR" in note:
            where = ("sr_ratios", i)
        elif "patch stride" in note and i == 0:
            where = ("patch_size", None)
        elif "position embedding" in note:
            where = ("img_size", None)
        else:
            where = i
        notes_at.setdefault(where, []).append(note)
for where, notes in notes_at.items():
    box = notes_boxes[where] if isinstance(where, int) else placeholders[where].container()
    for note in notes:
        box.warning(note[0].upper() + note[1:], icon=":material/warning:")

with metrics_box:
    m = st.columns(3)
    m[0].metric("Parameters", format_count(totals["params"]), help=f"{totals['params']:,} parameters")
    m[1].metric("GMACs", f"{totals['gmacs']:.3g}", help="Multiply-accumulates for one image, in billions")
    m[2].metric("Stage-1 tokens", format_count(rows[0]["tokens"]), help=f"{rows[0]['tokens']:,} tokens")

st.subheader("The token pyramid")
st.caption(
    "Top: each stage's query grid, one cell per token. Below: the reduced key grid the queries attend to "
    "(thick lines), drawn over the same area, so you can see how many tokens one key summarises."
)
st.plotly_chart(pyramid, width="stretch", config={"displayModeBar": False}, theme=None, key="arch_pyramid")

st.subheader("Cost per stage")
table = [
    {
        "stage": row["stage"],
        "query grid": row["query_grid"],
        "tokens": f"{row['tokens']:,}",
        "key grid": row["key_grids"],
        "keys": row["keys"],
        "parameters": f"{row['params']:,}",
        "MMACs": f"{row['macs'] / 1e6:,.2f}",
        "attention share of MACs": f"{row['attention_macs'] / max(row['macs'], 1):.0%}",
        "attention memory per block": format_bytes(row["attention_bytes"]),
    }
    for row in rows
]
st.dataframe(table, hide_index=True, width="stretch")
st.caption(
    f"Head (final norm + classifier): {totals['head_params']:,} parameters. Attention memory: the "
    "probabilities of one block for one image (fp32), queries x keys x heads."
)

st.subheader("Attention cost against image size")
left, right = st.columns([1.6, 1], gap="large")
with left:
    with st.spinner("Costing three kinds of attention at eleven image sizes…"):
        cost = _cost_figure(json.dumps(cfg.to_dict()), img_size)
    st.plotly_chart(
        cost,
        width="stretch",
        config={"displayModeBar": False},
        theme=None,
        key="arch_cost",
    )
with right:
    st.markdown(
        "**Global attention** compares every token with every token: $N^2$ pairs for $N$ tokens, and "
        "$N$ grows with the square of the image side, so doubling the side costs $16\\times$.\n\n"
        "**SRA** builds keys from a grid $R$ times coarser: $N \\cdot N/R^2$ pairs. Cheaper by $R^2$, "
        "but the curve has the same slope.\n\n"
        "**Linear SRA** pools the keys to a fixed $7\\times7$ grid: $49N$ pairs, so its cost grows only "
        "like $N$. At small images it can cost *more* than SRA, because 49 keys exceed $N/R^2$."
    )
