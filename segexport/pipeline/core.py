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
from segexport.pipeline.options import BuildOptions, BuildPlan, plan_build
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
from segexport.precision.targets import TARGETS
from segexport.runners.registry import get_backend

REFERENCE_STAGE, EXPORT_STAGE, IMPORT_STAGE = "reference", "export", "import"


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
    from segexport.pipeline.export_stage import ONNX_NAME, export_model

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


def _import(b: _Build) -> tuple[Path, tuple[int, int]]:
    """``model.onnx`` from the user's ONNX file, with segexport's metadata added; (path, size)."""
    from segexport.pipeline.export_stage import ONNX_NAME
    from segexport.pipeline.onnx_source import import_onnx

    src, out = b.plan.onnx_source, b.plan.build_dir / ONNX_NAME

    def work() -> tuple[list[Path], dict[str, Any]]:
        return [import_onnx(src, out)], {}

    describe = f"copying {src.path} with its classes and preprocessing (no PyTorch reference: it is the reference)"
    b.stages.run(IMPORT_STAGE, {"source": src.to_dict(), "versions": package_versions()}, work, describe=describe)
    return out, src.input_size


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


def int8_row(target: str, backend: str) -> str:
    """The verify row of ``target``'s INT8 model on ``backend``: ``openvino-int8`` where the target
    is named after its backend, else ``onnx-int8-cpu``-style (row prefix, precision, target)."""
    row = get_backend(backend).row
    return f"{row}-int8" if target == backend else f"{row}-int8-{target}"


def _int8_variants(b: _Build, onnx: Path) -> tuple[list[Any], Path | None]:
    """The INT8 model of each target, one row per CPU backend that runs it; (rows, tensorrt's model)."""
    plan, variants, trt_onnx = b.plan, [], None
    for target in plan.int8_targets:
        record = precision_stage(b.stages, plan, onnx, "int8", target, progress=b.progress)
        b.note(record)
        path = output_files(plan.build_dir, "int8", target)[0]
        trt_onnx = path if "tensorrt" in TARGETS[target].backends else trt_onnx
        for backend in TARGETS[target].backends:
            if get_backend(backend).device != "gpu":  # engines are their own stage
                variants.append(_spec(plan, int8_row(target, backend), backend, "int8", target, path,
                                      f"int8.{target}", _precision_details(record)))
    return variants, trt_onnx


def _variants(b: _Build, onnx: Path, size: tuple[int, int]) -> list[Any]:
    """Every variant of the plan, made (or reused) in order; TensorRT engines last."""
    plan = b.plan
    # From an ONNX file, its FP32 run on ONNX Runtime is the reference row, not a variant.
    variants = [_spec(plan, get_backend(backend).row, backend, "fp32", None, onnx, "fp16")
                for backend in plan.onnx_backends if not (plan.onnx_source and backend == "onnxruntime")]
    fp16_onnx = None
    if plan.fp16:
        record = precision_stage(b.stages, plan, onnx, "fp16", None, progress=b.progress)
        b.note(record)
        fp16_onnx = output_files(plan.build_dir, "fp16", None)[0]
        variants.append(_spec(plan, "onnx-fp16", "onnxruntime", "fp16", None, fp16_onnx, "fp16",
                              _precision_details(record)))
        if plan.onnx_source is None and plan.task != "instance":  # its detection ops have no CPU half kernels
            variants.append(_spec(plan, "pytorch-fp16", "torch", "fp16", None, plan.build_dir / REFERENCE_DIR,
                                  "fp16", {"arithmetic": "true half: the PyTorch model in torch.float16 on the CPU"}))
    int8_rows, int8_onnx = _int8_variants(b, onnx)
    variants += int8_rows
    wanted = wanted_engines(plan, fp16_onnx, int8_onnx)
    sources = {"onnx": onnx, **{e.name: e.onnx for e in wanted}} if plan.trt_engines else {}
    checks = tensorrt_checks(b.stages, sources)
    if "onnx" in checks and variants and variants[0].name == get_backend("onnxruntime").row:
        variants[0].details["tensorrt_check"] = checks["onnx"]["summary"]
    return variants + engine_variants(b.stages, plan, wanted, size, checks)


def _manifest(plan: BuildPlan, size: tuple[int, int], variants: list[Any]) -> Path:
    from segexport.verify.manifest import BuildManifest, write_manifest

    from_onnx = plan.onnx_source is not None
    manifest = BuildManifest(arch=plan.arch, reference="model.onnx" if from_onnx else REFERENCE_DIR, data=plan.data,
                             seed=plan.seed, val_images=plan.val_images, input_size=size, variants=variants,
                             random_init=plan.random_init, reference_backend="onnxruntime" if from_onnx else "torch",
                             task=plan.task)
    return write_manifest(plan.build_dir, manifest)


def build(options: BuildOptions, *, progress: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build every deployment variant of ``options.arch`` into one folder, verify each, write the report.

    Args:
        options: what to build (see :class:`~segexport.pipeline.options.BuildOptions`); checked
            and resolved against the recipe before any work.
        progress: progress bars on a terminal.
        log: called with one line per stage event (start, cached, done, skipped).

    The build folder is locked while the build runs (:func:`segexport.locks.folder_lock`): a
    second build into it is refused naming the first one's process.

    Returns:
        The report (``report.json``) plus ``stages``: each stage's status in this run
        (``ran``, ``cached`` or ``skipped``), ``build_notes``: warnings from the stages, and
        ``triton``: the models written to ``options.triton_repo`` (None without one).

    Raises:
        UnknownNameError, ConfigError, InputError, CheckpointError: bad options, data or
            checkpoint (before any work where they can be known up front).
        CheckFailed: the export's ONNX Runtime check fails (a broken precision budget does not
            raise: it is ``report["pass"] is False``).
    """
    plan = plan_build(options)
    arch = plan.arch
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
    if plan.onnx_source is not None:
        onnx, export_size = _import(b)
    else:
        onnx, export_size = _export(b, _obtain(b))
    variants = _variants(b, onnx, export_size)
    _manifest(plan, export_size, variants)
    what = "the ONNX Runtime FP32 reference" if plan.onnx_source is not None else "PyTorch reference"
    report = b.stages.timed("verify", f"{len(variants) + 1} rows ({what} included)", lambda: verify_build(
        plan.build_dir, skip_accuracy=plan.skip_accuracy, junit=plan.junit, progress=b.progress, force=plan.force))
    triton = _triton(b, plan, plan.triton_repo) if plan.triton_repo is not None else None
    b.stages.save_last_run()
    return {**report, "stages": b.stages.as_list(), "build_notes": b.notes, "triton": triton}


def _triton(b: _Build, plan: BuildPlan, repo: Path) -> dict[str, Any]:
    """The build's models added to the Triton repository ``repo`` (``segexport triton``'s defaults)."""
    from segexport.deploy.triton import write_triton_repo

    result = b.stages.timed("triton", f"adding the models to the Triton repository {repo}",
                            lambda: write_triton_repo(plan.build_dir, repo, force=plan.force))
    return {"repo": str(result.path), "models": [m.name for m in result.models], "readme": str(result.readme),
            "not_served": result.skipped, "notes": result.notes}

