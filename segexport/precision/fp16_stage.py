"""The FP16 half of the precision stage: the FP16 model, its accuracy on ONNX Runtime, and its
accuracy in true half arithmetic (the PyTorch model in float16 on the CPU), both judged."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import onnx

from segexport.precision.fp16 import (
    FP16_FILENAME,
    convert_fp16,
    fp16_layers,
    torch_half_parity,
)
from segexport.precision.onnx_model import ModelInfo
from segexport.precision.stage import Context, budget_problem, build_and_judge

ORT_LABEL = "FP16 model on ONNX Runtime (CPU provider: FP16 tensors, most kernels compute in FP32)"


def torch_reference(info: ModelInfo) -> tuple[Any, str | None]:
    """The PyTorch model the ONNX file was exported from, or (None, why not).

    Only a segexport checkpoint folder can be found again: its path and SHA-256 are in the
    ONNX metadata (``source``, ``source_sha256``); a changed checkpoint is not used.
    """
    from segexport.checkpoint import WEIGHTS, load_checkpoint
    from segexport.hashing import file_sha256

    source = info.metadata.get("source", "")
    if not source.startswith("checkpoint:"):
        origin = source or "no source recorded"
        return None, f"it needs the PyTorch model, and {info.path.name} was not exported from a checkpoint folder ({origin})"
    folder = Path(source.split(":", 1)[1])
    weights = folder / WEIGHTS
    if not weights.is_file() or file_sha256(weights) != info.metadata.get("source_sha256"):
        return None, f"the checkpoint {folder} the model was exported from is missing or has changed"
    model, _ = load_checkpoint(folder)
    return model, None


def _true_half(ctx: Context) -> dict[str, Any] | None:
    if ctx.instances is not None:
        ctx.notes.append("FP16 in true half arithmetic is not measured for instance networks yet")
        return None
    if ctx.val is None:
        return None
    model, reason = torch_reference(ctx.info)
    if model is None:
        ctx.notes.append(f"FP16 parity in true half arithmetic not measured: {reason}")
        return None
    return torch_half_parity(model, ctx.val.normalised(0, len(ctx.val)), ctx.val.masks, ctx.val.classes)


def fp16_graph_facts(path: Path) -> dict[str, Any]:
    """Input/output and initializer element types of the written FP16 model."""
    model = onnx.load(str(path))

    def name(t: int) -> str:
        return onnx.TensorProto.DataType.Name(t).lower()

    return {
        "inputs": {i.name: name(i.type.tensor_type.elem_type) for i in model.graph.input},
        "outputs": {o.name: name(o.type.tensor_type.elem_type) for o in model.graph.output},
        "initializer_types": dict(sorted(Counter(name(i.data_type) for i in model.graph.initializer).items())),
    }


def make_fp16(ctx: Context, *, true_half: bool = True) -> tuple[str, Path, dict[str, Any], list[Path]]:
    """Build, judge and write ``model.fp16.onnx``; (variant name, model, summary, files).

    Args:
        true_half: also measure the PyTorch model in float16 (emulated on most CPUs, so minutes
            at paper size); latency-only builds turn it off.
    """
    final = ctx.out_dir / FP16_FILENAME
    conversion: dict[str, Any] = {}

    def build(kept: Any, dest: Path) -> None:
        conversion.update(convert_fp16(ctx.info.path, dest, nodes_kept=[*ctx.always_fp32, *kept]))

    started = time.perf_counter()
    judged = build_and_judge(ctx, build, lambda _: fp16_layers(ctx.info.path), final, ORT_LABEL)
    seconds = {"convert_and_judge": time.perf_counter() - started}
    started = time.perf_counter()
    half = _true_half(ctx) if true_half else None
    seconds["true_half"] = time.perf_counter() - started
    problems = budget_problem("FP16 (ONNX Runtime)", judged, ctx.budget)
    passed = judged["passed"]
    if half is not None and half["drop_points"] > ctx.budget:
        passed = False
        problems.append(f"FP16 in true half arithmetic ({half['dtype']}, PyTorch on the CPU): mIoU drop "
                        f"{half['drop_points']:.3f} points > budget {ctx.budget}")
    summary = {
        "variant": "fp16", "model": str(ctx.info.path), "model_sha256": ctx.info.sha256, "arch": ctx.info.arch,
        "output": str(final), "precision": "fp16", "conversion": conversion, "graph": fp16_graph_facts(final),
        "budget_points": ctx.budget, "fp16_layers": judged["layers"], "kept_fp32": judged["kept_fp32"],
        "accuracy": judged["accuracy"], "true_half": half, "fallback": judged["fallback"],
        "passed": passed, "problems": problems, "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    return "fp16", final, summary, [final]
