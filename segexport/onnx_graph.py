"""Reading ONNX files without their weights: the graph, its metadata and its precision.

Bottom layer: every stage that looks at an ONNX file (export, precision, engines, runners,
verify) reads it through here, so "what precision is this graph" has one answer.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from segexport.errors import InputError

# Nodes that make a graph INT8: explicit Q/DQ (TensorRT, OpenVINO) or fused QLinear kernels (CPU).
INT8_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
                      "ConvInteger", "MatMulInteger"})


def load_onnx_graph(path: str | Path, *, missing_fix: str = "", invalid_fix: str = "") -> onnx.ModelProto:
    """An ONNX file's graph and metadata, without loading external weight data.

    Args:
        missing_fix, invalid_fix: what to do, appended to the error for a missing file / a
            file that is not ONNX (``"; ..."``); nothing by default.

    Raises:
        InputError: the file is missing or not an ONNX model.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: ONNX file not found{'; ' + missing_fix if missing_fix else ''}")
    try:
        return onnx.load(str(p), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError) as exc:  # which one depends on the damage
        tail = f"; {invalid_fix}" if invalid_fix else ""
        raise InputError(f"{p}: not an ONNX model ({type(exc).__name__}){tail}") from exc


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata props of an ONNX file, without loading its weights.

    Raises:
        InputError: the file is missing or not an ONNX model.
    """
    return {prop.key: prop.value for prop in load_onnx_graph(path).metadata_props}


def model_precision(model: onnx.ModelProto) -> str:
    """``int8`` for a quantized graph (Q/DQ or QLinear nodes), ``fp16`` for FP16 weights, else ``fp32``."""
    if any(node.op_type in INT8_OPS for node in model.graph.node):
        return "int8"
    if any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer):
        return "fp16"
    return "fp32"


def graph_precision(path: str | Path) -> str:
    """:func:`model_precision` of the ONNX file at ``path``.

    Raises:
        InputError: the file is missing or not an ONNX model.
    """
    return model_precision(load_onnx_graph(path))
