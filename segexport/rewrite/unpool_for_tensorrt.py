"""Rule ``unpool_for_tensorrt``: MaxPool-with-indices + MaxUnpool -> ops TensorRT supports.

TensorRT's ONNX parser accepts neither ``MaxUnpool`` nor a ``MaxPool`` with its second
(indices) output. For non-overlapping windows (kernel = stride, no padding, no dilation,
floor mode; SegNet's 2x2/2) the indices carry no information that the pool's *input* does
not: the argmax of a window is the first position, in row-major order, holding the window's
maximum (PyTorch's max pool keeps the first maximum because it only moves on a strictly
greater value). So:

- each ``nn.MaxPool2d(return_indices=True)`` becomes :class:`MaxPoolSwitches`, returning the
  pooled map and, where the indices were, its own input (the "switches");
- each ``nn.MaxUnpool2d`` becomes :class:`SwitchUnpool`, which recomputes the window maximum
  (MaxPool without indices), compares each window position with it (Equal), keeps only the
  first match in row-major order (And/Not over an ordered loop), places the decoder value
  there (Where) and interleaves the positions back (DepthToSpace-style reshape).

The result is bitwise equal to the original, ties included.

Contract with the model: the indices tensor returned by a pool is passed, untouched, as the
second argument of ``MaxUnpool2d`` modules (``unpool(x, indices[, output_size])``) and used
nowhere else; pools and unpools are modules, not ``F.max_pool2d``/``F.max_unpool2d`` calls.
``segexport.models.segnet`` follows it. Pairing is read from the example forward pass (which
pool's indices reach which unpool), and the rewritten model must reproduce the original
output exactly on the example, otherwise nothing is replaced.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from segexport.rewrite import RewriteRecord
from segexport.rewrite.common import (
    capture_io,
    check_images,
    eval_copy,
    max_abs_diff,
    record,
    replace_module,
    square,
)

RULE = "unpool_for_tensorrt"
_record = partial(record, RULE)


class MaxPoolSwitches(nn.Module):
    """Non-overlapping max pooling that returns ``(pooled, input)`` instead of ``(pooled, indices)``."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.max_pool2d(x, self.kernel, self.kernel), x


class SwitchUnpool(nn.Module):
    """``MaxUnpool2d`` driven by the pool's input (switches) instead of its indices."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}"

    def forward(
        self, x: torch.Tensor, switches: torch.Tensor, output_size: list[int] | None = None
    ) -> torch.Tensor:
        k = self.kernel
        peak = F.max_pool2d(switches, k, k)
        h, w = peak.shape[-2], peak.shape[-1]
        taken = torch.zeros_like(peak, dtype=torch.bool)
        placed = []
        # Row-major over the window: a position wins only if no earlier one matched.
        for a in range(k):
            for b in range(k):
                hit = switches[..., a : h * k : k, b : w * k : k] == peak
                placed.append(torch.where(hit & ~taken, x, torch.zeros_like(x)))
                taken = taken | hit
        out = torch.stack(placed, dim=2).flatten(1, 2)
        out = F.pixel_shuffle(out, k)
        if output_size is not None:
            pad_h, pad_w = int(output_size[-2]) - h * k, int(output_size[-1]) - w * k
            out = F.pad(out, (0, pad_w, 0, pad_h))
        return out


def _pool_problem(pool: nn.MaxPool2d) -> str | None:
    k, s = square(pool.kernel_size), square(pool.stride)
    if k is None or k != s or square(pool.padding) != 0 or square(pool.dilation) != 1 or pool.ceil_mode:
        return "needs kernel = stride (square), padding 0, dilation 1, floor mode"
    return None


def _unpool_problem(unpool: nn.MaxUnpool2d, pool: nn.MaxPool2d | None) -> str | None:
    if pool is None:
        return "not run on the example, or its indices do not come from a MaxPool2d(return_indices=True)"
    k, s = square(unpool.kernel_size), square(unpool.stride)
    if k != s or k != square(pool.kernel_size) or square(unpool.padding) != 0:
        return "needs kernel = stride = its pool's kernel and padding 0"
    return None


def _pairing(
    model: nn.Module, example: torch.Tensor, pools: list[str], unpools: list[str]
) -> tuple[torch.Tensor, dict[str, str | None], dict[str, torch.Tensor]]:
    """Logits, the pool whose indices reach each unpool (None if none) and each unpool's output."""
    with torch.no_grad(), capture_io(model, pools + unpools) as seen:
        logits = model(example)
    producer = {id(out[1]): p for p in pools for _, out in seen[p]}
    # The indices are the unpool's second positional argument; identity shows where they came from.
    pairs = {u: producer.get(id(seen[u][0][0][1])) if seen[u] else None for u in unpools}
    outputs = {u: torch.cat([out for _, out in seen[u]]) for u in unpools if seen[u]}
    return logits, pairs, outputs


