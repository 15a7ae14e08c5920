"""The precision stage: an FP32 ONNX model in, an INT8 or FP16 model out, judged against a budget.

``quantize_model`` reads and checks the model, loads the val data, builds the variant
(INT8 from calibrated ranges, see ``precision.int8``; FP16, see ``precision.fp16``), measures
its mIoU against the FP32 model on the same images with ONNX Runtime, runs the sensitivity
pass when the drop breaks the budget, and writes the model, the calibration files and the
variant's entry in ``quantize.json``. A broken budget raises CheckFailed after everything is
written. Everything here is deterministic: the same inputs give bitwise-identical models.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segexport import limits
from segexport.errors import CheckFailed, ConfigError
from segexport.precision.evaluate import (
    DEFAULT_VAL,
    Prediction,
    ValData,
    load_val,
    logit_error,
    predict,
    score,
)
from segexport.precision.onnx_model import ModelInfo, read_model_info
from segexport.precision.sensitivity import (
    SENSITIVITY_IMAGES,
    default_max_fallback,
    keep_until_budget,
    rank_layers,
)
from segexport.precision.summary import write_summary
from segexport.precision.targets import DEFAULT_TARGET, get_target
from segexport.recipe import Recipe, load_recipe

PRECISIONS = ("int8", "fp16")
REFERENCE_LABEL = "FP32 ONNX model on ONNX Runtime (CPU provider)"

Build = Callable[[Sequence[str], Path], None]


@dataclass
class QuantizeResult:
    """What :func:`quantize_model` wrote: the model, the summary file and this variant's summary."""

    model_path: Path
    summary_path: Path
    summary: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Context:
    """What every variant's build and judgement share."""

    info: ModelInfo
    out_dir: Path
    tmp: Path
    val: ValData | None
    reference: Prediction | None
    reference_miou: float | None
    budget: float
    max_fallback: int | None
    progress: bool
    notes: list[str] = field(default_factory=list)
    # An instance network's graph (precision.instance_judge): its val data and FP32 AP, and the
    # geometry nodes every variant keeps FP32.
    instances: Any = None
    instance_reference: dict[str, Any] | None = None
    always_fp32: list[str] = field(default_factory=list)


def resolve_budget(info: ModelInfo, precision: str, target: str | None, budget: float | None) -> float:
    """``budget``, or the recipe's for the model's architecture (defaults for a plain model).

    Raises:
        ConfigError: a negative budget.
    """
    if budget is None:
        recipe = load_recipe(info.arch) if info.arch else Recipe(arch="onnx")
        budget = recipe.budget_fp16 if precision == "fp16" else getattr(
            recipe, get_target(target or DEFAULT_TARGET).budget_key)
    if not np.isfinite(budget) or budget < 0:
        raise ConfigError(f"--budget must be a number of mIoU points >= 0, got {budget}")
    return float(budget)


def _load_val(info: ModelInfo, spec: str | None, count: int | None, seed: int, notes: list[str]) -> ValData | None:
    """The val data, or None (with a note) when the default data cannot judge this model."""
    if count is not None and count < 1:
        raise ConfigError(f"--val-images must be at least 1, got {count}")
    classes = len(info.classes) if info.classes else None
    if spec is None:
        from segexport.data import SYNTHETIC_CLASSES

        if classes != len(SYNTHETIC_CLASSES):
            notes.append(f"accuracy not measured: the model predicts {classes or 'an unknown number of'} classes, "
                         f"the built-in val data has {len(SYNTHETIC_CLASSES)}; pass --val with the model's data")
            return None
    return load_val(spec or DEFAULT_VAL, info.preprocess, count=count, seed=seed, num_classes=classes)


