"""Build a strongly typed TensorRT engine from an FP16 or INT8 (Q/DQ) ONNX model.

Written against TensorRT 10 and 11. Strong typing means the ONNX graph decides every tensor's
type (FP16 weights and casts, INT8 Q/DQ scales): TensorRT 10 needs the ``STRONGLY_TYPED``
network flag for that; TensorRT 11 builds nothing else (the flag is still accepted and ignored,
and the ``FP16``/``INT8`` builder flags and implicit calibration are gone). So no precision
builder flag is ever set here, and both majors build the same engine from the same file.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import segexport
from segexport.engine import trt_api
from segexport.engine.availability import current_gpu, engine_unavailable_reason
from segexport.engine.io import read_onnx_io
from segexport.engine.profile import ShapeProfile, Size, resolve_profile, trtexec_line
from segexport.engine.record import RECORD_FORMAT, record_path
from segexport.engine.timing_cache import (
    TimingCacheUse,
    attach_timing_cache,
    save_timing_cache,
    serialized_timing_cache,
    timing_cache_key,
)
from segexport.errors import (
    CheckFailed,
    ConfigError,
    InputError,
    MissingDependencyError,
)
from segexport.fsutil import atomic_path

DEFAULT_WORKSPACE_GB = 4.0


def _network(trt: Any, builder: Any, logger: Any, onnx: Path) -> tuple[Any, Any]:
    """A strongly typed network parsed from ``onnx`` (external data found beside it), and its parser."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)] or ["no error reported"]
        raise InputError(f"{onnx}: TensorRT's ONNX parser rejects it ({errors[0]}); "
                         "`segexport check` lists what TensorRT does not support")
    # The parser is needed until the build ends: it owns the weights the network points at.
    return network, parser


def _config(trt: Any, builder: Any, network: Any, profile: ShapeProfile, workspace_gb: float) -> Any:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if profile.dynamic:
        shapes = builder.create_optimization_profile()
        shapes.set_shape(profile.input_name, profile.min, profile.opt, profile.max)
        config.add_optimization_profile(shapes)
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if names != [profile.input_name]:
        raise InputError(f"TensorRT sees inputs {names}, expected [{profile.input_name!r}]")
    return config


@dataclass(frozen=True)
class _Built:
    """What one build produced, in memory: nothing is written until all of it exists."""

    engine: bytes
    trt_version: str
    gpu: dict[str, Any]
    timing: TimingCacheUse | None
    timing_blob: bytes | None


def _record(onnx: Path, out: Path, profile: ShapeProfile, built: _Built, *, workspace_gb: float,
            timing_cache: Path | None, seconds: float) -> dict[str, Any]:
    # These import torch: only once an engine was built.
    from segexport.hashing import file_sha256
    from segexport.onnx_graph import graph_precision

    io = read_onnx_io(onnx)
    return {
        "format": RECORD_FORMAT,
        "engine": out.name,
        "engine_sha256": hashlib.sha256(built.engine).hexdigest(),
        "onnx": str(onnx),
        "onnx_sha256": file_sha256(onnx),
        "precision": graph_precision(onnx),
        "tensorrt_version": built.trt_version,
        "gpu": built.gpu,
        "settings": {"strongly_typed": True, "profile": profile.to_dict(), "workspace_gb": workspace_gb,
                     "timing_cache": str(timing_cache) if timing_cache else None,
                     "timing_cache_status": built.timing.status if built.timing else None},
        "inputs": [t.to_dict() for t in io.inputs],
        "outputs": [t.to_dict() for t in io.outputs],
        "metadata": io.metadata,
        "trtexec": trtexec_line(onnx, out, profile, workspace_gb=workspace_gb, timing_cache=timing_cache),
        "build_seconds": round(seconds, 2),
        "segexport_version": segexport.__version__,
    }


