"""The model core: the seed's API, shapes on any input size, timm's contract, fused == explicit."""

from __future__ import annotations

import functools
import re

import pytest
import torch

import hvit
import hvit.assets
from hvit import HierarchialViT, HViTConfig
from hvit.layers import MultiScaleAttention


@functools.cache
def _eval_model(name: str, **overrides) -> torch.nn.Module:
    """One instance per variant for the read-only tests (building the big ones takes seconds)."""
    torch.manual_seed(0)
    return hvit.create_model(name, **overrides).eval()


def _set_fused(model: torch.nn.Module, fused: bool) -> None:
    for m in model.modules():
        if isinstance(m, MultiScaleAttention):
            m.fused_attn = fused


def test_seed_defaults_and_attributes():
    model = HierarchialViT()
    cfg = model.config
    assert (cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.num_classes) == (224, 16, 3, 1000)
    assert cfg.embed_dims == (64, 128, 256, 512) and cfg.num_heads == (1, 2, 4, 8)
    assert cfg.mlp_ratios == (4, 4, 4, 4) and cfg.depths == (3, 4, 6, 3) and cfg.sr_ratios == (8, 4, 2, 1)
    assert isinstance(model.patch_embed, torch.nn.Module)
    assert isinstance(model.pos_embed, torch.nn.Parameter)
    assert isinstance(model.norm, torch.nn.LayerNorm) and isinstance(model.head, torch.nn.Linear)
    assert len(model.stages) == 4 and all(isinstance(s, hvit.HierarchicalStage) for s in model.stages)
    assert model.stages[0].downsample is None and model.stages[1].downsample is not None
    assert [len(s.blocks) for s in model.stages] == [3, 4, 6, 3]
    attn = model.stages[0].blocks[0].attn
    assert isinstance(attn, hvit.MultiScaleAttention)
    assert attn.scale == pytest.approx(64**-0.5)
    assert attn.qkv.out_features == 3 * 64 and attn.proj.out_features == 64
    assert hvit.HierarchicalViT is HierarchialViT
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 224, 224)).shape == (2, 1000)


def test_seed_components_constructible_with_seed_arguments():
    stage = hvit.HierarchicalStage(dim=32, num_heads=2, mlp_ratio=4.0, depth=2, sr_ratio=2)
    assert len(stage.blocks) == 2 and stage.downsample is None
    attn = hvit.MultiScaleAttention(dim=32, num_heads=4, qkv_bias=True, sr_ratio=2)
    x = torch.randn(3, 64, 32)
    assert attn(x, (8, 8)).shape == (3, 64, 32)
    y, grid = stage.forward_tokens(x, (8, 8))
    assert y.shape == x.shape and grid == (8, 8)


@pytest.mark.parametrize("size", [1, 2, 7, 15, 16, 17, 33, 100, 224])
def test_seed_runs_on_any_input_size(size):
    model = _eval_model("hvit_seed")
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "name", ["hvit_nano", "hvit_nano_ms", "hvit_micro", "pvt_tiny", "pvt_v2_b0", "pvt_v2_b2_li"]
)
@pytest.mark.parametrize("size", [1, 9, 40])
def test_variants_run_on_small_and_odd_sizes(name, size):
    model = _eval_model(name, num_classes=5)
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size + 3)).shape == (2, 5)


@pytest.mark.parametrize("name", ["hvit_nano", "hvit_nano_ms", "hvit_seed", "pvt_v2_b0", "pvt_v2_b2_li"])
def test_fused_equals_explicit(name):
    model = hvit.create_model(name).eval()
    size = min(model.config.img_size, 112)  # 112 px keeps SR and the linear 7x7 pool non-trivial
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        fused = model(x)
        _set_fused(model, False)
        explicit = model(x)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=0)


def test_fused_equals_explicit_gradients():
    model = hvit.create_model("hvit_nano_ms").eval()
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for fused in (True, False):
        _set_fused(model, fused)
        model.zero_grad()
        model(x).logsumexp(-1).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_v2_b2_li", "hvit_seed"])
def test_inference_in_place_gelu_equals_autograd_path(name):
    # Without autograd the MLP computes GELU in place; with it, out of place. Same numbers either way,
    # and a forward hook on the layer feeding GELU still sees its own (pre-activation) output.
    model = _eval_model(name)
    x = torch.randn(2, 3, 64, 64)
    with torch.enable_grad():
        reference = model(x).detach()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference, atol=0, rtol=0)
    mlp = model.stages[0].blocks[0].mlp
    layer = mlp.dwconv if mlp.dwconv is not None else mlp.fc1
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append((o, o.clone())))
    try:
        with torch.no_grad():
            torch.testing.assert_close(model(x), reference, atol=0, rtol=0)
    finally:
        handle.remove()
    kept, copy_at_hook_time = seen[0]
    assert (copy_at_hook_time < 0).any(), "pre-activation values should include negatives"
    torch.testing.assert_close(kept, copy_at_hook_time, atol=0, rtol=0)


