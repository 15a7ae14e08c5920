"""fixed_adaptive_pool: exact fixed pooling, also for bins that do not divide the map."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segexport.errors import InputError
from segexport.models import build_model
from segexport.rewrite.fixed_adaptive_pool import (
    FixedAvgPool2d,
    adaptive_windows,
    averaging_matrix,
    fixed_adaptive_pool,
)

BINS = (1, 2, 3, 6)


@pytest.mark.parametrize("size, bins", [(16, 3), (16, 6), (7, 3), (5, 6), (13, 1), (12, 4)])
def test_averaging_matrix_is_pytorch_adaptive_pooling(size, bins):
    # Pooling the identity gives the matrix PyTorch applies.
    torch_matrix = F.adaptive_avg_pool1d(torch.eye(size, dtype=torch.float64)[None], bins)[0].T
    assert torch.allclose(averaging_matrix(size, bins), torch_matrix, atol=1e-15)


def test_windows_overlap_where_bins_do_not_divide():
    assert adaptive_windows(16, 3) == [(0, 6), (5, 11), (10, 16)]
    assert adaptive_windows(16, 2) == [(0, 8), (8, 16)]


class Pyramid(nn.Module):
    """PSPNet-like: adaptive pools at several bins, each resized back, concatenated."""

    def __init__(self, bins: tuple = BINS) -> None:
        super().__init__()
        self.pools = nn.ModuleList(nn.AdaptiveAvgPool2d(b) for b in bins)
        self.unused = nn.AdaptiveAvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat([x] + [F.interpolate(p(x), size=size, mode="bilinear") for p in self.pools], 1)


@pytest.mark.parametrize("size", [(16, 16), (15, 20)])
def test_pyramid_rewrite_is_exact_and_pure(size, purity):
    torch.manual_seed(0)
    model, x = Pyramid(BINS + ((2, None), (None, 5))), torch.randn(2, 4, *size)
    before = purity[0](model)
    new, records = fixed_adaptive_pool(model, x)
    purity[1](model, before)
    assert [r.target for r in records] == [f"pools.{i}" for i in range(6)] + ["unused"]
    assert [r.action for r in records] == ["replaced"] * 6 + ["skipped"]
    assert all(r.max_abs_error < 1e-6 for r in records[:6])
    with torch.no_grad():
        assert (new(x) - model(x)).abs().max() < 1e-6
    if size == (16, 16):
        assert [r.details["mode"] for r in records[:4]] == ["mean", "avgpool", "matmul", "matmul"]
        assert [r.details["static_hw"] for r in records[:4]] == [False, True, True, True]
        assert records[2].details["row_windows"] == [(0, 6), (5, 11), (10, 16)]


def test_fixed_pool_refuses_another_size():
    pool = FixedAvgPool2d((16, 16), (3, 3))
    with pytest.raises(InputError, match="built for 16x16"):
        pool(torch.randn(1, 1, 17, 16))
    # Global pooling is right at every size, so it accepts any.
    assert FixedAvgPool2d((16, 16), (1, 1))(torch.ones(1, 1, 5, 3)).shape == (1, 1, 1, 1)


def test_rewritten_pyramid_exports_to_trt_friendly_ops(export_onnx, onnx_runner):
    model, x = Pyramid(), torch.randn(1, 4, 16, 16)
    new, _ = fixed_adaptive_pool(model, x)
    onnx_model = export_onnx(new, x)
    ops = {n.op_type for n in onnx_model.graph.node}
    assert ops <= {"ReduceMean", "AveragePool", "MatMul", "Resize", "Concat"}
    with torch.no_grad():
        assert (onnx_runner(onnx_model, x) - model(x)).abs().max() < 1e-5


def test_pspnet_tiny_at_128_is_exact():
    torch.manual_seed(0)
    model = build_model("pspnet", size="tiny", num_classes=5).eval()
    x = torch.randn(2, 3, 128, 128)
    new, records = fixed_adaptive_pool(model, x)
    assert [(r.details["bins"], r.details["input_size"]) for r in records] == [([b, b], [16, 16]) for b in BINS]
    # Exact up to float32 rounding of the pooled values (a few of which exceed 1).
    assert all(r.max_abs_error <= 1e-6 * max(1.0, r.details["max_abs_value"]) for r in records)
    with torch.no_grad():
        assert (new(x) - model(x)).abs().max() < 1e-5


@pytest.mark.parametrize(("size", "bins"), [((8, 8), (1, 1)), ((8, 8), (4, 2)), ((8, 8), (3, 5)), ((9, 13), (6, 4))])
def test_fixed_max_pool_is_adaptive_max_pooling_bit_for_bit(size, bins):
    from segexport.rewrite.fixed_adaptive_pool import FixedMaxPool2d

    x = torch.randint(-3, 4, (2, 5, *size)).float()  # small integers: many tied maxima
    fixed = FixedMaxPool2d(size, bins)
    assert fixed.mode == {(1, 1): "max", (4, 2): "maxpool"}.get(bins, "windows")
    assert torch.equal(fixed(x), F.adaptive_max_pool2d(x, bins))


def test_adaptive_max_pools_are_rewritten_and_the_model_exports_exactly():
    from segexport.rewrite.fixed_adaptive_pool import FixedMaxPool2d

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveMaxPool2d(3), nn.Flatten(), nn.Linear(36, 2)).eval()
    example = torch.randn(2, 3, 8, 8)
    out, records = fixed_adaptive_pool(model, example)
    assert isinstance(out[1], FixedMaxPool2d) and records[0].action == "replaced" and records[0].max_abs_error == 0.0
    assert records[0].details["static_hw"] is True
    with torch.no_grad():
        assert torch.equal(out(example), model(example))
