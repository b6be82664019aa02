"""Weight interchange with timm: identical logits after loading timm's state dict (no download)."""

from __future__ import annotations

import pytest
import timm
import torch

import hvit


@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_v2_b2_li"])
def test_timm_weights_give_timm_logits(name):
    reference = timm.create_model(name).eval()
    model = hvit.create_model(name).eval()
    hvit.load_timm_state_dict(model, reference.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-4, rtol=0)
        # Also off the nominal size, where the padding/pooling rules matter.
        torch.testing.assert_close(model(x[..., :97, :130]), reference(x[..., :97, :130]), atol=1e-4, rtol=0)


def test_mismatched_architecture_is_refused():
    reference = timm.create_model("pvt_v2_b0")
    with pytest.raises(ValueError, match="create_model\\('pvt_v2_b0'\\)"):
        hvit.load_timm_state_dict(hvit.create_model("pvt_v2_b1"), reference.state_dict())


def test_converted_keys_cover_the_model_exactly():
    sd = hvit.convert_timm_state_dict(timm.create_model("pvt_v2_b0").state_dict())
    assert set(sd) == set(hvit.create_model("pvt_v2_b0").state_dict())
