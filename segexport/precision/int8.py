"""INT8 models in Q/DQ form, made by ``onnxruntime.quantization.quantize_static`` from cached ranges.

The targets (``precision.targets``) include:

- ``tensorrt``: TensorRT's explicit quantization. Signed INT8 activations and per-channel
  weights, both symmetric (zero points 0); Q/DQ on the inputs of Conv, ConvTranspose,
  MatMul and Gemm and on both inputs of Add (a residual add then fuses into the conv before
  it), never on their outputs; pooling gets Q/DQ only when its input is already quantized
  (TensorRT moves Q/DQ across pooling itself). Biases stay float (TensorRT does not take
  INT32 DequantizeLinear), and each consumer gets its own Q/DQ pair (TensorRT cannot share one).
  Concat and Resize stay float: TensorRT would need equal scales on every input.
- ``cpu``: ONNX Runtime's fast path. Unsigned INT8 activations, signed per-channel weights,
  every operator the library quantizes; ONNX Runtime's optimiser fuses the Q/DQ into
  QLinearConv, QLinearAdd, QLinearConcat, ... Weights use the full 8 bits (``reduce_range``
  off): CPUs with VNNI do not saturate; older AVX2-only CPUs may lose accuracy to saturation.
  An instance network's first layers (those reading the image) take 7-bit weights, the
  saturation fix, measured on its AP (``targets.Int8Target.first_layer_7bit``).

Both targets keep in FP32 the max-pools whose output an ``Equal`` compares (the MaxUnpool
rewrite's masks, see :func:`pools_compared_exactly`), and the logits tail: the operators after the last weighted layer (the
resize of the class scores and, for a fitted transposed conv, its border gains and slices).
They cost next to nothing, and quantizing logits to 8 bits flips argmax wherever two classes
are close: on the tiny FCN-32s (entropy calibration, before the sensitivity pass) the cpu
target lost 8.2 mIoU points with its tail in INT8 and 2.8 with it in FP32 (BENCHMARKS.md).
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from segexport.export.metadata import set_metadata
from segexport.fsutil import atomic_path
from segexport.precision.calibrate import (
    CalibrationSettings,
    private_copy,
    quiet_quantization,
)
from segexport.precision.targets import WEIGHTED_OPS, Int8Target

_WEIGHTED = WEIGHTED_OPS
_TOOL_PROPS = ("onnx.infer", "onnx.quant.pre_process")  # markers the library leaves; not the model's


def quantize_int8(model_path: str | Path, out_path: str | Path, target: Int8Target, ranges_path: str | Path,
                  settings: CalibrationSettings, *, nodes_to_exclude: Sequence[str] = (),
                  notes: list[str] | None = None) -> None:
    """Write the INT8 model of ``target`` from the cached ranges at ``ranges_path`` (atomically).

    The same FP32 model, ranges file and excluded nodes give a bitwise-identical file.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    activation = QuantType.QInt8 if target.signed_activations else QuantType.QUInt8
    graph = onnx.load(str(model_path), load_external_data=False)
    tail, pools = logits_tail(graph), pools_compared_exactly(graph) + target_exclusions(target, graph)
    with tempfile.TemporaryDirectory(prefix="segexport-int8-") as tmp, quiet_quantization(notes):
        raw = Path(tmp) / "quantized.onnx"
        quantize_static(
            str(private_copy(model_path, tmp)), str(raw), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(target.op_types) if target.op_types else None, per_channel=True,
            reduce_range=False, activation_type=activation, weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted({*nodes_to_exclude, *tail, *pools}), calibrate_method=settings.ort_method,
            extra_options=quantize_options(target, graph), calibration_cache_path=str(ranges_path),
        )
        model = onnx.load(str(raw))
    _compare_unquantized(model)
    props = {p.key: p.value for p in model.metadata_props if p.key not in _TOOL_PROPS}
    props.update({"precision": "int8", "int8_target": target.name, "calibration_method": settings.method,
                  "kept_fp32": json.dumps(sorted(nodes_to_exclude)), "fp32_logits_tail": json.dumps(tail),
                  "fp32_compared_pools": json.dumps(pools)})
    del model.metadata_props[:]
    set_metadata(model, props)
    with atomic_path(out_path) as tmp_path:
        onnx.save_model(model, str(tmp_path))


def quantize_options(target: Int8Target, model: onnx.ModelProto) -> dict[str, Any]:
    """``quantize_static``'s ``extra_options`` for ``target`` on ``model``: the target's own, plus
    7-bit weights (``reduce_range``) on its first layers when it asks for them for the graph's task."""
    options = dict(target.extra_options)
    task = next((p.value for p in model.metadata_props if p.key == "task"), "semantic")
    if task in target.first_layer_7bit:
        overrides = dict(options.get("TensorQuantOverrides", {}))
        for name in first_layers(model):
            overrides[name] = [{"reduce_range": True}]
        options["TensorQuantOverrides"] = overrides
    return options


