"""deconv_to_resize: exact bilinear rewrite (borders included) and the fitted learned case."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segexport.errors import ConfigError, InputError
from segexport.models import build_model
from segexport.models.fcn import bilinear_upsampler
from segexport.rewrite.bilinear import BilinearUpsample, edge_gain
from segexport.rewrite.deconv_to_resize import bilinear_factor, deconv_to_resize
from segexport.rewrite.resize_conv_fit import ResizeConv

FACTORS = (2, 4, 8, 16, 32)
SIZES = ((1, 1), (3, 4), (4, 5), (7, 2))


@pytest.mark.parametrize("s", FACTORS)
@pytest.mark.parametrize("size", SIZES)
def test_bilinear_upsample_equals_bilinear_deconv_borders_included(s, size):
    torch.manual_seed(s)
    deconv = bilinear_upsampler(3, s, learnable=False)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected, got = deconv(x), BilinearUpsample(s)(x)
    assert got.shape == expected.shape == (2, 3, size[0] * s, size[1] * s)
    assert (got - expected).abs().max() < 1e-5


@pytest.mark.parametrize("s", FACTORS)
def test_border_differs_from_plain_resize_by_the_separable_edge_gain(s):
    # The derivation in the rule's docstring: deconv = resize * g_rows g_cols^T, g = 1 inside.
    x = torch.rand(1, 1, 5, 6) + 0.5
    with torch.no_grad():
        ratio = bilinear_upsampler(1, s, learnable=False)(x) / F.interpolate(x, scale_factor=s, mode="bilinear")
    g = edge_gain(s)
    rows = torch.cat([g, torch.ones(5 * s - s), g.flip(0)])
    cols = torch.cat([g, torch.ones(6 * s - s), g.flip(0)])
    assert g[0] == 0.5 + 0.5 / s and (g < 1).all()
    assert (ratio[0, 0] - rows[:, None] * cols[None, :]).abs().max() < 1e-5


def test_bias_is_carried_over():
    deconv = bilinear_upsampler(2, 4, learnable=False)
    deconv.bias = nn.Parameter(torch.tensor([0.5, -1.0]))
    assert bilinear_factor(deconv)[0] == 4
    x = torch.randn(1, 2, 3, 5)
    with torch.no_grad():
        assert (BilinearUpsample(4, deconv.bias)(x) - deconv(x)).abs().max() < 1e-5


def test_detection_needs_the_exact_configuration_and_kernel():
    assert bilinear_factor(bilinear_upsampler(3, 8, learnable=True)) == (8, 0.0)
    off = bilinear_upsampler(3, 2, learnable=True)
    with torch.no_grad():
        off.weight[0, 1, 0, 0] = 1e-3  # off-diagonal: no longer channel-diagonal
    assert bilinear_factor(off)[0] is None and bilinear_factor(off)[1] == pytest.approx(1e-3)
    assert bilinear_factor(nn.ConvTranspose2d(3, 3, 2, stride=2)) == (None, None)


class TinyFCN(nn.Module):
    """conv -> /4 -> score -> bilinear deconv x2 -> learned-free bilinear deconv x2."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Conv2d(8, classes, 1))
        self.up = nn.Sequential(bilinear_upsampler(classes, 2, learnable=False), bilinear_upsampler(classes, 2, learnable=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.body(x))


def test_exact_rewrite_is_pure_and_exports_without_convtranspose(purity, export_onnx, onnx_runner):
    torch.manual_seed(0)
    model, x = TinyFCN(), torch.randn(2, 3, 36, 20)
    before = purity[0](model)
    new, records = deconv_to_resize(model, x)
    purity[1](model, before)
    assert not new.training
    assert [(r.target, r.action) for r in records] == [("up.0", "replaced"), ("up.1", "replaced")]
    assert all(r.max_abs_error < 1e-5 for r in records)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in new.modules())
    with torch.no_grad():
        assert (new(x) - model.eval()(x)).abs().max() < 1e-5
    onnx_model = export_onnx(new, x)
    ops = {n.op_type for n in onnx_model.graph.node}
    assert "ConvTranspose" not in ops and "Resize" in ops and "Mul" in ops
    assert (onnx_runner(onnx_model, x) - new(x).detach()).abs().max() < 1e-5


def test_keep_deconv_turns_the_rule_off():
    model, x = TinyFCN(), torch.randn(1, 3, 16, 16)
    new, records = deconv_to_resize(model, x, keep_deconv=True)
    assert {r.action for r in records} == {"skipped"} and "keep_deconv" in records[0].reason
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in new.modules()) == 2


