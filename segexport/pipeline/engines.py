"""The engine stage of a build: TensorRT engines from the FP16 and INT8 (``tensorrt``) ONNX models.

Where TensorRT cannot run (no CUDA device or no ``tensorrt`` package) the variants are listed
as skipped, with the reason and the ``trtexec`` line that builds the same engine elsewhere.
An engine depends on the TensorRT version and the GPU model, so both are part of its key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segexport.hashing import file_sha256
from segexport.pipeline.cache import package_versions
from segexport.pipeline.options import BuildPlan
from segexport.pipeline.stages import Stages

TIMING_CACHE = "timing.cache"  # tactic timings shared by the engines of a build: faster rebuilds
CHECK_STAGE = "tensorrt-check"


@dataclass(frozen=True)
class EngineWanted:
    """One engine variant: its name, precision, source ONNX and budget key."""

    name: str
    precision: str
    onnx: Path
    budget: str

    @property
    def plan(self) -> Path:
        return self.onnx.with_suffix(".plan")  # as `segexport engine`: model.fp16.onnx -> model.fp16.plan


def wanted_engines(plan: BuildPlan, fp16_onnx: Path | None, int8_onnx: Path | None) -> list[EngineWanted]:
    """The engines this build asks for (none with ``--target cpu``)."""
    if not plan.trt_engines:
        return []
    wanted = []
    if fp16_onnx is not None:
        wanted.append(EngineWanted("trt-fp16", "fp16", fp16_onnx, "fp16"))
    if int8_onnx is not None:
        wanted.append(EngineWanted("trt-int8", "int8", int8_onnx, "int8.tensorrt"))
    return wanted


def _variant(plan: BuildPlan, engine: EngineWanted, *, skipped: str | None, details: dict[str, Any]) -> Any:
    from segexport.verify.manifest import VariantSpec

    artifact = None if skipped else engine.plan.relative_to(plan.build_dir).as_posix()
    return VariantSpec(name=engine.name, backend="tensorrt", precision=engine.precision, target="tensorrt",
                       artifact=artifact, budget_pts=plan.budgets[engine.budget], skipped=skipped, details=details)


def tensorrt_checks(stages: Stages, sources: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """The static TensorRT-compatibility check (no GPU needed) of each ONNX model, by variant name:
    ``ok``, ``summary`` (one line) and ``counts`` per severity. Cached like a stage."""
    if not sources:
        return {}
    inputs = {"models": {name: file_sha256(path) for name, path in sources.items()},
              "versions": package_versions(("segexport", "onnx"))}

    def work() -> tuple[list[Path], dict[str, Any]]:
        from segexport.export.trt_check import check_tensorrt_compat

        checks = {}
        for name, path in sources.items():
            report = check_tensorrt_compat(path)
            checks[name] = {"ok": report.ok, "summary": report.summary(), "counts": report.counts()}
        return [], {"checks": checks}

    describe = f"static TensorRT-compatibility check of {len(sources)} model(s)"
    record = stages.run(CHECK_STAGE, inputs, work, describe=describe)
    for check in record.info["checks"].values():
        stages.log(f"{CHECK_STAGE}: {check['summary']}")
    return record.info["checks"]


def engine_variants(stages: Stages, plan: BuildPlan, wanted: list[EngineWanted], input_size: tuple[int, int],
                    checks: dict[str, dict[str, Any]]) -> list[Any]:
    """Build (or reuse) each wanted engine; skipped variants where TensorRT cannot run here."""
    from segexport.engine import (
        build_engine,
        engine_unavailable_reason,
        trtexec_command,
    )

    if not wanted:
        return []
    reason = engine_unavailable_reason()
    variants = []
    for engine in wanted:
        details = {"trtexec": trtexec_command(engine.onnx, engine.plan, size=input_size)}
        if engine.name in checks:
            details["tensorrt_check"] = checks[engine.name]["summary"]
        if reason is not None:
            stages.skip(engine.name, reason)
            variants.append(_variant(plan, engine, skipped=reason, details=details))
            continue
        from segexport.engine.availability import current_gpu

        inputs = {"onnx_sha256": file_sha256(engine.onnx), "gpu": current_gpu(),
                  "versions": package_versions(("segexport", "tensorrt"))}

        def work(engine: EngineWanted = engine) -> tuple[list[Path], dict[str, Any]]:
            out = build_engine(engine.onnx, engine.plan, timing_cache=plan.build_dir / TIMING_CACHE)
            return [out, out.with_suffix(".json")], {}

        stages.run(engine.name, inputs, work, describe=f"building the TensorRT engine {engine.plan.name}")
        variants.append(_variant(plan, engine, skipped=None, details=details))
    return variants

