"""Rule ``fixed_adaptive_pool``: ``nn.AdaptiveAvgPool2d``/``nn.AdaptiveMaxPool2d`` -> fixed pooling
for the export shape (max pools: :class:`FixedMaxPool2d`; the rest of this docstring is about the
average).

PyTorch's adaptive average pooling of a length-``n`` axis into ``b`` bins averages output bin
``i`` over the window ``[floor(i*n/b), ceil((i+1)*n/b))``. When ``b`` does not divide ``n`` the
windows have different sizes and may overlap (3 bins on 16: [0,6), [5,11), [10,16)), so no
single AveragePool reproduces it. The rewrite picks, per pool, the simplest exact form for the
feature-map size seen on the example input:

- ``mean``: one output bin (global pooling) -> ``ReduceMean``, valid at any input size;
- ``avgpool``: every bin divides its axis -> ``AveragePool`` with kernel = stride = n/b;
- ``matmul``: otherwise -> ``R @ x @ C`` with constant averaging matrices ``R [b_h, H]`` and
  ``C [W, b_w]`` (two ``MatMul`` nodes).

The last two are only correct at the size they were built for, so their ``forward`` refuses
any other size instead of computing something else, and their records say ``static_hw``
(an ONNX graph with dynamic height/width would bake the size in: the exporter turns the
size check into a runtime assert that ONNX drops).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from segexport.errors import InputError
from segexport.rewrite import RewriteRecord
from segexport.rewrite.common import (
    capture_io,
    check_images,
    eval_copy,
    max_abs_diff,
    record,
    replace_module,
)

RULE = "fixed_adaptive_pool"
_record = partial(record, RULE)


def adaptive_windows(size: int, bins: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling windows ``[start, end)`` for ``bins`` bins over ``size``."""
    return [((i * size) // bins, -(-((i + 1) * size) // bins)) for i in range(bins)]


def averaging_matrix(size: int, bins: int) -> torch.Tensor:
    """``[bins, size]`` matrix whose row ``i`` averages adaptive window ``i``."""
    m = torch.zeros(bins, size, dtype=torch.float64)
    for i, (start, end) in enumerate(adaptive_windows(size, bins)):
        m[i, start:end] = 1.0 / (end - start)
    return m


class _FixedPool(nn.Module):
    """What both fixed pools share: the size they were built for, and refusing any other."""

    input_size: tuple[int, int]
    output_size: tuple[int, int]
    mode: str

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, output_size={self.output_size}, mode={self.mode}"

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[-2:]) != self.input_size:
            h, w = self.input_size
            raise InputError(f"fixed pooling was built for {h}x{w} feature maps, got {x.shape[-2]}x{x.shape[-1]}; "
                             "rewrite the model at the input size you export")

    @property
    def kernel(self) -> tuple[int, int]:
        """Kernel = stride where the bins divide the map."""
        return self.input_size[0] // self.output_size[0], self.input_size[1] // self.output_size[1]


class FixedAvgPool2d(_FixedPool):
    """Adaptive average pooling frozen for one input size (see the module docstring).

    Args:
        input_size: feature-map ``(H, W)`` the pooling is built for.
        output_size: bins ``(b_h, b_w)``.
    """

    def __init__(self, input_size: tuple[int, int], output_size: tuple[int, int]) -> None:
        super().__init__()
        (h, w), (bh, bw) = input_size, output_size
        self.input_size = (h, w)
        self.output_size = (bh, bw)
        if (bh, bw) == (1, 1):
            self.mode = "mean"
        elif h % bh == 0 and w % bw == 0:
            self.mode = "avgpool"
        else:
            self.mode = "matmul"
        self.register_buffer("rows", averaging_matrix(h, bh).float(), persistent=False)
        self.register_buffer("cols", averaging_matrix(w, bw).T.contiguous().float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "mean":
            return x.mean(dim=(-2, -1), keepdim=True)
        self._check(x)
        if self.mode == "avgpool":
            return F.avg_pool2d(x, self.kernel, stride=self.kernel)
        return torch.matmul(torch.matmul(self.rows, x), self.cols)


class FixedMaxPool2d(_FixedPool):
    """Adaptive max pooling frozen for one input size, bitwise exact (a max needs no arithmetic).

    ``max`` (one bin: ReduceMax, any size), ``maxpool`` (bins divide the map: MaxPool with
    kernel = stride) or ``windows`` (otherwise: a ReduceMax per bin over PyTorch's windows,
    concatenated). ONNX has no adaptive max pooling and torch's exporter cannot write the
    last case at all.
    """

    def __init__(self, input_size: tuple[int, int], output_size: tuple[int, int]) -> None:
        super().__init__()
        (h, w), (bh, bw) = input_size, output_size
        self.input_size, self.output_size = (h, w), (bh, bw)
        self.mode = "max" if (bh, bw) == (1, 1) else "maxpool" if h % bh == 0 and w % bw == 0 else "windows"
        self.row_windows, self.col_windows = adaptive_windows(h, bh), adaptive_windows(w, bw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "max":
            return x.amax(dim=(-2, -1), keepdim=True)
        self._check(x)
        if self.mode == "maxpool":
            return F.max_pool2d(x, self.kernel, stride=self.kernel)
        rows = [torch.cat([x[..., r0:r1, c0:c1].amax(dim=(-2, -1), keepdim=True) for c0, c1 in self.col_windows], -1)
                for r0, r1 in self.row_windows]
        return torch.cat(rows, dim=-2)


def _bins(pool: nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d, h: int, w: int) -> tuple[int, int]:
    """Output size of ``pool`` with None (keep the input size) resolved."""
    size = pool.output_size
    bh, bw = (size, size) if isinstance(size, int) else size
    return (h if bh is None else bh, w if bw is None else bw)


def _rewrite_one(
    model: nn.Module, name: str, calls: list[tuple[tuple, torch.Tensor]]
) -> RewriteRecord:
    """Replace pool ``name`` (run as ``calls`` on the example) or say why not."""
    if not calls:
        return _record(name, "skipped", "not run by forward on the example input (e.g. a training-only head)")
    sizes = {tuple(args[0].shape[-2:]) for args, _ in calls}
    if len(sizes) > 1:
        return _record(name, "skipped", f"runs at several sizes {sorted(sizes)} in one forward")
    h, w = sizes.pop()
    pool = model.get_submodule(name)
    if isinstance(pool, nn.AdaptiveMaxPool2d) and pool.return_indices:
        return _record(name, "kept", "returns indices (no fixed form keeps them)")
    fixed = FixedMaxPool2d if isinstance(pool, nn.AdaptiveMaxPool2d) else FixedAvgPool2d
    new = fixed((h, w), _bins(pool, h, w))
    with torch.no_grad():
        err = max(max_abs_diff(new(args[0]), out) for args, out in calls)
    replace_module(model, name, new)
    bh, bw = new.output_size
    details = {
        "input_size": [h, w],
        "bins": [bh, bw],
        "mode": new.mode,
        # The float32 rounding error scales with this (about 1e-7 of it).
        "max_abs_value": max(float(out.abs().max()) for _, out in calls),
        # Only global pooling is right at every size; the export must then keep H and W static.
        "static_hw": new.mode not in ("mean", "max"),
        "row_windows": adaptive_windows(h, bh),
        "col_windows": adaptive_windows(w, bw),
    }
    return _record(name, "replaced", f"{new.mode} for {h}x{w} -> {bh}x{bw}", err, **details)


def rewrite_adaptive_pools_(model: nn.Module, example: torch.Tensor) -> list[RewriteRecord]:
    """In place on a model the caller owns (in eval mode): replace every AdaptiveAvgPool2d and
    AdaptiveMaxPool2d.

    Returns:
        One record per adaptive pool in the model.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))]
    if not names:
        return []
    with torch.no_grad(), capture_io(model, names) as seen:
        model(example)
    return [_rewrite_one(model, n, seen[n]) for n in names]


def fixed_adaptive_pool(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, list[RewriteRecord]]:
    """Replace adaptive average pools by fixed pooling for the size ``example`` produces.

    Args:
        model: any module; not modified.
        example: a normalised input batch at the export size (NCHW float).

    Returns:
        A rewritten deep copy in eval mode and one record per adaptive pool; ``max_abs_error``
        compares each pool's output on the example.

    Raises:
        InputError: ``example`` is not a float NCHW batch.
    """
    check_images(example, "example")
    out = eval_copy(model)
    return out, rewrite_adaptive_pools_(out, example)