def _depthwise_weights_channels_last(model: torch.nn.Module) -> bool:
    # A (C, 1, 3, 3) weight is contiguous either way; only the channel stride tells the layouts apart.
    weights = [
        m.dwconv.weight for m in model.modules() if isinstance(m, hvit.layers.Mlp) and m.dwconv is not None
    ]
    return bool(weights) and all(
        w.is_contiguous(memory_format=torch.channels_last) and w.stride(1) == 1 for w in weights
    )


def test_depthwise_weights_stay_channels_last_through_loading(tmp_path):
    # The Mlp stores its depth-wise conv weight channels-last (the layout its input already has); every
    # way of loading weights must keep it, or inference silently slows down 3-5x at batch 1.
    import timm

    model = hvit.create_model("pvt_v2_b0")
    assert _depthwise_weights_channels_last(model)
    hvit.load_timm_state_dict(model, timm.create_model("pvt_v2_b0").state_dict())
    assert _depthwise_weights_channels_last(model)
    path = hvit.save_checkpoint(tmp_path / "nano.safetensors", hvit.create_model("hvit_nano"))
    assert _depthwise_weights_channels_last(hvit.load_checkpoint(path))


def test_multiscale_attention_groups_use_their_own_key_grids():
    attn = MultiScaleAttention(dim=16, num_heads=4, sr_ratio=(4, 2), qkv_bias=True)
    assert [r.sr_ratio for r in attn.reductions] == [4, 2]
    attn.recorder = []
    attn(torch.randn(1, 64, 16), (8, 8))
    ((g0, g1),) = attn.recorder
    assert g0.key_grid == (2, 2) and g1.key_grid == (4, 4)
    assert g0.probs.shape == (1, 2, 64, 4) and g1.probs.shape == (1, 2, 64, 16)
    assert g0.heads == (0, 1) and g1.heads == (2, 3)


def test_int_sr_ratio_is_exactly_pvt_sra():
    """The int form: queries from all tokens, keys/values from the conv-reduced, normalised grid."""
    torch.manual_seed(1)
    dim, heads, r, grid = 8, 2, 2, (4, 6)
    attn = MultiScaleAttention(dim, heads, qkv_bias=True, sr_ratio=r).eval()
    x = torch.randn(2, grid[0] * grid[1], dim)
    red = attn.reductions[0]
    xr = red.sr(x.transpose(1, 2).reshape(2, dim, *grid)).flatten(2).transpose(1, 2)
    xr = red.norm(xr)
    w, b = attn.qkv.weight, attn.qkv.bias
    q = (x @ w[:dim].T + b[:dim]).reshape(2, -1, heads, 4).transpose(1, 2)
    k = (xr @ w[dim : 2 * dim].T + b[dim : 2 * dim]).reshape(2, -1, heads, 4).transpose(1, 2)
    v = (xr @ w[2 * dim :].T + b[2 * dim :]).reshape(2, -1, heads, 4).transpose(1, 2)
    ref = ((q @ k.transpose(-1, -2)) / 2).softmax(-1) @ v  # head_dim 4: scale 1/2
    ref = attn.proj(ref.transpose(1, 2).reshape(2, -1, dim))
    torch.testing.assert_close(attn(x, grid), ref, atol=1e-6, rtol=1e-5)