def make_context(info: ModelInfo, out_dir: Path, tmp: Path, *, val: str | None, val_images: int | None, seed: int,
                 budget: float, max_fallback: int | None, progress: bool) -> Context:
    """Load the val data and run the FP32 reference on it."""
    if max_fallback is not None and max_fallback < 0:
        raise ConfigError(f"--max-fallback must be >= 0 (0 turns the sensitivity pass off), got {max_fallback}")
    notes = list(info.notes)
    if info.metadata.get("task") == "instance":
        return _instance_context(info, out_dir, tmp, val=val, val_images=val_images, seed=seed, budget=budget,
                                 progress=progress, notes=notes)
    data = _load_val(info, val, val_images, seed, notes)
    reference = predict(info.path, data, keep_logits=SENSITIVITY_IMAGES) if data is not None else None
    miou = score(reference.labels, data)["miou"] if reference is not None and data is not None else None
    return Context(info, out_dir, tmp, data, reference, miou, budget, max_fallback, progress, notes)


def _instance_context(info: ModelInfo, out_dir: Path, tmp: Path, *, val: str | None, val_images: int | None,
                      seed: int, budget: float, progress: bool, notes: list[str]) -> Context:
    """An instance network's context: AP-judged, geometry always FP32, no sensitivity pass."""
    import onnx

    from segexport.precision.instance_graph import geometry_nodes
    from segexport.precision.instance_judge import instance_metrics, load_instance_val

    data = load_instance_val(val or DEFAULT_VAL, info.preprocess, count=val_images, seed=seed, classes=info.classes)
    notes.append("instance network: its geometry (box decoding, NMS, RoIAlign, top-k, softmax, sigmoid) stays "
                 "FP32; no sensitivity pass")
    geometry = geometry_nodes(onnx.load(str(info.path), load_external_data=False))
    return Context(info, out_dir, tmp, None, None, None, budget, 0, progress, notes, instances=data,
                   instance_reference=instance_metrics(info.path, data), always_fp32=geometry)


def measure(ctx: Context, path: Path, label: str, backend: str = "onnxruntime") -> dict[str, Any] | None:
    """The variant's accuracy on ``backend`` on the val data against the FP32 reference (None without val data)."""
    if ctx.instances is not None and ctx.instance_reference is not None:
        from segexport.precision.instance_judge import measure_instances

        return measure_instances(path, ctx.instances, ctx.instance_reference, label, backend)
    if ctx.val is None or ctx.reference is None or ctx.reference_miou is None:
        return None
    pred = predict(path, ctx.val, keep_logits=SENSITIVITY_IMAGES, backend=backend)
    metrics = score(pred.labels, ctx.val)
    return {
        "val": ctx.val.source, "images": len(ctx.val),
        "reference": {"label": REFERENCE_LABEL, "miou": ctx.reference_miou},
        "variant": {"label": label, **metrics},
        "drop_points": 100.0 * (ctx.reference_miou - metrics["miou"]),
        "agreement": float((pred.labels == ctx.reference.labels).mean()),
        **logit_error(pred, ctx.reference),
    }


def _proxy(path: Path, val: ValData, reference: Prediction, backend: str) -> float:
    """The sensitivity pass's error proxy: mean squared logit error (or argmax disagreement)."""
    pred = predict(path, val, keep_logits=SENSITIVITY_IMAGES, limit=SENSITIVITY_IMAGES, backend=backend)
    if pred.logits is not None and reference.logits is not None:
        diff = pred.logits.astype(np.float64) - reference.logits[: len(pred.logits)]
        return float(np.mean(diff * diff))
    return float((pred.labels != reference.labels[: len(pred.labels)]).mean())


def _fallback(ctx: Context, build: Build, layers: list[dict[str, str]], candidate: Path,
              backend: str) -> dict[str, Any] | None:
    """Run the sensitivity pass; its summary (None when turned off)."""
    limit = default_max_fallback(len(layers)) if ctx.max_fallback is None else ctx.max_fallback
    val, reference, reference_miou = ctx.val, ctx.reference, ctx.reference_miou
    if limit == 0 or val is None or reference is None or reference_miou is None:
        return None

    def proxy_of(kept: Sequence[str]) -> float:
        build(kept, candidate)
        return _proxy(candidate, val, reference, backend)

    def miou_of(kept: Sequence[str]) -> float:
        build(kept, candidate)
        return score(predict(candidate, val, backend=backend).labels, val)["miou"]

    ranking = rank_layers(layers, proxy_of, _proxy(candidate, val, reference, backend), progress=ctx.progress)
    outcome = keep_until_budget(ranking, miou_of, reference_miou=reference_miou, budget=ctx.budget,
                                max_fallback=limit, progress=ctx.progress)
    return {**outcome.to_dict(), "max_fallback": limit, "candidates": len(layers)}


