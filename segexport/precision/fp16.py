"""FP16 models (``onnxconverter_common.float16``) and FP16 parity measured with true half arithmetic.

The converted graph keeps FP32 inputs and outputs (``keep_io_types``) and casts at the
edges. Operators stay FP32 when FP16 overflows or loses too much in them, or when the
converter cannot type them:

- the converter's own block list (``DEFAULT_OP_BLOCK_LIST``), which holds ``Resize``: its
  ``scales``/``roi`` inputs must stay float32 (so every resize, the logits' included, is FP32);
- reductions and normalisations (``ReduceMean``, ``GlobalAveragePool``, ``Softmax``, ...):
  their sums over whole feature maps overflow FP16's 65504 or lose its 11-bit mantissa.

A tensor passed between two FP32 operators stays FP32: the converter rounds it to FP16 on the
way when it has several readers, and :func:`_drop_round_trips` takes those casts out.

Weights larger than FP16's largest finite value are clamped to it (the converter's default
clamp of 1e4 would change weights FP16 can hold) and counted.

ONNX Runtime's CPU provider has no FP16 kernels for most of these graphs and computes them in
FP32 between casts, so its FP16 accuracy flatters FP16. :func:`torch_half_parity` therefore
also runs the PyTorch model in ``float16`` on the CPU: every tensor between operators is
half, as on a GPU (each kernel accumulates as PyTorch's CPU kernels do). Where an operator has
no CPU half kernel it falls back to ``bfloat16``, and the result says so.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from segexport.export.metadata import set_metadata
from segexport.fsutil import atomic_path
from segexport.metrics import confusion_matrix, metrics_from_confusion

FP16_FILENAME = "model.fp16.onnx"
FP16_MAX = 65504.0
SENSITIVE_OPS = (
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "ReduceProd",
    "GlobalAveragePool", "Softmax", "LogSoftmax", "LayerNormalization", "InstanceNormalization",
)  # fmt: skip
HALF_BATCH = 4
# Operators the converter cannot retype: it marks ConstantOfShape's output float16 but leaves its
# ``value`` attribute float32, which ONNX Runtime refuses (torch's export of F.max_unpool2d
# fills its output with one). They only make constants, so FP32 plus a cast costs nothing.
UNCONVERTIBLE_OPS = ("ConstantOfShape",)


def fp16_op_block_list() -> list[str]:
    """Operator types kept in FP32: the converter's defaults, :data:`SENSITIVE_OPS` and
    :data:`UNCONVERTIBLE_OPS`."""
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST

    return sorted(set(DEFAULT_OP_BLOCK_LIST) | set(SENSITIVE_OPS) | set(UNCONVERTIBLE_OPS))


def convert_fp16(model_path: str | Path, out_path: str | Path, *, nodes_kept: Sequence[str] = ()) -> dict[str, Any]:
    """Write the FP16 model of ``model_path`` to ``out_path`` (atomically).

    Args:
        nodes_kept: further node names to keep in FP32 (the sensitivity pass's choice).

    Returns:
        ``kept_fp32_ops`` (op type -> nodes kept FP32 by type), ``kept_fp32_nodes`` and
        ``clamped_weights`` (initializers with values beyond FP16's range) and
        ``dropped_round_trips`` (FP32 -> FP16 -> FP32 cast pairs removed, see :func:`_drop_round_trips`).
    """
    from onnxconverter_common.float16 import convert_float_to_float16

    model = onnx.load(str(model_path))
    blocked = fp16_op_block_list()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = convert_float_to_float16(
            model, max_finite_val=FP16_MAX, keep_io_types=True, op_block_list=blocked, node_block_list=list(nodes_kept),
        )
    clamped = sum(1 for w in caught if "truncated to" in str(w.message) and str(FP16_MAX) in str(w.message))
    _restore_float_outputs(converted, model, set(blocked), set(nodes_kept))
    round_trips = _drop_round_trips(converted)
    props = {p.key: p.value for p in converted.metadata_props}
    props.update({"precision": "fp16", "kept_fp32": sorted(nodes_kept)})
    set_metadata(converted, props)
    with atomic_path(out_path) as tmp:
        onnx.save_model(converted, str(tmp))
    kept_ops = Counter(n.op_type for n in model.graph.node if n.op_type in blocked)
    return {"kept_fp32_ops": dict(sorted(kept_ops.items())), "kept_fp32_nodes": sorted(nodes_kept), "clamped_weights": clamped,
            "dropped_round_trips": round_trips}


def _restore_float_outputs(
    converted: onnx.ModelProto, original: onnx.ModelProto, blocked_ops: set[str], blocked_nodes: set[str]
) -> None:
    """Give back FP32 to graph outputs the converter left FP16 (in place).

    With ``keep_io_types``, a graph output produced by a blocked node (e.g. the logits' Resize)
    still ends up FP16: the converter casts the node's FP32 result to FP16 after it and drops
    the cast back. That cast is turned into FP32 -> FP32 (the logits are never rounded to
    FP16); an output produced by an FP16 node gets a Cast to FP32 appended.
    """
    was_float = {o.name for o in original.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    producers = {out: node for node in converted.graph.node for out in node.output}
    for output in converted.graph.output:
        if output.name not in was_float or output.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16:
            continue
        node = producers[output.name]
        source = producers.get(node.input[0]) if node.op_type == "Cast" else None
        if source is not None and (source.op_type in blocked_ops or source.name in blocked_nodes):
            node.ClearField("attribute")
            node.attribute.append(onnx.helper.make_attribute("to", onnx.TensorProto.FLOAT))
        else:  # FP16 consumers inside the graph keep reading the FP16 tensor
            half = f"{output.name}_fp16"
            for other in converted.graph.node:
                other.input[:] = [half if name == output.name else name for name in other.input]
            node.output[list(node.output).index(output.name)] = half
            cast = onnx.helper.make_node(
                "Cast", [half], [output.name], to=onnx.TensorProto.FLOAT, name=f"{output.name}_cast_to_fp32"
            )
            converted.graph.node.insert(list(converted.graph.node).index(node) + 1, cast)
        output.type.tensor_type.elem_type = onnx.TensorProto.FLOAT


def _drop_round_trips(converted: onnx.ModelProto) -> int:
    """Remove the FP32 -> FP16 -> FP32 cast pairs the converter puts between two FP32 nodes (in
    place); returns how many readers were rewired.

    When a blocked node's result has several readers, the converter casts it to FP16 and each
    blocked reader casts it back, so the tensor is rounded to FP16 between two FP32 nodes: a
    graph with every node blocked still lost 0.27 box AP points on a tiny Mask R-CNN. Each
    reader of such a second cast now reads the FP32 tensor itself; casts left without readers
    are removed.
    """
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    inferred = onnx.shape_inference.infer_shapes(converted)
    types = {v.name: v.type.tensor_type.elem_type for v in
             (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)}
    types.update({i.name: i.data_type for i in converted.graph.initializer})

    def cast_to(node: onnx.NodeProto) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    producers = {out: node for node in converted.graph.node for out in node.output}
    graph_outputs = {o.name for o in converted.graph.output}
    back_to_float: dict[str, str] = {}  # second cast's output -> the FP32 tensor before the first
    pairs: set[str] = set()  # both casts of every pair: the only nodes this may remove
    for node in converted.graph.node:
        first = producers.get(node.input[0]) if cast_to(node) == float32 else None
        if first is not None and cast_to(first) == float16 and types.get(first.input[0]) == float32 \
                and node.output[0] not in graph_outputs:
            back_to_float[node.output[0]] = first.input[0]
            pairs.update((node.name, first.name))
    rewired = 0
    for node in converted.graph.node:
        for i, name in enumerate(node.input):
            if name in back_to_float:
                node.input[i] = back_to_float[name]
                rewired += 1
    while True:  # the pairs' casts nobody reads any more (the second casts, then first casts left unread)
        read = {name for node in converted.graph.node for name in node.input} | graph_outputs
        dead = [n for n in converted.graph.node if n.name in pairs and n.output[0] not in read]
        if not dead:
            return rewired
        for node in dead:
            converted.graph.node.remove(node)


def fp16_layers(model_path: str | Path) -> list[dict[str, str]]:
    """Named nodes that the conversion turns FP16 (candidates for the sensitivity pass), in graph order."""
    blocked = set(fp16_op_block_list())
    model = onnx.load(str(model_path), load_external_data=False)
    compute = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "Concat", "MaxPool", "AveragePool")
    return [{"name": n.name, "op_type": n.op_type} for n in model.graph.node
            if n.name and n.op_type in compute and n.op_type not in blocked]


def _run(model: torch.nn.Module, images: np.ndarray, dtype: torch.dtype, batch: int) -> np.ndarray:
    """Argmax labels of ``model`` run in ``dtype`` on normalised float32 ``images``."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(images[start : start + batch]).to(dtype)
            out.append(model(x).float().argmax(1).to(torch.uint8).numpy())
    return np.concatenate(out)


def _half_or_bfloat16(model: torch.nn.Module, images: np.ndarray) -> tuple[np.ndarray, str, str | None]:
    """Labels in float16, or in bfloat16 when a CPU half kernel is missing (and which one).
    ``model`` is not modified: each precision runs on a cast copy."""
    try:
        return _run(copy.deepcopy(model).half(), images, torch.float16, HALF_BATCH), "float16", None
    except RuntimeError as exc:  # torch's error for an operator without a CPU Half kernel (a RuntimeError subclass)
        if "Half" not in str(exc):
            raise
        missing = str(exc).splitlines()[0][:160]
    return _run(copy.deepcopy(model).bfloat16(), images, torch.bfloat16, HALF_BATCH), "bfloat16", missing


def torch_half_parity(model: torch.nn.Module, images: np.ndarray, masks: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """mIoU of the PyTorch model in FP32 and in true half arithmetic on the CPU, and the drop.

    Args:
        model: the FP32 PyTorch model (not modified: a copy is cast).
        images: normalised ``float32 [N, 3, H, W]`` val images.
        masks: ``[N, H, W]`` class indices (255 = ignore).
        classes: class names.

    Returns:
        ``label`` (what was measured), ``dtype`` (float16, or bfloat16 as a labelled fallback),
        ``missing_half_kernel``, ``miou_fp32``, ``miou``, ``drop_points`` and ``agreement``.
    """
    model = model.eval()
    reference = _run(model, images, torch.float32, HALF_BATCH)
    labels, dtype, missing = _half_or_bfloat16(model, images)
    miou_fp32 = metrics_from_confusion(confusion_matrix(masks, reference, len(classes))).miou
    miou = metrics_from_confusion(confusion_matrix(masks, labels, len(classes))).miou
    return {
        "label": f"PyTorch {torch.__version__} in {dtype} on the CPU (true half tensors between operators)",
        "dtype": dtype, "missing_half_kernel": missing, "images": len(images),
        "miou_fp32": miou_fp32, "miou": miou, "drop_points": 100.0 * (miou_fp32 - miou),
        "agreement": float((labels == reference).mean()),
    }
