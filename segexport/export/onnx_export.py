"""PyTorch -> ONNX: the dynamo exporter, then checker, shape inference, onnx-simplifier,
an IR version ONNX Runtime loads, and metadata props.

The default opset is 18: it is the opset torch's dynamo exporter implements natively (its
torchlib), so no version converter runs, and both ONNX Runtime 1.31 and TensorRT 10's ONNX
parser (opsets 9 to 20 in 10.0, more in later 10.x) accept it. Opsets below 18 are refused: the
exporter cannot convert these graphs down and silently keeps 18.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from segexport.errors import CheckFailed, ConfigError
from segexport.export.detection_onnx import translation_table
from segexport.export.metadata import set_metadata
from segexport.fsutil import atomic_path

DEFAULT_OPSET = 18
MIN_OPSET = 18  # torchlib's opset; lower ones are not produced (see the module docstring)
MAX_OPSET = 23  # the newest opset torch 2.13 exports and ONNX Runtime 1.31 runs
ORT_MAX_IR_VERSION = 13  # ONNX Runtime 1.31 refuses IR 14, which ONNX 1.23 writes by default
OUTPUT_NAMES = {"logits": ("logits",), "labels": ("labels",), "both": ("logits", "labels")}
OUTPUT_MODES = tuple(OUTPUT_NAMES)
INPUT_NAME = "images"
MAX_BATCH = 4096
MAX_SIDE = 16384  # largest height/width a dynamic-size graph promises to handle

# Loggers that print exporter chatter (e.g. "torchvision is not installed. Skipping
# torchvision::nms", "Attribute type is ambiguous...") on every export; errors still show.
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir")


class ExportHead(nn.Module):
    """The module that is exported: ``model`` plus, on request, an in-graph argmax.

    Args:
        model: returns logits ``[N, C, H, W]``.
        output: "logits" (logits only), "labels" (int32 argmax ``[N, H, W]`` only) or
            "both" (``(logits, labels)``).
    """

    def __init__(self, model: nn.Module, output: str = "logits") -> None:
        super().__init__()
        if output not in OUTPUT_MODES:
            raise ConfigError(f"output must be one of {', '.join(OUTPUT_MODES)}, got {output!r}")
        self.instance = getattr(model, "task", "semantic") == "instance"
        if self.instance and output != "logits":
            raise ConfigError(f"--output {output} is for semantic networks; an instance network exports "
                              f"{', '.join(model.output_names)}")
        self.model = model
        self.output = output

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.instance:  # padded detections (segexport.models.instance_shell)
            return self.model(images)
        logits = self.model(images)
        if self.output == "logits":
            return logits
        labels = logits.argmax(1).to(torch.int32)  # int32: what TensorRT and Triton handle natively
        return labels if self.output == "labels" else (logits, labels)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self.model.output_names) if self.instance else OUTPUT_NAMES[self.output]


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ONNX file.
        opset, ir_version: of the written file.
        outputs: output names in graph order.
        nodes_exported: node count straight from the exporter.
        nodes_final: node count after checker, shape inference and simplification.
        op_counts: operator type -> count in the written graph.
        simplified: whether onnx-simplifier ran.
        seconds: wall time of the whole export.
    """

    path: Path
    opset: int
    ir_version: int
    outputs: tuple[str, ...]
    nodes_exported: int
    nodes_final: int
    op_counts: dict[str, int] = field(default_factory=dict)
    simplified: bool = True
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "opset": self.opset,
            "ir_version": self.ir_version,
            "outputs": list(self.outputs),
            "nodes_exported": self.nodes_exported,
            "nodes_final": self.nodes_final,
            "op_counts": dict(self.op_counts),
            "simplified": self.simplified,
            "seconds": round(self.seconds, 2),
        }


def check_export_options(opset: int, output: str) -> None:
    """Raises:
    ConfigError: an opset outside [MIN_OPSET, MAX_OPSET] or an unknown output mode.
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(
            f"opset {opset} is not supported; use {MIN_OPSET} to {MAX_OPSET} "
            f"(torch's dynamo exporter cannot produce opsets below {MIN_OPSET})"
        )
    if output not in OUTPUT_MODES:
        raise ConfigError(f"output must be one of {', '.join(OUTPUT_MODES)}, got {output!r}")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # torch's pytree internals raise FutureWarnings about their own API on every export.
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _dynamic_shapes(dynamic_batch: bool, dynamic_hw: bool, divisor: int) -> dict[str, dict[int, Any]] | None:
    """torch.export's spec for the ``images`` input; sides as multiples of ``divisor``."""
    from torch.export import Dim

    axes: dict[int, Any] = {}
    if dynamic_batch:
        axes[0] = Dim("batch", min=1, max=MAX_BATCH)
    if dynamic_hw:
        # Declaring sides as divisor * k tells the exporter what the model needs; a free side
        # would make every stride-2 layer a rounding guard and fail the export.
        axes[2] = divisor * Dim("h", min=1, max=MAX_SIDE // divisor)
        axes[3] = divisor * Dim("w", min=1, max=MAX_SIDE // divisor)
    return {INPUT_NAME: axes} if axes else None


def _rename_dims(proto: onnx.ModelProto, names: Mapping[str, str]) -> None:
    """Rename symbolic dims (``32*h`` -> ``height``) on graph inputs, outputs and value infos."""
    for value in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]


def _trace(head: ExportHead, input_size: tuple[int, int], opset: int, dynamic_batch: bool, dynamic_hw: bool) -> onnx.ModelProto:
    """Run torch.onnx.export (dynamo) and return the ModelProto (weights included)."""
    divisor = int(getattr(head.model, "input_divisor", 1))
    # Batch 2 when the batch is dynamic: torch.export specialises dimensions of size 1.
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2 if dynamic_batch else 1, 3, *input_size, generator=gen)
    with _quiet_exporter():
        try:
            program = torch.onnx.export(
                head, (example,), None, dynamo=True, opset_version=opset, verbose=False,
                input_names=[INPUT_NAME], output_names=list(head.output_names),
                dynamic_shapes=_dynamic_shapes(dynamic_batch, dynamic_hw, divisor),
                custom_translation_table=translation_table(),
            )
        except torch.onnx.errors.OnnxExporterError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckFailed(f"torch.onnx.export failed: {first}") from exc
    proto = program.model_proto
    if dynamic_hw:
        prefix = f"{divisor}*" if divisor > 1 else ""
        _rename_dims(proto, {f"{prefix}h": "height", f"{prefix}w": "width"})
    return proto


