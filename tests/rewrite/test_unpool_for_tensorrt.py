"""unpool_for_tensorrt: bitwise equal to MaxPool indices + MaxUnpool, ties included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segexport.models import build_model
from segexport.rewrite.unpool_for_tensorrt import (
    MaxPoolSwitches,
    SwitchUnpool,
    unpool_for_tensorrt,
)


class PoolUnpool(nn.Module):
    """pool with indices -> conv on the pooled map (the "decoder" input) -> unpool."""

    def __init__(self, k: int = 2, *, pass_size: bool = False) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(k, stride=k, return_indices=True)
        self.mid = nn.Conv2d(2, 2, 1)
        self.unpool = nn.MaxUnpool2d(k, stride=k)
        self.pass_size = pass_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, idx = self.pool(x)
        size = list(x.shape[-2:]) if self.pass_size else None
        return self.unpool(self.mid(y), idx, output_size=size)


def plateaus(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Inputs full of ties: ReLU zeros, all-zero windows and 2-4 equal values per window."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 3, shape, generator=g).float()  # values 0, 1, 2: ties everywhere
    x[..., :2, :2] = 0.0  # an all-zero window
    x[..., 2:4, 2:4] = 1.0  # a window of four equal non-zero values
    return x


def signed_zeros(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Plateaus with random signs: +0.0 and -0.0 tie, as do -1 and -1."""
    x = plateaus(shape, seed)
    sign = torch.randint(0, 2, shape, generator=torch.Generator().manual_seed(seed + 1)).float() * 2 - 1
    return x * sign


INPUTS = {
    "random": lambda shape, seed: torch.randn(shape, generator=torch.Generator().manual_seed(seed)),
    "relu": lambda shape, seed: F.relu(torch.randn(shape, generator=torch.Generator().manual_seed(seed))),
    "plateaus": plateaus,
    "zeros": lambda shape, seed: torch.zeros(shape),
    "signed_zeros": lambda shape, seed: signed_zeros(shape, seed),
}


@pytest.mark.parametrize("kind", sorted(INPUTS))
# Odd sizes need ``output_size``: without it MaxUnpool itself rejects their indices.
@pytest.mark.parametrize(
    "shape, pass_size",
    [((2, 2, 8, 8), False), ((2, 2, 8, 8), True), ((1, 2, 7, 5), True), ((1, 2, 6, 9), True)],
)
def test_rewrite_is_bitwise_equal_with_ties(kind, shape, pass_size, purity):
    torch.manual_seed(0)
    model = PoolUnpool(pass_size=pass_size).eval()
    x = INPUTS[kind](shape, 7)
    before = purity[0](model)
    new, records = unpool_for_tensorrt(model, x)
    purity[1](model, before)
    assert [(r.target, r.action) for r in records] == [("pool", "replaced"), ("unpool", "replaced")]
    assert records[1].details == {"pool": "pool", "bitwise_equal": True}
    assert isinstance(new.pool, MaxPoolSwitches) and isinstance(new.unpool, SwitchUnpool)
    for inp in (x, INPUTS[kind](shape, 8)):  # the example and a fresh input
        with torch.no_grad():
            assert torch.equal(new(inp), model(inp))


@pytest.mark.parametrize("k", [2, 3])
def test_switch_unpool_places_values_at_the_first_max_in_row_major_order(k):
    x = plateaus((3, 4, 6 * k, 5 * k), 1)
    pooled, idx = F.max_pool2d(x, k, k, return_indices=True)
    values = torch.randn_like(pooled)
    expected = F.max_unpool2d(values, idx, k, k)
    assert torch.equal(SwitchUnpool(k)(values, MaxPoolSwitches(k)(x)[1]), expected)
    assert torch.equal(MaxPoolSwitches(k)(x)[0], pooled)


def test_overlapping_pools_keep_everything_with_the_reason():
    model = PoolUnpool()
    model.pool = nn.MaxPool2d(3, stride=2, return_indices=True)
    model.unpool = nn.MaxUnpool2d(3, stride=2)
    new, records = unpool_for_tensorrt(model, torch.randn(1, 2, 9, 9))
    assert {r.action for r in records} == {"kept"}
    assert "pool: needs kernel = stride" in records[0].reason
    assert isinstance(new.unpool, nn.MaxUnpool2d)


def test_indices_from_a_functional_pool_block_the_rewrite():
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unpool = nn.MaxUnpool2d(2, stride=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y, idx = F.max_pool2d(x, 2, 2, return_indices=True)
            return self.unpool(y, idx)

    _, [record] = unpool_for_tensorrt(Functional(), torch.randn(1, 1, 4, 4))
    assert record.action == "kept" and "indices do not come from" in record.reason


def _onnx_pool_problems(model) -> list[str]:
    bad = [n.op_type for n in model.graph.node if n.op_type == "MaxUnpool"]
    bad += [f"MaxPool with {len(n.output)} outputs" for n in model.graph.node if n.op_type == "MaxPool" and len([o for o in n.output if o]) > 1]
    return bad


def test_rewritten_module_exports_without_unpool_or_indices(export_onnx, onnx_runner):
    model, x = PoolUnpool(), plateaus((1, 2, 8, 10), 3)
    new, _ = unpool_for_tensorrt(model, x)
    onnx_model = export_onnx(new, x)
    assert _onnx_pool_problems(onnx_model) == []
    allowed = {"MaxPool", "Conv", "Slice", "Equal", "Not", "And", "Or", "Where", "Unsqueeze", "Concat", "Reshape", "DepthToSpace", "Pad"}
    assert {n.op_type for n in onnx_model.graph.node} <= allowed
    with torch.no_grad():
        assert torch.equal(onnx_runner(onnx_model, x), model.eval()(x))


def test_segnet_tiny_is_bitwise_equal(export_onnx):
    torch.manual_seed(0)
    model = build_model("segnet", size="tiny", num_classes=4)
    x = torch.randn(2, 3, 64, 64)
    new, records = unpool_for_tensorrt(model, x)
    assert [r.action for r in records] == ["replaced"] * 10
    pools = [r for r in records if r.target.startswith("backbone")]
    assert [r.details["unpools"] for r in pools] == [[f"classifier.unpools.{i}"] for i in range(5)]
    with torch.no_grad():
        assert torch.equal(new(x), model.eval()(x))
    assert _onnx_pool_problems(export_onnx(new, x[:1])) == []
