"""The precision stage of a build: ``model.fp16.onnx`` and the INT8 model of each target.

Each variant is one ``quantize_model`` call into the build folder, cached like every stage.
A variant that breaks its budget is still a result: ``quantize_model`` writes it and raises
CheckFailed, the build keeps it, and verification reports the failure (exit 1 at the end).

The budget is left out of the stage key, because it changes the model only through the
sensitivity pass: a recorded variant is reused under a new budget when the pass did not run
and would not run under the new one either (see :func:`budget_range`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from segexport.errors import CheckFailed
from segexport.hashing import file_sha256
from segexport.pipeline.cache import StageRecord, package_versions, spec_fingerprint
from segexport.pipeline.options import BuildPlan
from segexport.pipeline.stages import Stages
from segexport.precision.targets import TARGETS, get_target
from segexport.runners.registry import get_backend

FP16_STAGE = "fp16"


def int8_stage(target: str) -> str:
    return f"int8-{target}"


def summary_name(precision: str, target: str | None) -> str:
    """The variant's entry in ``quantize.json``."""
    return "fp16" if precision == "fp16" else f"int8.{target}"


def output_files(build_dir: Path, precision: str, target: str | None) -> list[Path]:
    """The files one ``quantize_model`` call writes (``quantize.json`` aside: every variant shares it)."""
    from segexport.precision.fp16 import FP16_FILENAME
    from segexport.precision.int8_stage import RANGES_NAME, TRT_CACHE_NAME

    if precision == "fp16":
        return [build_dir / FP16_FILENAME]
    files = [build_dir / get_target(target or "").filename, build_dir / RANGES_NAME]
    return files + ([build_dir / TRT_CACHE_NAME] if get_target(target or "").trt_cache else [])


def budget_range(summary: dict[str, Any], max_fallback: int | None) -> list[float | None]:
    """The budgets under which ``quantize_model`` would write the same model again: ``[lo, hi]``
    (hi None: no upper limit).

    The budget acts only through the sensitivity pass. When the pass ran, its choice of layers
    depends on the exact budget; when it did not, any budget that would not start it gives the
    same model: one at or above the measured drop, or any at all when the pass is off or there
    was nothing to judge.
    """
    budget = float(summary["budget_points"])
    if summary.get("fallback") is not None:
        return [budget, budget]
    accuracy = summary.get("accuracy")
    if max_fallback == 0 or accuracy is None or accuracy["drop_points"] > budget:
        return [0.0, None]
    return [float(accuracy["drop_points"]), None]


def _budget_fits(record: StageRecord, budget: float) -> bool:
    lo, hi = record.info.get("budget_range", [None, None])
    return lo is not None and lo <= budget and (hi is None or budget <= hi)


def _quantize(plan: BuildPlan, onnx_path: Path, precision: str, target: str | None,
              calib_cache: Path | None, progress: bool) -> dict[str, Any]:
    """One ``quantize_model`` call; its summary, also when the variant breaks its budget.

    Raises:
        CheckFailed: anything but a broken budget (which is reported by verification instead).
    """
    from segexport.precision.stage import quantize_model
    from segexport.precision.summary import read_summaries

    name = summary_name(precision, target)
    final = output_files(plan.build_dir, precision, target)[0]
    started_ns = time.time_ns()  # a file renamed into place after this is this call's (the old one stays until then)
    int8 = {"target": target, "calib": plan.calib, "calib_images": plan.calib_images, "method": plan.method,
            "calib_cache": calib_cache} if precision == "int8" else {}
    max_fallback = 0 if plan.skip_accuracy else plan.max_fallback
    try:
        result = quantize_model(
            onnx_path, precision=precision, budget=plan.budgets[name], max_fallback=max_fallback, val=_val_spec(plan),
            val_images=plan.judge_images, out=plan.build_dir, seed=plan.seed, progress=progress, force=True,
            true_half=not plan.skip_accuracy, **int8,
        )
        return result.summary
    except CheckFailed:
        summary = read_summaries(plan.build_dir).get(name)
        if summary is None or not summary.get("problems") or not _written_since(final, started_ns):
            raise
        return summary