def _build(onnx: Path, profile: ShapeProfile, workspace_gb: float, timing_cache: Path | None) -> _Built:
    """Parse, configure and build on torch's current CUDA device; raises before anything is written."""
    trt = trt_api.tensorrt_module()
    logger = trt_api.make_logger(trt)
    builder = trt.Builder(logger)
    if builder is None:
        raise MissingDependencyError(f"TensorRT cannot create a builder ({trt_api.first_error(logger)})")
    network, _parser = _network(trt, builder, logger, onnx)
    config = _config(trt, builder, network, profile, workspace_gb)
    gpu = current_gpu()
    key = timing_cache_key(trt.__version__, gpu)
    timing = attach_timing_cache(config, timing_cache, key) if timing_cache is not None else None
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CheckFailed(f"{onnx}: TensorRT {trt.__version__} could not build an engine "
                          f"({trt_api.first_error(logger)})")
    blob = serialized_timing_cache(config) if timing is not None and timing.cache is not None else None
    return _Built(bytes(memoryview(serialized)), trt.__version__, gpu, timing, blob)


def _write(out: Path, engine: bytes, record: dict[str, Any]) -> None:
    """Engine and record, each written in full to a temporary file first, then renamed record first.

    A failure while writing leaves the old engine and record as they were. The new record names
    the new engine's sha256, so if only the record got renamed (a kill between the two renames),
    the runner refuses the old engine with "rebuild it" instead of running it under a wrong record.
    """
    with atomic_path(out) as engine_tmp, atomic_path(record_path(out)) as record_tmp:
        engine_tmp.write_bytes(engine)
        record_tmp.write_text(json.dumps(record, indent=2) + "\n")


def build_engine(onnx: Path, out: Path, *, min_batch: int | None = None, opt_batch: int | None = None,
                 max_batch: int | None = None, min_size: Size | None = None, opt_size: Size | None = None,
                 max_size: Size | None = None, workspace_gb: float | None = None,
                 timing_cache: Path | None = None) -> Path:
    """Build ``out`` (serialized engine) and ``out.with_suffix(".json")`` (its build record), atomically.

    Args:
        onnx: an FP16 or INT8 (Q/DQ) model from ``segexport quantize`` (an FP32 one builds an FP32 engine).
        out: the engine file (``.plan``).
        min_batch, opt_batch, max_batch, min_size, opt_size, max_size: the optimisation profile
            for the model's dynamic axes (see :func:`resolve_profile`).
        workspace_gb: limit of TensorRT's workspace memory pool (default 4 GiB).
        timing_cache: file to load tactic timings from (when it exists and fits this TensorRT
            and GPU) and save them to, so that rebuilds are faster and pick the same kernels. A
            cache that does not fit is replaced by a fresh one with a note, never a failed build
            (see :mod:`segexport.engine.timing_cache`).

    Returns:
        ``out``.

    Raises:
        MissingDependencyError: no tensorrt package, NVIDIA driver or CUDA device, or TensorRT
            cannot create a builder here (names which).
        InputError: the file is missing, not ONNX, or rejected by TensorRT's parser.
        ConfigError: profile options that do not fit the model, or a non-positive workspace.
        CheckFailed: TensorRT fails to build the engine.
    """
    onnx, out = Path(onnx), Path(out)
    timing_cache = None if timing_cache is None else Path(timing_cache)
    workspace_gb = DEFAULT_WORKSPACE_GB if workspace_gb is None else float(workspace_gb)
    if workspace_gb <= 0:
        raise ConfigError(f"--workspace must be a positive number of GiB, got {workspace_gb}")
    if out.suffix.lower() in (".onnx", ".json"):
        raise ConfigError(f"{out}: an engine file needs its own suffix (.plan or .engine); the .json beside it is its record")
    profile = resolve_profile(onnx, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch,
                              min_size=min_size, opt_size=opt_size, max_size=max_size)
    reason = engine_unavailable_reason()
    if reason:
        line = trtexec_line(onnx, out, profile, workspace_gb=workspace_gb, timing_cache=timing_cache)
        raise MissingDependencyError(f"{reason}; elsewhere the same engine builds with: {line}")
    start = time.perf_counter()
    built = _build(onnx, profile, workspace_gb, timing_cache)
    record = _record(onnx, out, profile, built, workspace_gb=workspace_gb, timing_cache=timing_cache,
                     seconds=time.perf_counter() - start)
    _write(out, built.engine, record)
    if timing_cache is not None and built.timing is not None and built.timing.cache is not None:
        save_timing_cache(timing_cache, built.timing_blob, timing_cache_key(built.trt_version, built.gpu))
    return out
