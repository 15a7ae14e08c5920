"""Rule ``functional_unpool``: ``F.max_pool2d(..., return_indices=True)`` + ``F.max_unpool2d``
calls -> the same switch-based unpooling as :mod:`segexport.rewrite.unpool_for_tensorrt`; and
``F.adaptive_max_pool2d`` calls -> :class:`~segexport.rewrite.fixed_adaptive_pool.FixedMaxPool2d`
(torch cannot export adaptive max pooling at bins that do not divide the map).

Users' SegNet-style networks often call the functions instead of holding ``nn.MaxPool2d`` /
``nn.MaxUnpool2d`` modules, so there is no module to replace. This rule wraps the whole model
in :class:`FunctionalSwitches`, whose forward runs the network with ``torch.nn.functional``'s
``max_pool2d`` and ``max_unpool2d`` swapped for versions that pass the pool's *input* (the
switches) where the indices were and unpool from it with the first-max mask
(:class:`~segexport.rewrite.unpool_for_tensorrt.SwitchUnpool`). The exporter then sees
MaxPool without indices, Equal, Where and a pixel shuffle: no ``MaxUnpool``, no indices output.

It reaches calls made through the module attribute (``F.max_pool2d(...)``,
``torch.nn.functional.max_unpool2d(...)``), which is how such code is written; a name imported
with ``from torch.nn.functional import max_unpool2d`` is out of its reach and stays a
``MaxUnpool`` (``segexport check`` then reports it). Like the module rule it is all or nothing
and is kept only when the wrapped model is bitwise equal to the original on the example,
ties included; pools must be non-overlapping (kernel = stride, no padding or dilation).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segexport.rewrite import RewriteRecord
from segexport.rewrite.common import max_abs_diff, record, square
from segexport.rewrite.fixed_adaptive_pool import FixedMaxPool2d
from segexport.rewrite.unpool_for_tensorrt import SwitchUnpool

RULE = "functional_unpool"
_record = partial(record, RULE)
_ORIGINAL_POOL, _ORIGINAL_UNPOOL, _ORIGINAL_ADAPTIVE_MAX = F.max_pool2d, F.max_unpool2d, F.adaptive_max_pool2d


def _kernel(kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool) -> int | None:
    """The window side of a non-overlapping square pool, else None."""
    k = square(kernel_size)
    s = k if stride is None or (isinstance(stride, (list, tuple)) and not stride) else square(stride)
    if k is None or s != k or square(padding) != 0 or square(dilation) != 1 or ceil_mode:
        return None
    return k


def _switch_pool(input: torch.Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 ceil_mode: bool = False, return_indices: bool = False) -> Any:
    k = _kernel(kernel_size, stride, padding, dilation, ceil_mode) if return_indices else None
    if k is None:
        return _ORIGINAL_POOL(input, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode,
                              return_indices=return_indices)
    return _ORIGINAL_POOL(input, k, k), input  # the switches travel where the indices did


def _switch_unpool(input: torch.Tensor, indices: torch.Tensor, kernel_size: Any, stride: Any = None,
                   padding: Any = 0, output_size: Any = None) -> torch.Tensor:
    k = square(kernel_size)
    if indices.is_floating_point() and k is not None and (stride is None or square(stride) == k) \
            and square(padding) == 0:
        return SwitchUnpool(k)(input, indices, list(output_size) if output_size is not None else None)
    return _ORIGINAL_UNPOOL(input, indices, kernel_size, stride, padding, output_size)


def _fixed_adaptive_max(input: torch.Tensor, output_size: Any, return_indices: bool = False) -> Any:
    """``F.adaptive_max_pool2d`` as :class:`FixedMaxPool2d` for this input's (static) size."""
    if return_indices:
        return _ORIGINAL_ADAPTIVE_MAX(input, output_size, return_indices)
    h, w = int(input.shape[-2]), int(input.shape[-1])
    bh, bw = (output_size, output_size) if isinstance(output_size, int) else output_size
    return FixedMaxPool2d((h, w), (h if bh is None else bh, w if bw is None else bw))(input)


