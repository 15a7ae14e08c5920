"""Helpers shared by the rewrite rules: copying, module surgery, hooks, measurements."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from segexport.errors import InputError
from segexport.rewrite import RewriteRecord

# Images per forward pass when running calibration/validation batches through a model.
BATCH = 8


def eval_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode (the input is left untouched)."""
    return copy.deepcopy(model).eval()


def record(
    rule: str, target: str, action: str, reason: str, error: float | None = None, **details: Any
) -> RewriteRecord:
    """A :class:`RewriteRecord` with ``details`` given as keywords."""
    return RewriteRecord(rule, target, action, reason, error, details)


def square(value: int | tuple[int, ...]) -> int | None:
    """``value`` as one int when it is an int or a tuple of equal ints (a square kernel), else None."""
    if isinstance(value, int):
        return value
    return value[0] if len(set(value)) == 1 else None


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at qualified ``name`` (e.g. "classifier.upscores.0") in place,
    in the train/eval mode of ``root``."""
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new.train(root.training))


def check_images(x: torch.Tensor, what: str) -> None:
    """Raise InputError unless ``x`` is a float NCHW batch.

    Raises:
        InputError: ``x`` is not a floating-point 4-D tensor with at least one image.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point() or len(x) == 0:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{what} must be a non-empty float NCHW batch, got {shape}; pass normalised images")


@contextmanager
def capture_io(model: nn.Module, names: list[str]) -> Iterator[dict[str, list[tuple[Any, Any]]]]:
    """Record ``(inputs, output)`` of the named submodules on every forward while active."""
    seen: dict[str, list[tuple[Any, Any]]] = {n: [] for n in names}
    handles = []
    for n in names:
        def hook(_m: nn.Module, args: Any, out: Any, n: str = n) -> None:
            seen[n].append((args, out))

        handles.append(model.get_submodule(n).register_forward_hook(hook))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def run_batched(model: nn.Module, images: torch.Tensor, batch: int = BATCH) -> torch.Tensor:
    """``model(images)`` in chunks of ``batch`` images, concatenated."""
    return torch.cat([model(images[i : i + batch]) for i in range(0, len(images), batch)])


@torch.no_grad()
def module_inputs(model: nn.Module, name: str, images: torch.Tensor) -> torch.Tensor:
    """The first positional input of submodule ``name`` for every image, concatenated."""
    chunks = []
    with capture_io(model, [name]) as seen:
        for i in range(0, len(images), BATCH):
            model(images[i : i + BATCH])
            chunks += [args[0] for args, _ in seen[name]]
            seen[name].clear()
    return torch.cat(chunks)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| as a Python float (0.0 for empty tensors)."""
    if a.numel() == 0:
        return 0.0
    return float((a.double() - b.double()).abs().max())


def argmax_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of pixels where the class argmax of logits ``a`` and ``b`` agree."""
    return float((a.argmax(1) == b.argmax(1)).double().mean())