def build_and_judge(ctx: Context, build: Build, layers_of: Callable[[Path], list[dict[str, str]]],
                    final: Path, label: str, backend: str = "onnxruntime") -> dict[str, Any]:
    """Build the variant, judge it on ``backend``, run the sensitivity pass if the budget breaks, write ``final``.

    Returns:
        ``kept_fp32`` (node names), ``accuracy`` (None without val data), ``fallback``,
        ``passed`` (None when not judged) and ``layers`` (candidate count).
    """
    candidate = ctx.tmp / "candidate.onnx"
    build([], candidate)
    layers = layers_of(candidate)
    accuracy = measure(ctx, candidate, label, backend)
    passed = None if accuracy is None else accuracy["drop_points"] <= ctx.budget
    fallback = None if passed in (None, True) else _fallback(ctx, build, layers, candidate, backend)
    if fallback is not None and accuracy is not None:
        fallback["drop_points_before"] = accuracy["drop_points"]  # every candidate layer in low precision
    kept = [entry["name"] for entry in fallback["kept_fp32"]] if fallback and fallback["tried"] else []
    if kept or fallback is not None:  # the pass rebuilt the candidate: build the chosen variant again
        build(kept, final)
    else:  # the judged candidate is the variant (builds are deterministic): no second conversion
        _publish(candidate, final)
    if kept:
        accuracy = measure(ctx, final, label, backend)
        passed = accuracy is not None and accuracy["drop_points"] <= ctx.budget
    return {"kept_fp32": kept, "accuracy": accuracy, "fallback": fallback, "passed": passed, "layers": len(layers)}


def _publish(candidate: Path, final: Path) -> None:
    """Copy ``candidate`` to ``final`` under a temporary name, then rename (``fsutil.atomic_path``)."""
    import shutil

    from segexport.fsutil import atomic_path

    with atomic_path(final) as tmp_path:
        shutil.copyfile(candidate, tmp_path)


def budget_problem(name: str, judged: dict[str, Any], budget: float) -> list[str]:
    """The one-line problem of a broken budget (empty when it holds or was not judged)."""
    if judged["passed"] is not False or judged["accuracy"] is None:
        return []
    kept = len(judged["kept_fp32"])
    tail = f" with {kept} layers kept in FP32" if kept else ""
    limit = (judged["fallback"] or {}).get("max_fallback", 0)
    metric = judged["accuracy"].get("metric", "mIoU")
    # An instance network has no sensitivity pass (precision.instance_judge): no --max-fallback to raise.
    hint = " (no sensitivity pass for instance networks: try another calibration set)" if metric == "AP" \
        else f" (--max-fallback {limit})"
    return [f"{name}: {metric} drop {judged['accuracy']['drop_points']:.3f} points > budget {budget}{tail}{hint}"]


def _claim(out_dir: Path, model: Path, precision: str, target: str | None, force: bool) -> Path:
    """Check up front that the variant's files may be written into ``out_dir`` (see ``ownership``)."""
    from segexport.ownership import claim_outputs, path_source
    from segexport.precision.fp16 import FP16_FILENAME
    from segexport.precision.int8_stage import RANGES_NAME, TRT_CACHE_NAME
    from segexport.precision.summary import SUMMARY_NAME

    if precision == "fp16":
        names = [FP16_FILENAME]
    else:
        spec = get_target(target or "")
        names = [spec.filename, RANGES_NAME] + ([TRT_CACHE_NAME] if spec.trt_cache else [])
    claim_outputs(out_dir, [SUMMARY_NAME], force=force)
    return claim_outputs(out_dir, names, source=path_source("model", model, out_dir), force=force)