class TinyUNet(nn.Module):
    """Down by 2, a learned 2x2 stride-2 transposed conv up, concatenated skip, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.cls = nn.Conv2d(12, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc(x)
        return self.cls(torch.cat([skip, self.up(self.down(skip))], 1))


def _val(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    masks = torch.randint(0, 3, (n, 16, 16), generator=g)
    masks[:, :2] = 255
    return torch.randn(n, 3, 16, 16, generator=g), masks


def test_learned_deconv_without_data_is_skipped():
    _, records = deconv_to_resize(TinyUNet(), torch.randn(1, 3, 16, 16))
    assert records[0].action == "skipped" and "needs fit_images and val" in records[0].reason


def test_learned_deconv_fitted_and_kept_or_replaced_by_agreement(purity, export_onnx):
    torch.manual_seed(1)
    model, x = TinyUNet(), torch.randn(1, 3, 16, 16)
    fit_images, val = _val(8, 1)[0], _val(8, 2)
    before = purity[0](model)
    strict, [rec] = deconv_to_resize(model, x, fit_images=fit_images, val=val, min_agreement=1.0)
    purity[1](model, before)
    # Resize + one conv cannot reproduce the four phases of a random 2x2 deconv exactly.
    assert rec.action == "kept" and rec.reason == f"fitted resize+conv agreement {rec.details['agreement']:.4f} < 1.0"
    assert isinstance(strict.up, nn.ConvTranspose2d)
    d = rec.details
    assert 0 < d["fit_relative_residual"] < 1 and d["fit_rmse"] > 0 and d["agreement"] < 1.0
    assert {"miou_original", "miou_rewritten", "val_max_abs_logit_error", "fit_values"} <= d.keys()
    loose, [rec2] = deconv_to_resize(model, x, fit_images=fit_images, val=val, min_agreement=0.5)
    assert rec2.action == "replaced" and rec2.details["agreement"] == d["agreement"]
    assert isinstance(loose.up, ResizeConv)
    ops = {n.op_type for n in export_onnx(loose, x).graph.node}
    assert "ConvTranspose" not in ops and {"Resize", "Conv"} <= ops


def test_nearly_bilinear_learned_deconv_fits_closely():
    # A "trained" FCN deconv: the bilinear kernel plus a small learned change.
    torch.manual_seed(2)
    model = TinyFCN()
    with torch.no_grad():
        model.up[1].weight.add_(1e-3 * torch.randn_like(model.up[1].weight))
    x, fit_images, val = torch.randn(1, 3, 16, 16), _val(8, 3)[0], _val(8, 4)
    new, records = deconv_to_resize(model, x, fit_images=fit_images, val=val)
    exact, fitted = records
    assert exact.action == "replaced" and exact.details["kind"] == "bilinear"
    assert fitted.details["kind"] == "learned" and fitted.details["fit_relative_residual"] < 0.01
    assert fitted.details["fit_edge_correction"]  # the zero-border gain fits the borders
    assert fitted.action == ("replaced" if fitted.details["agreement"] >= 0.999 else "kept")


def test_bad_arguments_are_typed_errors():
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ConfigError, match="min_agreement"):
        deconv_to_resize(TinyUNet(), x, min_agreement=1.5)
    with pytest.raises(InputError, match="val masks"):
        deconv_to_resize(TinyUNet(), x, val=(x, torch.zeros(1, 8, 8, dtype=torch.int64)))
    with pytest.raises(InputError, match="example"):
        deconv_to_resize(TinyUNet(), torch.zeros(3, 16, 16))


@pytest.mark.parametrize("upsampling", ["fixed", "paper"])
def test_fcn8s_tiny_rewrite_is_exact(upsampling):
    torch.manual_seed(0)
    model = build_model("fcn8s", size="tiny", num_classes=5, upsampling=upsampling).eval()
    x = torch.randn(2, 3, 64, 96)
    new, records = deconv_to_resize(model, x)
    assert [r.action for r in records] == ["replaced"] * 3
    with torch.no_grad():
        assert (new(x) - model(x)).abs().max() < 1e-4


def test_fit_of_an_untouched_bilinear_deconv_is_exact_with_edge_correction():
    from segexport.rewrite.resize_conv_fit import fit_resize_conv

    torch.manual_seed(3)
    fit = fit_resize_conv(bilinear_upsampler(4, 2, learnable=False), torch.randn(4, 4, 6, 7), 2)
    assert fit.module.edge is not None and fit.relative_residual < 1e-5


def test_val_labels_outside_the_classes_are_an_input_error():
    torch.manual_seed(4)
    images, masks = _val(2, 5)
    masks[0, 5, 5] = 7  # TinyUNet predicts 3 classes
    with pytest.raises(InputError, match="labels outside"):
        deconv_to_resize(TinyUNet(), images[:1], fit_images=images, val=(images, masks))
