"""Contracts of the special parts of issue 17's networks: EncNet's Encoding layer, ParseNet's
L2 normalisation, and the dynamic height and width of FPN and ParseNet exports."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from segexport.export.onnx_export import export_onnx
from segexport.models import build_model
from segexport.models.encnet import Encoding
from segexport.models.parsenet import L2Norm
from segexport.pipeline.export_stage import export_model
from segexport.train import present_classes


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


def test_se_loss_targets_are_the_classes_each_image_holds():
    masks = torch.tensor([[[0, 0], [2, 255]], [[1, 1], [1, 1]]])  # 255: ignored
    assert present_classes(masks, 3).tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]


def test_encnet_se_head_trains_and_stays_out_of_the_export(tmp_path):
    torch.manual_seed(0)
    model = build_model("encnet", size="tiny", num_classes=5).train()
    x = torch.randn(2, 3, 64, 64)
    out, aux, presence = model.forward_train(x)
    assert out.shape == aux.shape == (2, 5, 64, 64) and presence.shape == (2, 5)
    presence.sum().backward()
    assert model.classifier.se.weight.grad.abs().sum() > 0
    assert model.classifier.context.encoding.codewords.grad.abs().sum() > 0  # through the encoded vector
    model.eval()
    path = tmp_path / "encnet.onnx"
    export_onnx(model, path, input_size=(64, 64))
    se = model.classifier.se.weight.detach().numpy()
    weights = [onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    assert not any(w.shape == se.shape and (w == se).all() for w in weights)
    assert not any(w.shape == se.T.shape and (w == se.T).all() for w in weights)


def test_tiny_deconvnet_fc_branch_starts_at_zero_and_learns():
    torch.manual_seed(0)
    model = build_model("deconvnet", size="tiny", num_classes=5)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        before = model(x)
        saved = model.classifier.fc6[0].weight.clone()
        model.classifier.fc6[0].weight.normal_()  # whatever fc6 computes, the branch adds nothing yet
        assert torch.equal(model(x), before)
        model.classifier.fc6[0].weight.copy_(saved)
    model.train()
    model(x).square().mean().backward()
    assert model.classifier.deconv_fc6[1].weight.grad.abs().sum() > 0  # its gain is not stuck at zero