def _problems(
    model: nn.Module, pools: list[str], unpools: list[str], pairs: dict[str, str | None]
) -> dict[str, str]:
    """Why each pool or unpool that cannot be rewritten cannot be, by name."""
    found = {p: r for p in pools if (r := _pool_problem(model.get_submodule(p)))}
    for u in unpools:
        pool = model.get_submodule(pairs[u]) if pairs[u] else None
        if reason := _unpool_problem(model.get_submodule(u), pool):
            found[u] = reason
    return found


def _swap(model: nn.Module, pools: list[str], unpools: list[str]) -> dict[str, nn.Module]:
    """Put the replacements in; returns the originals so they can be put back."""
    originals = {n: model.get_submodule(n) for n in pools + unpools}
    for n, m in originals.items():
        kind = MaxPoolSwitches if n in pools else SwitchUnpool
        replace_module(model, n, kind(square(m.kernel_size)))
    return originals


def rewrite_unpools_(model: nn.Module, example: torch.Tensor) -> list[RewriteRecord]:
    """In place on a model the caller owns (in eval mode): replace every indices pool and unpool.

    All or nothing: the indices change meaning, so one pool or unpool that cannot be rewritten
    keeps every one of them (each record says which one blocked it). The same holds when the
    rewritten model is not bitwise equal to the original on ``example``.

    Returns:
        One record per ``MaxPool2d(return_indices=True)`` and per ``MaxUnpool2d``.
    """
    pools = [n for n, m in model.named_modules() if isinstance(m, nn.MaxPool2d) and m.return_indices]
    unpools = [n for n, m in model.named_modules() if isinstance(m, nn.MaxUnpool2d)]
    if not pools and not unpools:
        return []
    before, pairs, unpool_before = _pairing(model, example, pools, unpools)
    if problems := _problems(model, pools, unpools, pairs):
        blocker = "; ".join(f"{n}: {r}" for n, r in problems.items())
        return [_record(n, "kept", f"not rewritten ({blocker})") for n in pools + unpools]
    originals = _swap(model, pools, unpools)
    after, _, unpool_after = _pairing(model, example, [], unpools)
    if not torch.equal(before, after):
        for n, m in originals.items():
            replace_module(model, n, m)
        reason = f"not bitwise equal on the example (max diff {max_abs_diff(before, after):.3g})"
        return [_record(n, "kept", reason) for n in pools + unpools]
    records = [
        _record(p, "replaced", "max pool returning its input as switches", 0.0,
                unpools=[u for u in unpools if pairs[u] == p])
        for p in pools
    ]
    for u in unpools:
        a, b = unpool_before[u], unpool_after[u]
        records.append(_record(u, "replaced", "first-max mask from the pool's input", max_abs_diff(a, b),
                               pool=pairs[u], bitwise_equal=torch.equal(a, b)))
    return records


def unpool_for_tensorrt(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, list[RewriteRecord]]:
    """Replace MaxPool-with-indices + MaxUnpool pairs by ops TensorRT supports, bitwise exact.

    Args:
        model: any module; not modified.
        example: a normalised input batch at the export size (NCHW float).

    Returns:
        A rewritten deep copy in eval mode and one record per pool and unpool.

    Raises:
        InputError: ``example`` is not a float NCHW batch.
    """
    check_images(example, "example")
    out = eval_copy(model)
    return out, rewrite_unpools_(out, example)