def first_layers(model: onnx.ModelProto) -> list[str]:
    """The weight initializers of the weighted layers that no other weighted layer feeds: the
    ones reading the (normalised) image.

    CPUs without VNNI multiply u8 activations by s8 weights in pairs summed into saturating
    16-bit integers (``vpmaddubsw``): 255 x 127 x 2 overflows. Deeper layers rarely get there,
    but the image fills the whole u8 range in every channel, so the first convolution
    saturates; 7-bit weights keep every pair sum under 2^15 for one bit of that layer's
    weights. CPUs with VNNI accumulate in 32 bits and lose nothing but that bit.
    """
    inits = {t.name for t in model.graph.initializer}
    downstream: set[str] = set()  # tensors computed from some weighted layer's output
    found = []
    for node in model.graph.node:  # stored in topological order
        fed = any(name in downstream for name in node.input)
        if node.op_type in _WEIGHTED and not fed and len(node.input) > 1 and node.input[1] in inits:
            found.append(node.input[1])
        if fed or node.op_type in _WEIGHTED:
            downstream.update(o for o in node.output if o)
    return found


def target_exclusions(target: Int8Target, model: onnx.ModelProto) -> list[str]:
    """The nodes ``target`` keeps in FP32 beyond the shared rules (its ``exclude`` hook)."""
    if target.exclude is None:
        return []
    import importlib

    module, _, attr = target.exclude.partition(":")
    return list(getattr(importlib.import_module(module), attr)(model))


def logits_tail(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes from which no weighted layer (Conv, ConvTranspose, MatMul, Gemm) is
    reachable: the operators after the classifier, in graph order."""
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(model.graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    feeds_weights = [False] * len(model.graph.node)
    # Nodes are stored in topological order, so a reverse pass sees every consumer first.
    for index in reversed(range(len(model.graph.node))):
        node = model.graph.node[index]
        feeds_weights[index] = node.op_type in _WEIGHTED or any(
            feeds_weights[c] for out in node.output for c in consumers.get(out, ()))
    return [n.name for n, feeds in zip(model.graph.node, feeds_weights) if not feeds and n.name]


def pools_compared_exactly(model: onnx.ModelProto) -> list[str]:
    """Names of the MaxPool nodes whose output feeds an ``Equal``: the first-max masks of the
    MaxUnpool rewrite (``rewrite/unpool_for_tensorrt``) compare the pooled values with the
    pooling window's inputs, which only works while both sides are the same numbers. Q/DQ on
    the pool's input alone (the TensorRT target's pooling rule) broke every mask of the tiny
    SegNet: 53.8 mIoU points lost. These pools stay FP32."""
    consumers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    return [n.name for n in model.graph.node if n.op_type == "MaxPool" and n.name
            and any("Equal" in consumers.get(out, ()) for out in n.output)]


def _compare_unquantized(model: onnx.ModelProto) -> None:
    """Make every ``Equal`` read the FP32 tensors again where the library routed a
    Q -> DQ pair (inserted for another consumer, e.g. the next conv) into it: an exact
    comparison of a rounded copy with an unrounded one is false almost everywhere."""
    producers = _producers(model)
    for node in model.graph.node:
        if node.op_type != "Equal":
            continue
        for k, name in enumerate(node.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[k] = q.input[0]


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def quantized_layers(path: str | Path) -> list[dict[str, str]]:
    """Nodes of a Q/DQ model that take a dequantized input: the layers that run in INT8.

    Returns:
        ``{"name", "op_type"}`` per layer, in graph order (named nodes only).
    """
    model = onnx.load(str(path))
    producers = _producers(model)
    layers = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or not node.name:
            continue
        if any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in node.input):
            layers.append({"name": node.name, "op_type": node.op_type})
    return layers


def _constant_kind(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> str | None:
    """For a DequantizeLinear of an initializer: ``weights_per_channel``, ``weights_per_tensor``
    or ``biases`` (INT32); None for an activation's DequantizeLinear."""
    value = inits.get(node.input[0])
    if value is None:
        return None
    if value.data_type == onnx.TensorProto.INT32:
        return "biases"
    scale = inits.get(node.input[1])
    per_channel = scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1
    return "weights_per_channel" if per_channel else "weights_per_tensor"


def qdq_facts(path: str | Path) -> dict[str, Any]:
    """What a Q/DQ model contains: Q/DQ counts, the integer types of their zero points, how
    many zero points are not 0, and the dequantized constants (weights per channel or per
    tensor, INT32 biases)."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    types: Counter[str] = Counter()
    nonzero = 0
    constants = Counter({"weights_per_channel": 0, "weights_per_tensor": 0, "biases": 0})
    for node in qdq:
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zp is not None:
            types[onnx.TensorProto.DataType.Name(zp.data_type).lower()] += 1
            nonzero += int(np.count_nonzero(numpy_helper.to_array(zp)) > 0)
        kind = _constant_kind(node, inits) if node.op_type == "DequantizeLinear" else None
        if kind is not None:
            constants[kind] += 1
    ops = Counter(n.op_type for n in model.graph.node)
    return {"quantize_linear": ops["QuantizeLinear"], "dequantize_linear": ops["DequantizeLinear"],
            "zero_point_types": dict(sorted(types.items())), "nonzero_zero_points": nonzero,
            "constants": dict(constants), "op_counts": dict(sorted(ops.items()))}


def optimized_op_counts(path: str | Path) -> dict[str, int]:
    """Operator counts of the graph ONNX Runtime's CPU provider actually runs (all optimisations),
    read back from ``SessionOptions.optimized_model_filepath``."""
    from segexport.runners.onnxruntime_runner import open_session

    with tempfile.TemporaryDirectory(prefix="segexport-opt-") as tmp:
        optimized_path = Path(tmp) / "optimized.onnx"
        open_session(path, threads=1, optimized_model_path=optimized_path)
        optimized = onnx.load(str(optimized_path))
    return dict(sorted(Counter(n.op_type for n in optimized.graph.node).items()))
