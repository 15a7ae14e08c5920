"""apply_rewrites: every rule in a fixed order, a final whole-model record, purity."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from segexport.errors import ConfigError, InputError
from segexport.models import build_model, list_models
from segexport.rewrite import RewriteRecord, apply_rewrites
from segexport.rewrite.apply import RULE_ORDER

# Per architecture: the rules that must fire on the tiny model (nothing else may be replaced).
EXPECTED = {
    "fcn32s": {"deconv_to_resize"},
    "fcn16s": {"deconv_to_resize"},
    "fcn8s": {"deconv_to_resize"},
    "segnet": {"unpool_for_tensorrt"},
    "deconvnet": {"unpool_for_tensorrt"},
    "pspnet": {"fixed_adaptive_pool"},
    "deeplabv3": {"fixed_adaptive_pool"},
    "deeplabv3p": {"fixed_adaptive_pool"},
    "deeplabv3_resnet50": {"fixed_adaptive_pool"},
    "deeplabv3_resnet101": {"fixed_adaptive_pool"},
}


@pytest.mark.parametrize("arch", [e.name for e in list_models() if e.task == "semantic"])
def test_every_tiny_architecture_rewrites_exactly(arch, purity):
    torch.manual_seed(0)
    model = build_model(arch, size="tiny", num_classes=5)  # left in train mode on purpose
    x = torch.randn(2, 3, 64, 64)
    before = purity[0](model)
    new, records = apply_rewrites(model, x)
    purity[1](model, before)
    assert not any(m.training for m in new.modules())
    *per_module, final = records
    assert final.rule == "model" and final.target == ""
    assert [RULE_ORDER.index(r.rule) for r in per_module] == sorted(RULE_ORDER.index(r.rule) for r in per_module)
    replaced = {r.rule for r in per_module if r.action == "replaced"}
    assert replaced == EXPECTED.get(arch, set())
    with torch.no_grad():
        diff = (new(x) - model.eval()(x)).abs().max().item()
    assert final.max_abs_error == pytest.approx(diff, abs=1e-9) and final.max_abs_error < 1e-5
    if arch in ("segnet", "deconvnet"):  # the unpool rewrite is bit-exact
        assert final.max_abs_error == 0.0
    # Fixed pooling of bins > 1 only works at the example's size; everything else at any size.
    assert final.details["static_hw"] == (arch == "pspnet")
    # Learned U-Net deconvs need data: skipped, and said so.
    assert all(r.action == "skipped" and "needs fit_images" in r.reason for r in per_module if arch == "unet")
    json.dumps([r.to_dict() for r in records])


def test_final_record_counts_and_agreement():
    torch.manual_seed(0)
    _, records = apply_rewrites(build_model("fcn8s", size="tiny", num_classes=3), torch.randn(1, 3, 64, 64))
    final = records[-1]
    assert final == RewriteRecord(
        "model", "", "replaced", "3 replaced, 0 kept, 0 skipped", final.max_abs_error,
        {"rules": list(RULE_ORDER), "replaced": 3, "kept": 0, "skipped": 0, "argmax_agreement": 1.0,
         "static_hw": False},
    )


def test_keep_deconv_leaves_fcn_deconvs():
    model = build_model("fcn8s", size="tiny", num_classes=3)
    new, records = apply_rewrites(model, torch.randn(1, 3, 64, 64), keep_deconv=True)
    assert [r.action for r in records] == ["skipped"] * 3 + ["kept"]
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in new.modules()) == 3
    assert records[-1].max_abs_error == 0.0


def test_unet_learned_deconvs_are_fitted_and_judged():
    torch.manual_seed(0)
    model = build_model("unet", size="tiny", num_classes=3)
    g = torch.Generator().manual_seed(1)
    fit_images = torch.randn(4, 3, 32, 32, generator=g)
    val = (torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 3, (4, 32, 32), generator=g))
    new, records = apply_rewrites(model, val[0][:1], fit_images=fit_images, val=val, min_agreement=0.5)
    deconvs = records[:-1]
    assert [r.target for r in deconvs] == [f"classifier.ups.{i}" for i in range(4)]
    for r in deconvs:
        assert r.details["kind"] == "learned" and r.details["fit_rmse"] > 0
        assert r.action == ("replaced" if r.details["agreement"] >= 0.5 else "kept")
    kept = sum(isinstance(m, nn.ConvTranspose2d) for m in new.modules())
    assert kept == sum(r.action == "kept" for r in deconvs)


def test_bad_inputs_are_typed_errors():
    model = build_model("fcn8s", size="tiny", num_classes=3)
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(InputError, match="example"):
        apply_rewrites(model, x[0])
    with pytest.raises(InputError, match="fit_images"):
        apply_rewrites(model, x, fit_images=x.long())
    with pytest.raises(ConfigError, match="min_agreement"):
        apply_rewrites(model, x, min_agreement=0.0)


def test_rewritten_fcn8s_exports_without_convtranspose(export_onnx, onnx_runner):
    torch.manual_seed(0)
    model = build_model("fcn8s", size="tiny", num_classes=4).eval()
    x = torch.randn(1, 3, 64, 64)
    new, _ = apply_rewrites(model, x)
    onnx_model = export_onnx(new, x)
    assert "ConvTranspose" not in {n.op_type for n in onnx_model.graph.node}
    with torch.no_grad():
        assert (onnx_runner(onnx_model, x) - model(x)).abs().max() < 1e-4
