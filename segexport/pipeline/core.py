"""``build``: obtain -> export (rewrites included) -> precision -> engines -> build.json -> verify.

Each stage is a plain function call with explicit inputs and outputs (files in the build
folder), cached by content hash (see :mod:`segexport.pipeline.cache`); verification always
runs. A variant that breaks its budget is still built and listed: verification reports it,
and the CLI turns ``report["pass"] is False`` into exit 1.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segexport.locks import folder_lock
from segexport.ownership import claim_outputs, is_temporary
from segexport.pipeline.cache import (
    STAGES_DIR,
    StageRecord,
    StageStore,
    package_versions,
)
from segexport.pipeline.engines import engine_variants, tensorrt_checks, wanted_engines
from segexport.pipeline.legacy import adopt_earlier_build
from segexport.pipeline.options import BuildPlan, plan_build
from segexport.pipeline.precision import output_files, precision_stage
from segexport.pipeline.reference import (
    REFERENCE_DIR,
    Reference,
    describe_source,
    make_reference,
    read_reference,
    reference_inputs,
)
from segexport.pipeline.stages import Stages

REFERENCE_STAGE, EXPORT_STAGE = "reference", "export"


@dataclass
class _Build:
    """One build in progress: its plan, stages and the notes for the user."""

    plan: BuildPlan
    stages: Stages
    progress: bool
    notes: list[str] = field(default_factory=list)

    def note(self, record: StageRecord) -> None:
        self.notes.extend(n for n in record.info.get("notes", []) if n not in self.notes)


def remove_leftovers(build_dir: Path) -> list[Path]:
    """Delete the temporary files and folders of a killed build (``.NAME.segexport-tmp.*.part``/``.old``,
    see ``fsutil``); they are never artifacts, only what an interrupted rename left behind."""
    found = [p for folder in (build_dir, build_dir / STAGES_DIR) if folder.is_dir()
             for p in folder.iterdir() if is_temporary(p.name) and p.name.endswith((".part", ".old"))]
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


def _obtain(b: _Build) -> Reference:
    def work() -> tuple[list[Path], dict[str, Any]]:
        return make_reference(b.plan, progress=b.progress), {}

    b.stages.run(REFERENCE_STAGE, reference_inputs(b.plan), work, describe=describe_source(b.plan))
    return read_reference(b.plan.build_dir / REFERENCE_DIR)


def _export(b: _Build, reference: Reference) -> tuple[Path, tuple[int, int]]:
    """``model.onnx`` (and ``rewrites.json``) from the reference; (path, export size)."""
    from segexport.export.stage import ONNX_NAME, export_model

    plan = b.plan
    size = tuple(plan.input_size or reference.input_size)
    inputs = {"reference": reference.digest(), "reference_path": str(reference.path), "input_size": list(size),
              "images": plan.export_images, "seed": plan.seed, "versions": package_versions()}

    def work() -> tuple[list[Path], dict[str, Any]]:
        result = export_model(str(reference.path), out=plan.build_dir, input_size=size,  # type: ignore[arg-type]
                              images=plan.export_images, seed=plan.seed)
        return [result.onnx_path, result.rewrites_path], {"notes": result.notes}

    describe = f"rewriting and exporting to ONNX at {size[0]}x{size[1]}, checked on {plan.export_images} images"
    b.note(b.stages.run(EXPORT_STAGE, inputs, work, describe=describe))
    return plan.build_dir / ONNX_NAME, size  # type: ignore[return-value]


def _spec(plan: BuildPlan, name: str, backend: str, precision: str, target: str | None, artifact: Path | str,
          budget: str, details: dict[str, Any] | None = None) -> Any:
    from segexport.verify.manifest import VariantSpec

    relative = Path(artifact).relative_to(plan.build_dir).as_posix()  # build.json paths are relative to the folder
    return VariantSpec(name=name, backend=backend, precision=precision, target=target, artifact=relative,
                       budget_pts=plan.budgets[budget], details=details or {})


def _precision_details(record: StageRecord) -> dict[str, Any]:
    details: dict[str, Any] = {"kept_layers": record.info.get("kept_fp32", [])}
    if record.info.get("calibration"):
        details["calibration"] = record.info["calibration"]
    return details


def _variants(b: _Build, onnx: Path, size: tuple[int, int]) -> list[Any]:
    """Every variant of the plan, made (or reused) in order; TensorRT engines last."""
    plan = b.plan
    variants = [_spec(plan, "onnx", "onnxruntime", "fp32", None, onnx, "fp16")]
    fp16_onnx = int8_onnx = None
    if plan.fp16:
        record = precision_stage(b.stages, plan, onnx, "fp16", None, progress=b.progress)
        b.note(record)
        fp16_onnx = output_files(plan.build_dir, "fp16", None)[0]
        variants.append(_spec(plan, "onnx-fp16", "onnxruntime", "fp16", None, fp16_onnx, "fp16",
                              _precision_details(record)))
        variants.append(_spec(plan, "pytorch-fp16", "torch", "fp16", None, plan.build_dir / REFERENCE_DIR, "fp16",
                              {"arithmetic": "true half: the PyTorch model in torch.float16 on the CPU"}))
    for target in plan.int8_targets:
        record = precision_stage(b.stages, plan, onnx, "int8", target, progress=b.progress)
        b.note(record)
        path = output_files(plan.build_dir, "int8", target)[0]
        int8_onnx = path if target == "tensorrt" else int8_onnx
        variants.append(_spec(plan, f"onnx-int8-{target}", "onnxruntime", "int8", target, path, f"int8.{target}",
                              _precision_details(record)))
    wanted = wanted_engines(plan, fp16_onnx, int8_onnx)
    sources = {"onnx": onnx, **{e.name: e.onnx for e in wanted}} if plan.trt_engines else {}
    checks = tensorrt_checks(b.stages, sources)
    if "onnx" in checks:
        variants[0].details["tensorrt_check"] = checks["onnx"]["summary"]
    return variants + engine_variants(b.stages, plan, wanted, size, checks)


def _manifest(plan: BuildPlan, size: tuple[int, int], variants: list[Any]) -> Path:
    from segexport.verify.manifest import BuildManifest, write_manifest

    manifest = BuildManifest(arch=plan.arch, reference=REFERENCE_DIR, data=plan.data, seed=plan.seed,
                             val_images=plan.val_images, input_size=size, variants=variants,
                             random_init=plan.random_init)
    return write_manifest(plan.build_dir, manifest)


def build(
    arch: str, *, checkpoint: str | Path | None = None, size: str | None = None, backbone: str | None = None,
    input_size: tuple[int, int] | None = None, fp16: bool = False, int8: bool = False, target: str = "both",
    data: str | None = None, calib: str | None = None, calib_images: int | None = None, method: str | None = None,
    budget_fp16: float | None = None, budget_int8: float | None = None, max_fallback: int | None = None,
    out: str | Path | None = None, random_init: bool = False, skip_accuracy: bool = False,
    junit: str | Path | None = None, progress: bool = True, overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None, force: bool = False,
) -> dict[str, Any]:
    """Build every deployment variant of ``arch`` into one folder, verify each, write the report.

    Args:
        arch: a registered architecture (``segexport list``).
        checkpoint: a segexport checkpoint folder or a torchvision/segexport state-dict file
            (default: train on the recipe's data, or ``random_init``).
        size, backbone, input_size, data: recipe overrides (``input_size`` is the export size).
        fp16: also ``onnx-fp16``, ``pytorch-fp16`` (true half arithmetic) and ``trt-fp16``.
        int8: also ``onnx-int8-tensorrt`` / ``onnx-int8-cpu`` (per ``target``) and ``trt-int8``.
        target: INT8 targets and engines: ``both``, ``tensorrt`` or ``cpu`` (no engines).
        calib, calib_images, method, max_fallback: see ``segexport quantize``.
        budget_fp16, budget_int8: largest mIoU drops in points (default: the recipe's; the INT8
            budget applies to both targets).
        out: the build folder (default ``builds/ARCH``).
        random_init: untrained weights (latency work; accuracy is not measured).
        skip_accuracy: latency rows only; the precision stage judges on one image without
            the sensitivity pass.
        junit: also write JUnit XML here (one test case per variant).
        progress: progress bars on a terminal.
        overrides: further recipe values (``epochs``, ``train_images``, ``val_images``,
            ``batch_size``, ``lr``, ``seed``), e.g. for quick builds.
        log: called with one line per stage event (start, cached, done, skipped).
        force: build into ``out`` even when it holds files segexport did not write or another
            architecture's build (nothing is deleted; see :func:`segexport.ownership.claim_outputs`).

    The build folder is locked while the build runs (:func:`segexport.locks.folder_lock`): a
    second build into it is refused naming the first one's process.

    Returns:
        The report (``report.json``) plus ``stages``: each stage's status in this run
        (``ran``, ``cached`` or ``skipped``), and ``build_notes``: warnings from the stages.

    Raises:
        UnknownNameError, ConfigError, InputError, CheckpointError: bad options, data or
            checkpoint (before any work where they can be known up front).
        CheckFailed: the export's ONNX Runtime check fails (a broken precision budget does not
            raise: it is ``report["pass"] is False``).
    """
    plan = plan_build(
        arch, checkpoint=checkpoint, size=size, backbone=backbone, input_size=input_size, fp16=fp16, int8=int8,
        target=target, data=data, calib=calib, calib_images=calib_images, method=method, budget_fp16=budget_fp16,
        budget_int8=budget_int8, max_fallback=max_fallback, out=out, random_init=random_init,
        skip_accuracy=skip_accuracy, junit=junit, overrides=overrides, force=force,
    )
    adopted = adopt_earlier_build(plan.build_dir)
    if adopted and log is not None:
        log(f"ledger: {len(adopted)} files of a build made before segexport kept one entered from its stage records")
    claim_outputs(plan.build_dir, owner=f"the build of {arch}", force=plan.force)  # nothing written if refused
    with folder_lock(plan.build_dir, f"segexport build {arch}") as lock:
        if lock.taken_over and log is not None:
            log(f"lock: took over from {lock.taken_over}, which did not finish")
        return _run(plan, progress, log)


def _run(plan: BuildPlan, progress: bool, log: Callable[[str], None] | None) -> dict[str, Any]:
    """The stages of a claimed, locked build folder, then verification."""
    from segexport.verify.report import verify_build

    b = _Build(plan, Stages(StageStore(plan.build_dir), log), progress)
    remove_leftovers(plan.build_dir)
    reference = _obtain(b)
    onnx, export_size = _export(b, reference)
    variants = _variants(b, onnx, export_size)
    _manifest(plan, export_size, variants)
    report = b.stages.timed("verify", f"{len(variants) + 1} rows (PyTorch reference included)", lambda: verify_build(
        plan.build_dir, skip_accuracy=plan.skip_accuracy, junit=plan.junit, progress=b.progress, force=plan.force))
    b.stages.save_last_run()
    return {**report, "stages": b.stages.as_list(), "build_notes": b.notes}

