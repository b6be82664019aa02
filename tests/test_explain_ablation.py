"""Head ablation: it removes exactly one head's contribution, and nothing stays switched off."""

from __future__ import annotations

import copy

import pytest
import torch

import hvit
from hvit.explain.ablation import ablate_heads, head_ablation, head_ablation_scan


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize(("stage", "head"), [(0, 1), (2, 3)])
def test_ablation_equals_removing_the_heads_columns_of_the_projection(stage, head):
    # Multi-scale stage 1 (head 1 is in the second head group) and a single-scale stage.
    torch.manual_seed(0)
    model = hvit.create_model("hvit_nano_ms").eval()
    x = torch.randn(2, 3, 32, 32)
    edited = copy.deepcopy(model)
    for blk in edited.stages[stage].blocks:
        d = blk.attn.head_dim
        with torch.no_grad():
            blk.attn.proj.weight[:, head * d : (head + 1) * d] = 0.0
    with torch.no_grad():
        with ablate_heads(model, stage, head):
            ablated = model(x)
        expected = edited(x)
        intact = model(x)
    torch.testing.assert_close(ablated, expected)
    assert not torch.allclose(ablated, intact)


def test_all_heads_off_leaves_only_the_projection_bias():
    model = hvit.create_model("hvit_nano").eval()
    attn = model.stages[1].blocks[0].attn
    with torch.no_grad():
        attn.proj.bias.normal_()
    out = {}
    handle = attn.register_forward_hook(lambda m, i, o: out.setdefault("o", o))
    try:
        with torch.no_grad(), ablate_heads(model, 1, range(attn.num_heads)):
            model(torch.randn(1, 3, 32, 32))
    finally:
        handle.remove()
    torch.testing.assert_close(out["o"], attn.proj.bias.expand_as(out["o"]))


def test_no_hook_survives_even_an_error():
    model = hvit.create_model("hvit_nano")
    before = _hook_count(model)
    with pytest.raises(RuntimeError, match="boom"):
        with ablate_heads(model, 2, 0):
            assert _hook_count(model) == before + 1
            raise RuntimeError("boom")
    assert _hook_count(model) == before
    with pytest.raises(ValueError, match="heads 0..3"):
        with ablate_heads(model, 2, 4):
            pass
    assert _hook_count(model) == before


def test_head_ablation_reports_the_probability_change():
    torch.manual_seed(0)
    model = hvit.create_model("hvit_seed", embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), num_classes=4)
    model.train()
    x = torch.randn(1, 3, 32, 32)
    res = head_ablation(model, x, stage=3, head=5)
    with torch.no_grad():
        probs = model.eval()(x).softmax(-1)[0]
    assert res.target == int(probs.argmax())
    assert res.prob_before == pytest.approx(float(probs[res.target]), abs=1e-6)
    assert res.delta == pytest.approx(res.prob_after - res.prob_before)
    assert res.prob_after != res.prob_before
    model.train()
    res_block = head_ablation(model, x, stage=1, head=[0, 1], block=0, target=2)
    assert res_block.heads == [0, 1] and res_block.target == 2 and model.training
    scan = head_ablation_scan(model, x)
    assert [(r.stage, r.heads[0]) for r in scan] == [
        (s, h) for s, n in enumerate((1, 2, 4, 8)) for h in range(n)
    ]
    assert _hook_count(model) == 0