def _check_image_memory(info: ModelInfo, val_images: int | None, calib_images: int | None) -> None:
    """Val and calibration images given in numbers the machine cannot hold fail before any work."""
    for count, option in ((val_images, "--val-images"), (calib_images, "--calib-images")):
        if limits.check_count(count, option, limits.IMAGES_MAX) is not None:
            limits.check_decoded_images(count, info.preprocess.size, option)


def quantize_model(model: str | Path, *, precision: str, target: str | None = None, calib: str | None = None,
                   calib_images: int | None = None, method: str | None = None, percentile: float | None = None,
                   calib_cache: str | Path | None = None, budget: float | None = None, max_fallback: int | None = None,
                   val: str | None = None, val_images: int | None = None, out: str | Path | None = None,
                   true_half: bool = True,
                   seed: int = 0, progress: bool = True, force: bool = False) -> QuantizeResult:
    """Make the INT8 (``target`` tensorrt or cpu) or FP16 variant of ``model`` and judge it.

    Args:
        model: an FP32 ONNX file (``segexport export``'s, or a plain one with one image input).
        precision: ``int8`` or ``fp16``.
        target, calib, calib_images, method, percentile, calib_cache: INT8 only (see ``segexport quantize --help``).
        budget: largest mIoU drop in points (default: the recipe's ``budget_int8``, ``budget_int8_cpu`` or ``budget_fp16``);
            for an instance network, the largest mask or box AP drop (:mod:`segexport.precision.instance_judge`).
        max_fallback: most layers the sensitivity pass may keep in FP32 (default a fifth; 0: off).
        val, val_images: validation data spec (default ``synthetic``) and how many images (default all).
        out: output folder (default: the model's folder).
        seed: the calibration sample's and the synthetic data's seed.
        force: write into ``out`` even where it holds files segexport did not write, or another
            model's (see :func:`segexport.ownership.claim_outputs`; nothing is deleted).

    Raises:
        InputError, ConfigError, UnknownNameError: bad model, data or options.
        CheckFailed: the variant breaks its budget (after its files and summary are written).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    limits.check_seed(seed)
    started = time.perf_counter()
    info = read_model_info(model)
    _check_image_memory(info, val_images, calib_images)
    int8_options = {"target": target, "calib": calib, "calib_images": calib_images, "method": method,
                    "percentile": percentile, "calib_cache": calib_cache}
    if precision == "fp16":
        given = [f"--{k.replace('_', '-')}" for k, v in int8_options.items() if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} apply to --int8 only; drop them for --fp16")
    else:
        from segexport.precision.int8_stage import resolve_int8_options

        int8_options = resolve_int8_options(**int8_options)  # option errors before any data is read
    target_name = int8_options["target"].name if precision == "int8" else None
    out_dir = _claim(Path(out) if out is not None else info.path.parent, info.path, precision, target_name, force)
    resolved = resolve_budget(info, precision, target_name, budget)
    with tempfile.TemporaryDirectory(prefix="segexport-quantize-") as tmp:
        ctx = make_context(info, out_dir, Path(tmp), val=val, val_images=val_images, seed=seed, budget=resolved,
                           max_fallback=max_fallback, progress=progress)
        if precision == "fp16":
            from segexport.precision.fp16_stage import make_fp16

            name, path, summary, files = make_fp16(ctx, true_half=true_half)
        else:
            from segexport.precision.int8_stage import make_int8

            name, path, summary, files = make_int8(ctx, **int8_options, seed=seed)
    summary["seconds"]["total"] = round(time.perf_counter() - started, 2)
    summary["notes"] = list(dict.fromkeys(ctx.notes))
    summary_path = write_summary(out_dir, name, summary)
    if summary["problems"]:
        raise CheckFailed(f"{'; '.join(summary['problems'])} (details in {summary_path})")
    return QuantizeResult(path, summary_path, summary, [*files, summary_path], summary["notes"])
