"""Contracts of the special parts of issue 17's networks: EncNet's Encoding layer, ParseNet's
L2 normalisation, and the dynamic height and width of FPN and ParseNet exports."""

from __future__ import annotations

import json

import pytest
import torch

from segexport.models.encnet import Encoding
from segexport.models.parsenet import L2Norm
from segexport.pipeline.export_stage import export_model


def test_encoding_layer_is_the_papers_aggregated_soft_assigned_residuals():
    torch.manual_seed(0)
    layer = Encoding(channels=6, codewords=4)
    x = torch.randn(2, 6, 5, 7)
    got = layer(x)
    assert got.shape == (2, 4, 6)
    # The definition, with the [N, HW, K, C] residual tensor the layer avoids building.
    pixels = x.flatten(2).transpose(1, 2)  # [N, HW, C]
    residuals = pixels[:, :, None, :] - layer.codewords[None, None]  # [N, HW, K, C]
    weights = torch.softmax(layer.scale * residuals.square().sum(-1), dim=-1)  # [N, HW, K]
    expected = (weights[..., None] * residuals).sum(1)
    assert torch.allclose(got, expected, atol=1e-5)


def test_l2_norm_scales_unit_vectors_and_stays_finite_in_half():
    norm = L2Norm(8)
    x = torch.rand(2, 8, 3, 3) * 1e3
    out = norm(x)
    assert torch.allclose(out.norm(dim=1), torch.full((2, 3, 3), 10.0), atol=1e-4)  # the paper's initial scale
    half = L2Norm(4096).half()
    big = torch.full((1, 4096, 2, 2), 300.0).half()  # a plain sum of squares would be 3.7e8: inf in FP16
    assert torch.isfinite(half(big)).all()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["fpn", "parsenet"])
def test_dynamic_hw_export_agrees_with_pytorch_at_three_sizes(arch, tmp_path):
    result = export_model(arch, size="tiny", input_size=(128, 128), dynamic_hw=True, images=2, out=tmp_path)
    summary = json.loads(result.rewrites_path.read_text())["export"]
    assert [list(s) for s in summary["sizes_checked"]] == [[128, 128], [160, 192], [192, 160]]
    assert summary["agreement"] >= 0.9999 and summary["passed"] is True