def _written_since(path: Path, started_ns: int) -> bool:
    """Whether ``path`` exists and was renamed into place at or after ``started_ns``."""
    try:
        return path.stat().st_mtime_ns >= started_ns - 1_000_000  # 1 ms: file systems round mtimes
    except OSError:
        return False


def _val_spec(plan: BuildPlan) -> str | None:
    """The val data for ``quantize_model``: None for the built-in data, so that a model with
    other classes (e.g. a torchvision file's 21) is noted as not judged instead of refused."""
    return None if plan.data == "synthetic" else plan.data


def _inputs(plan: BuildPlan, onnx_sha: str, precision: str, target: str | None, ranges_from: str | None) -> dict[str, Any]:
    """The stage key's material: the model, data, calibration and sensitivity options (not the budget)."""
    inputs: dict[str, Any] = {
        "model_sha256": onnx_sha, "precision": precision, "target": target, "val": spec_fingerprint(plan.data),
        "val_images": plan.judge_images, "seed": plan.seed,
        "max_fallback": 0 if plan.skip_accuracy else plan.max_fallback, "versions": package_versions(),
    }
    if precision == "fp16" and plan.skip_accuracy:
        inputs["true_half"] = False  # latency only: the emulated float16 check is not made
    if precision == "int8":
        inputs.update({"calib": spec_fingerprint(plan.calib), "calib_images": plan.calib_images,
                       "method": plan.method})
        judge = get_backend(TARGETS[target or ""].judge_backend)
        if judge.name != "onnxruntime" and judge.version_package:  # it judges, so it decides the sensitivity pass
            inputs["judge"] = package_versions((judge.version_package,))
        # Keyed as before the target registry when reusing the tensorrt stage's ranges, so
        # builds made then are still recognised.
        if ranges_from in (None, "tensorrt"):
            inputs["ranges_from_tensorrt_stage"] = ranges_from is not None
        else:
            inputs["ranges_from"] = ranges_from
    return inputs


def precision_stage(stages: Stages, plan: BuildPlan, onnx_path: Path, precision: str, target: str | None,
                    *, progress: bool) -> StageRecord:
    """Make (or reuse) one precision variant in the build folder.

    Every INT8 target after the build's first reuses the ranges the first one calibrated (one
    calibration serves them all, see ``precision.calibrate``) instead of calibrating again.
    """
    from segexport.precision.int8_stage import RANGES_NAME

    name = summary_name(precision, target)
    first = plan.int8_targets[0] if plan.int8_targets else None
    ranges_from = first if precision == "int8" and target != first else None
    cache = plan.build_dir / RANGES_NAME if ranges_from else None
    inputs = _inputs(plan, file_sha256(onnx_path), precision, target, ranges_from)
    max_fallback = 0 if plan.skip_accuracy else plan.max_fallback

    def work() -> tuple[list[Path], dict[str, Any]]:
        summary = _quantize(plan, onnx_path, precision, target, cache, progress)
        info = {"budget_range": budget_range(summary, max_fallback), "kept_fp32": summary["kept_fp32"],
                "passed": summary["passed"], "notes": summary.get("notes", []), "calibration": _calibration(summary)}
        return output_files(plan.build_dir, precision, target), info

    stage = FP16_STAGE if precision == "fp16" else int8_stage(target or "")
    describe = "converting to FP16" if precision == "fp16" else f"calibrating and quantizing to INT8 for {target}"
    return stages.run(stage, inputs, work, describe=describe,
                      accept=lambda record: _budget_fits(record, plan.budgets[name]))


def _calibration(summary: dict[str, Any]) -> dict[str, Any] | None:
    """Method and image count of an INT8 variant's calibration (None for FP16)."""
    calibration = summary.get("calibration")
    if not calibration:
        return None
    return {"method": calibration["settings"]["method"], "images": calibration["images"]["used"],
            "source": calibration["images"]["source"]}