def test_timm_contract_features_and_intermediates():
    model = hvit.create_model("pvt_v2_b0").eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        feats = model.forward_features(x)
        final, maps = model.forward_intermediates(x)
        logits = model(x)
        pre = model.forward_head(feats, pre_logits=True)
    assert feats.shape == (1, 256, 2, 3)
    assert [m.shape[1] for m in maps] == [f["num_chs"] for f in model.feature_info] == [32, 64, 160, 256]
    for m, info in zip(maps, model.feature_info, strict=True):
        assert (m.shape[2], m.shape[3]) == (64 // info["reduction"], 96 // info["reduction"])
        assert model.get_submodule(info["module"]) is not None
    torch.testing.assert_close(final, feats)
    torch.testing.assert_close(model.forward_head(final), logits)
    assert pre.shape == (1, 256)
    only = model.forward_intermediates(x, indices=[1], intermediates_only=True)
    assert len(only) == 1 and only[0].shape == maps[1].shape


def test_intermediate_indices_count_from_the_end_and_out_of_range_ones_raise():
    model = hvit.create_model("hvit_nano").eval()  # four stages
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        _, maps = model.forward_intermediates(x)
        last_two = model.forward_intermediates(x, indices=[-2, -1], intermediates_only=True)
        counted = model.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [m.shape for m in last_two] == [m.shape for m in counted] == [maps[2].shape, maps[3].shape]
    for bad in ([4], [0, 5], [-5], [], 0, 5):
        with pytest.raises(ValueError, match=r"indices must be stages in -4\.\.3 .* or a count 1\.\.4"):
            model.forward_intermediates(x, indices=bad)


def test_class_token_model_features_are_tokens():
    model = hvit.create_model("hvit_seed").eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 64, 64))
    assert feats.shape == (1, 1 + 1, 512)  # class token + a 1x1 grid at 64 px with patch 16


def test_stage_feature_map_is_nchw_hook_point():
    model = hvit.create_model("hvit_nano").eval()
    seen = []
    hooks = [s.feature_map.register_forward_hook(lambda m, i, o: seen.append(o.shape)) for s in model.stages]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert seen == [(1, 16, 16, 16), (1, 32, 8, 8), (1, 64, 4, 4), (1, 128, 2, 2)]


def test_position_embedding_is_resized_not_truncated():
    model = hvit.create_model("pvt_tiny", num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 128)).shape == (1, 3)
    assert model.pos_embed.shape == (1, 56 * 56, 64)  # the stored parameter is untouched


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(embed_dims=[64, 128, 256]), "lengths differ"),
        (dict(embed_dims=[64, 128, 250, 512]), "embed_dims[2]=250"),
        (dict(patch_size=0), "patch_size"),
        (dict(img_size=-3), "img_size"),
        (dict(depths=[1, 0, 1, 1]), "depths[1]"),
        (dict(sr_ratios=[8, 4, 0, 1]), "sr_ratios[2]"),
        (dict(sr_ratios=[(8, 4, 2), 4, 2, 1], num_heads=[2, 2, 4, 8]), "sr_ratios[0]"),
        (dict(mlp_ratios=[4, -1, 4, 4]), "mlp_ratios[1]"),
        (dict(drop_path_rate=1.5), "drop_path_rate"),
        (dict(num_classes=-1), "num_classes"),
        (dict(stem_channels=-8), "stem_channels must be an int from 0 to 65,536, got -8"),
    ],
)
def test_invalid_configs_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        HierarchialViT(**kwargs)


def test_wrong_input_channels_is_a_clear_error():
    model = hvit.create_model("hvit_nano")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 32, 32))


def test_config_roundtrip_and_from_config():
    cfg = hvit.registry.model_config("hvit_nano_ms")
    again = HViTConfig.from_dict(cfg.to_dict())
    assert again == cfg
    model = HierarchialViT.from_config(again)
    assert model.config == cfg
    with pytest.raises(ValueError, match="unknown config fields"):
        HViTConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(ValueError, match="pvt_v2_b0"):
        hvit.create_model("pvt_v3")


def test_pretrained_offline_fails_with_clear_message(monkeypatch):
    from hvit import interchange

    monkeypatch.setattr(interchange, "hub_reachable", lambda timeout=2.0: False)
    monkeypatch.setattr(interchange, "_cached_weights", lambda name: None)
    with pytest.raises(hvit.PretrainedUnavailableError, match=r"pvt_v2_b0.*internet") as info:
        hvit.create_model("pvt_v2_b0", pretrained=True)
    # it names what works offline: the shipped default, by a call that loads it
    assert interchange.OFFLINE_MODEL == hvit.assets.DEFAULT_MODEL
    assert "choose the shipped classroom model (the apps' default)" in str(info.value)
    call = re.search(r"hvit\.load_checkpoint\(hvit\.assets\.shipped_checkpoint\('(\w+)'\)\)", str(info.value))
    assert (
        call is not None
        and hvit.load_checkpoint(hvit.assets.shipped_checkpoint(call[1])).preprocessing.img_size == 96
    )
    with pytest.raises(hvit.PretrainedUnavailableError, match="no pretrained weights"):
        hvit.create_model("hvit_nano", pretrained=True)


def test_every_public_name_resolves():
    missing = [name for name in hvit.__all__ if getattr(hvit, name, None) is None]
    assert not missing
    with pytest.raises(AttributeError):
        hvit.no_such_name  # noqa: B018
