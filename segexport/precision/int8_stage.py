"""The INT8 half of the precision stage: ranges (calibrated or from a cache), the TensorRT
calibration cache, the Q/DQ model of a target, and its summary."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from segexport import limits
from segexport.fsutil import atomic_path
from segexport.precision.calibrate import (
    DEFAULT_METHOD,
    CalibrationSettings,
    calibrate,
    check_cache,
    save_ranges,
)
from segexport.precision.calibration_data import (
    DEFAULT_CALIB,
    DEFAULT_CALIB_IMAGES,
    load_calibration_images,
)
from segexport.precision.int8 import (
    optimized_op_counts,
    qdq_facts,
    quantize_int8,
    quantized_layers,
)
from segexport.precision.stage import Context, budget_problem, build_and_judge
from segexport.precision.targets import DEFAULT_TARGET, Int8Target, get_target
from segexport.precision.trt_cache import (
    installed_trt_version,
    version_number,
    write_trt_cache,
)

RANGES_NAME = "calibration.json"
TRT_CACHE_NAME = "calibration.cache"


def _copy(src: Path, dst: Path) -> None:
    if src.resolve() == dst.resolve():
        return
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def prepare_ranges(ctx: Context, settings: CalibrationSettings, *, calib: str, count: int,
                   cache: Path | None, seed: int) -> tuple[Path, dict[str, Any]]:
    """``calibration.json`` in the output folder: copied from ``cache`` when it exists (no
    calibration), else calibrated and written (and copied to ``cache`` when one is named).

    Returns:
        The ranges file and its provenance (model, settings, images) plus ``cache`` facts.
    """
    ranges_path = ctx.out_dir / RANGES_NAME
    if cache is not None and cache.exists():
        provenance = check_cache(cache, ctx.info.sha256, settings)
        _copy(cache, ranges_path)
        return ranges_path, {**provenance, "cache": {"path": str(cache), "reused": True}}
    images = load_calibration_images(calib, ctx.info.preprocess, count=count, seed=seed)
    shortfall = images.shortfall_note()
    if shortfall:
        ctx.notes.append(shortfall)
    ranges = calibrate(ctx.info.path, images, settings, input_name=ctx.info.input_name,
                       static_batch=ctx.info.batch, progress=ctx.progress, notes=ctx.notes)
    provenance = {"model_sha256": ctx.info.sha256, "model": str(ctx.info.path), "settings": settings.to_dict(),
                  "images": images.report(), "tensors": len(ranges.data)}
    save_ranges(ranges_path, ranges, provenance)
    if cache is not None:
        _copy(ranges_path, cache)
    return ranges_path, {**provenance, "cache": {"path": str(cache) if cache else None, "reused": False}}


def trt_amax(ranges_path: Path) -> dict[str, float]:
    """max(|lowest|, |highest|) per tensor of a ranges file: the symmetric range TensorRT uses."""
    from onnxruntime.quantization import load_tensors_data

    ranges = load_tensors_data(ranges_path)
    # lowest/highest are 0-d or 1-element arrays depending on the calibrator
    return {name: float(np.abs(np.concatenate([np.ravel(d.lowest), np.ravel(d.highest)])).max())
            for name, d in ranges.items()}


def _graph(target: Int8Target, path: Path) -> dict[str, Any]:
    facts = qdq_facts(path)
    if target.fused_kernels:
        optimized = optimized_op_counts(path)
        facts["optimized"] = {"QLinearConv": optimized.get("QLinearConv", 0),
                              "Conv_in_model": facts["op_counts"].get("Conv", 0), "op_counts": optimized}
    return facts


def resolve_int8_options(*, target: str | None, calib: str | None, calib_images: int | None, method: str | None,
                         percentile: float | None, calib_cache: str | Path | None) -> dict[str, Any]:
    """The INT8 options with defaults applied and checked (``make_int8``'s keyword arguments).

    Raises:
        ConfigError: an unknown target or method, a percentile without ``percentile`` or out
            of range, or a calibration count outside 1..``limits.IMAGES_MAX``.
    """
    count = DEFAULT_CALIB_IMAGES if calib_images is None else calib_images
    limits.check_count(count, "--calib-images", limits.IMAGES_MAX)
    return {"target": get_target(target or DEFAULT_TARGET), "settings": CalibrationSettings(method or DEFAULT_METHOD, percentile),
            "calib": calib or DEFAULT_CALIB, "count": count, "cache": Path(calib_cache) if calib_cache is not None else None}


def make_int8(ctx: Context, *, target: Int8Target, settings: CalibrationSettings, calib: str, count: int,
              cache: Path | None, seed: int) -> tuple[str, Path, dict[str, Any], list[Path]]:
    """Build, judge and write the INT8 model of ``target``; (variant name, model, summary, files)."""
    started = time.perf_counter()
    ranges_path, calibration = prepare_ranges(ctx, settings, calib=calib, count=count, cache=cache, seed=seed)
    seconds = {"calibrate": time.perf_counter() - started}
    files = [ranges_path]
    if target.trt_cache:
        version = installed_trt_version()
        write_trt_cache(ctx.out_dir / TRT_CACHE_NAME, trt_amax(ranges_path), version)
        files.append(ctx.out_dir / TRT_CACHE_NAME)
        calibration["trt_cache"] = {"path": str(ctx.out_dir / TRT_CACHE_NAME), "header_version": version_number(version)}
    final = ctx.out_dir / target.filename

    def build(kept: Any, dest: Path) -> None:
        quantize_int8(ctx.info.path, dest, target, ranges_path, settings, nodes_to_exclude=[*ctx.always_fp32, *kept],
                      notes=ctx.notes)

    started = time.perf_counter()
    backend = target.judge_backend
    where = "ONNX Runtime (CPU provider)" if backend == "onnxruntime" else backend
    judged = build_and_judge(ctx, build, quantized_layers, final, f"INT8 {target.name} model on {where}", backend)
    seconds["quantize_and_judge"] = time.perf_counter() - started
    name = f"int8.{target.name}"
    summary = {
        "variant": name, "model": str(ctx.info.path), "model_sha256": ctx.info.sha256, "arch": ctx.info.arch,
        "output": str(final), "precision": "int8", "target": target.name, "calibration": calibration,
        "graph": _graph(target, final), "budget_points": ctx.budget, "quantized_layers": judged["layers"],
        "kept_fp32": judged["kept_fp32"], "accuracy": judged["accuracy"], "fallback": judged["fallback"],
        "passed": judged["passed"], "problems": budget_problem(f"INT8 {target.name}", judged, ctx.budget),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    return name, final, summary, [final, *files]
