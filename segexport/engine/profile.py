"""The optimisation profile of an engine (input shapes it accepts) and the equivalent trtexec line.

A dynamic batch axis gets ``min/opt/max`` batch sizes; dynamic height and width (a model
exported with ``--dynamic-hw``) get ``min/opt/max`` sizes, by default the export size for all
three. Fixed axes keep the model's value: asking to change them is an error, not a silent no-op.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segexport.engine.io import read_onnx_io
from segexport.errors import ConfigError

Size = tuple[int, int]


@dataclass(frozen=True)
class ShapeProfile:
    """Shapes of the image input an engine is built for.

    Attributes:
        input_name: the graph input.
        min, opt, max: ``(N, C, H, W)`` each; TensorRT tunes kernels for ``opt``.
        dynamic: whether any axis of the input is dynamic (a static input needs no profile).
    """

    input_name: str
    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]
    dynamic: bool

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input_name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max),
                "dynamic": self.dynamic}


def _ordered(what: str, low: Any, mid: Any, high: Any) -> None:
    values = [low, mid, high]
    flat = [v if isinstance(v, tuple) else (v,) for v in values]
    if any(x < 1 for v in flat for x in v):
        raise ConfigError(f"--min/--opt/--max-{what} must be positive, got {values}")
    if not all(a <= b <= c for a, b, c in zip(*flat, strict=True)):
        raise ConfigError(f"--min-{what} <= --opt-{what} <= --max-{what} must hold, got {low}, {mid}, {high}")


def _batches(path: Path, fixed: int, batches: tuple[int | None, int | None, int | None]) -> tuple[int, int, int]:
    if fixed > 0:
        if any(b is not None and b != fixed for b in batches):
            raise ConfigError(f"{path}: the batch size is fixed at {fixed} in the model; drop the batch options "
                              "or export with a dynamic batch")
        return fixed, fixed, fixed
    low, mid, high = (b if b is not None else d for b, d in zip(batches, (1, 1, 8), strict=True))
    mid = min(max(mid, low), high) if batches[1] is None else mid
    _ordered("batch", low, mid, high)
    return low, mid, high


def _sizes(path: Path, hw: tuple[int, int], metadata: dict[str, str],
           sizes: tuple[Size | None, Size | None, Size | None]) -> tuple[Size, Size, Size]:
    if hw[0] > 0 and hw[1] > 0:
        if any(s is not None and tuple(s) != hw for s in sizes):
            raise ConfigError(f"{path}: the input size is fixed at {hw[0]}x{hw[1]} in the model; the size options "
                              "are for models exported with --dynamic-hw")
        return hw, hw, hw
    opt = sizes[1] or (tuple(json.loads(metadata["input_size"])) if "input_size" in metadata else None)
    if opt is None:
        raise ConfigError(f"{path}: height and width are dynamic and the model names no input size; pass --opt-size HxW")
    low, high = sizes[0] or opt, sizes[2] or opt
    _ordered("size", tuple(low), tuple(opt), tuple(high))
    divisor = int(metadata.get("input_divisor", "1"))
    bad = [f"{h}x{w}" for h, w in (low, opt, high) if h % divisor or w % divisor]
    if bad:
        raise ConfigError(f"{path}: sizes {', '.join(bad)} are not multiples of {divisor}, which this model needs")
    return tuple(low), tuple(opt), tuple(high)


def resolve_profile(onnx: str | Path, *, min_batch: int | None = None, opt_batch: int | None = None,
                    max_batch: int | None = None, min_size: Size | None = None, opt_size: Size | None = None,
                    max_size: Size | None = None) -> ShapeProfile:
    """The profile for ``onnx``'s image input: options for its dynamic axes, its own values elsewhere.

    Defaults for a dynamic batch: min 1, opt 1, max 8. Defaults for a dynamic size: the model's
    ``input_size`` metadata for all three.

    Raises:
        InputError: the file is missing, not ONNX, or has no single ``[N, C, H, W]`` input.
        ConfigError: an option for a fixed axis, or values out of order.
    """
    io = read_onnx_io(onnx)
    spec = io.image_input
    n, c, h, w = spec.shape
    if c < 1:
        raise ConfigError(f"{io.path}: the channel axis of {spec.name!r} is dynamic; TensorRT needs it fixed")
    low_n, opt_n, high_n = _batches(io.path, n, (min_batch, opt_batch, max_batch))
    low_hw, opt_hw, high_hw = _sizes(io.path, (h, w), io.metadata, (min_size, opt_size, max_size))
    return ShapeProfile(spec.name, (low_n, c, *low_hw), (opt_n, c, *opt_hw), (high_n, c, *high_hw),
                        dynamic=min(spec.shape) < 1)


def _shape(name: str, dims: tuple[int, ...]) -> str:
    return f"{name}:{'x'.join(map(str, dims))}"


def trtexec_line(onnx: str | Path, engine: str | Path, profile: ShapeProfile, *,
                 workspace_gb: float | None = None, timing_cache: str | Path | None = None) -> str:
    """The ``trtexec`` command that builds the same engine as :func:`build_engine` with ``profile``.

    ``--stronglyTyped`` is required on TensorRT 10 for the Q/DQ and FP16 graphs to keep their
    types, and is the default (a no-op) on TensorRT 11, which removed ``--fp16``/``--int8``.
    """
    args = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}", "--stronglyTyped"]
    if profile.dynamic:
        args += [f"--minShapes={_shape(profile.input_name, profile.min)}",
                 f"--optShapes={_shape(profile.input_name, profile.opt)}",
                 f"--maxShapes={_shape(profile.input_name, profile.max)}"]
    if workspace_gb is not None:
        args.append(f"--memPoolSize=workspace:{round(workspace_gb * 1024)}M")
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    return shlex.join(args)


def trtexec_command(onnx: Path, engine: Path, *, min_batch: int = 1, opt_batch: int = 1, max_batch: int = 8,
                    input_name: str = "images", size: tuple[int, int] | None = None,
                    workspace_gb: float | None = None, timing_cache: Path | None = None) -> str:
    """The trtexec line for a dynamic-batch model, whether or not ``onnx`` exists here.

    Args:
        onnx, engine: paths as they should appear in the command.
        min_batch, opt_batch, max_batch: the batch range of the profile.
        input_name: the image input (segexport exports ``images``).
        size: ``(H, W)`` of the input; None reads name, channels and size from ``onnx``
            (then a model with a fixed batch keeps it, and a static model gets no shape flags).
        workspace_gb, timing_cache: as for :func:`build_engine`.

    Raises:
        ConfigError: batch values out of order; with ``size`` None, what :func:`resolve_profile` raises.
    """
    if size is None:
        profile = resolve_profile(onnx, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch)
    else:
        _ordered("batch", min_batch, opt_batch, max_batch)
        h, w = size
        profile = ShapeProfile(input_name, (min_batch, 3, h, w), (opt_batch, 3, h, w), (max_batch, 3, h, w), True)
    return trtexec_line(onnx, engine, profile, workspace_gb=workspace_gb, timing_cache=timing_cache)