@contextmanager
def _functions(pool: Any, unpool: Any, adaptive_max: Any = None) -> Iterator[None]:
    saved = F.max_pool2d, F.max_unpool2d, F.adaptive_max_pool2d
    F.max_pool2d, F.max_unpool2d = pool, unpool
    F.adaptive_max_pool2d = adaptive_max or saved[2]
    try:
        yield
    finally:
        F.max_pool2d, F.max_unpool2d, F.adaptive_max_pool2d = saved


class FunctionalSwitches(nn.Module):
    """Runs ``model`` with switch-based ``F.max_pool2d(return_indices=True)`` / ``F.max_unpool2d``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.input_divisor = getattr(model, "input_divisor", 1)

    def forward(self, x: torch.Tensor) -> Any:
        with _functions(_switch_pool, _switch_unpool, _fixed_adaptive_max):
            return self.model(x)


def _stack_modules() -> list[Any]:
    """The ``self`` of every frame on the stack (to tell a module's own call of a function from a user's)."""
    frame, found = inspect.currentframe(), []
    while frame is not None:
        found.append(frame.f_locals.get("self"))
        frame = frame.f_back
    return found


def _calls(model: nn.Module, example: torch.Tensor) -> tuple[Any, list[tuple[str, str]]]:
    """The model's output on ``example`` and its functional indices pools and unpools, as
    ``(kind, the module path of the module whose forward made the call)``."""
    names = {id(m): n for n, m in model.named_modules()}
    seen: list[tuple[str, str]] = []

    def caller() -> str:
        frame = inspect.currentframe()
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in names and \
                    not isinstance(owner, (nn.MaxPool2d, nn.MaxUnpool2d)):
                return names[id(owner)] or "(model)"
            frame = frame.f_back
        return "(model)"

    def pool(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("return_indices") or (len(args) > 6 and args[6]):
            seen.append(("max_pool2d", caller()))
        return _ORIGINAL_POOL(*args, **kwargs)

    def unpool(*args: Any, **kwargs: Any) -> Any:
        seen.append(("max_unpool2d", caller()))
        return _ORIGINAL_UNPOOL(*args, **kwargs)

    def adaptive_max(*args: Any, **kwargs: Any) -> Any:
        if not any(isinstance(m, nn.AdaptiveMaxPool2d) for m in _stack_modules()):
            seen.append(("adaptive_max_pool2d", caller()))
        return _ORIGINAL_ADAPTIVE_MAX(*args, **kwargs)

    with torch.no_grad(), _functions(pool, unpool, adaptive_max):
        out = model(example)
    return out, seen


def rewrite_functional_unpools(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, list[RewriteRecord]]:
    """``model`` wrapped in :class:`FunctionalSwitches` when it calls the functional unpooling
    and the wrapped model is bitwise equal on ``example``; else ``model`` itself.

    Returns:
        The model to go on with and one record per functional call site (none without such calls).
    """
    before, calls = _calls(model, example)
    if not any(kind in ("max_unpool2d", "adaptive_max_pool2d") for kind, _ in calls):
        return model, []
    targets = list(dict.fromkeys(f"{where}: F.{kind}" for kind, where in calls))
    wrapped = FunctionalSwitches(model).eval()
    with torch.no_grad():
        after = wrapped(example)
    if not (isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor) and torch.equal(before, after)):
        diff = max_abs_diff(before, after) if isinstance(after, torch.Tensor) and isinstance(before, torch.Tensor) \
            and before.shape == after.shape else float("nan")
        return model, [_record(t, "kept", f"not bitwise equal on the example (max diff {diff:.3g}); pools must be "
                               "non-overlapping (kernel = stride, no padding)") for t in targets]
    reasons = {"adaptive_max_pool2d": "fixed max pooling for the export size (static_hw)"}
    return wrapped, [_record(t, "replaced", reasons.get(t.rsplit(".", 1)[-1],
                                                        "functional pool/unpool through the pool's input (first-max mask)"),
                             0.0, calls=sum(1 for kind, where in calls if f"{where}: F.{kind}" == t),
                             static_hw=t.endswith("adaptive_max_pool2d"))
                     for t in targets]