def _default_opset(proto: onnx.ModelProto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _checked(proto: onnx.ModelProto, stage: str) -> onnx.ModelProto:
    """``proto`` after the full ONNX checker and strict shape inference, or CheckFailed."""
    try:
        onnx.checker.check_model(proto, full_check=True)
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise CheckFailed(f"the {stage} graph fails the ONNX checker: {str(exc).splitlines()[0]}") from exc


def tidy_graph(proto: onnx.ModelProto, *, simplify: bool = True) -> onnx.ModelProto:
    """onnx checker, strict shape inference and (optionally) onnx-simplifier, checked again.

    Raises:
        CheckFailed: the graph fails the checker or shape inference, or the simplifier fails.
    """
    import onnxsim

    proto = _checked(proto, "exported")
    if not simplify:
        return proto
    try:
        # check_n=0: the simplified graph is verified against PyTorch right after export.
        simplified, ok = onnxsim.simplify(proto, check_n=0, certify=False)
    except (RuntimeError, ValueError) as exc:
        raise CheckFailed(f"onnx-simplifier failed ({str(exc).splitlines()[0]}); export with --no-simplify") from exc
    if not ok:
        raise CheckFailed("onnx-simplifier produced a graph it could not validate; export with --no-simplify")
    return _checked(simplified, "simplified")


def set_ir_version(proto: onnx.ModelProto) -> int:
    """Set the IR version to the newest ONNX Runtime 1.31 loads, never below what the opsets need.

    Raises:
        ConfigError: the opsets need an IR version newer than ONNX Runtime loads.
    """
    needed = onnx.helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
    if needed > ORT_MAX_IR_VERSION:
        raise ConfigError(f"the graph's opsets need IR version {needed}; ONNX Runtime loads at most {ORT_MAX_IR_VERSION}")
    proto.ir_version = max(needed, min(proto.ir_version, ORT_MAX_IR_VERSION))
    return proto.ir_version


def export_onnx(
    model: nn.Module,
    out_path: str | Path,
    *,
    input_size: tuple[int, int],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    dynamic_hw: bool = False,
    output: str = "logits",
    simplify: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> OnnxExport:
    """Export ``model`` to a checked, simplified ONNX file, written atomically.

    Args:
        model: maps normalised images ``[N, 3, H, W]`` to logits ``[N, C, H, W]`` (eval mode;
            it is not modified). ``model.input_divisor``, when present, constrains dynamic sides.
        out_path: the ONNX file to write.
        input_size: (height, width) of the example input; the static size unless ``dynamic_hw``.
        opset: default-domain opset, ``MIN_OPSET`` to ``MAX_OPSET``.
        dynamic_batch: batch axis dynamic (else fixed at 1).
        dynamic_hw: height and width dynamic (multiples of ``model.input_divisor``). Verify
            the graph at several sizes afterwards: an exporter can bake a size in silently.
        output: "logits", "labels" (int32 argmax ``[N, H, W]``) or "both".
        simplify: run onnx-simplifier.
        metadata: metadata props to store (see :func:`segexport.export.metadata.export_metadata`).

    Returns:
        The path and facts about the written graph.

    Raises:
        ConfigError: an invalid opset or output mode.
        CheckFailed: the exporter, checker or simplifier fails on the model.
    """
    start = time.perf_counter()
    check_export_options(opset, output)
    head = ExportHead(model, output).eval()
    proto = _trace(head, tuple(input_size), opset, dynamic_batch, dynamic_hw)
    nodes_exported = len(proto.graph.node)
    if _default_opset(proto) != opset:
        raise CheckFailed(f"asked for opset {opset} but the exporter wrote {_default_opset(proto)}")
    proto = tidy_graph(proto, simplify=simplify)
    ir_version = set_ir_version(proto)
    set_metadata(proto, dict(metadata or {}))
    with atomic_path(out_path) as tmp:
        onnx.save_model(proto, str(tmp))
    return OnnxExport(
        path=Path(out_path),
        opset=opset,
        ir_version=ir_version,
        outputs=head.output_names,
        nodes_exported=nodes_exported,
        nodes_final=len(proto.graph.node),
        op_counts=dict(sorted(Counter(n.op_type for n in proto.graph.node).items())),
        simplified=simplify,
        seconds=time.perf_counter() - start,
    )
