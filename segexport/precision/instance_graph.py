"""Which nodes of an instance network's graph may run in FP16 or INT8.

Mask R-CNN's graph has two kinds of arithmetic. The feature part (backbone, pyramid, the RPN
head's convs, the box head's FC layers, the mask FCN) is what FP16 and INT8 are for. The
geometry (anchor decoding, clipping, suppression, RoIAlign's coordinates and level choice, the
top-k selections, class scores' softmax and the mask sigmoid) compares and ranks values, where
a rounding moves a box across a threshold or swaps two detections. It stays FP32.

The feature part is found from the graph itself, without names: every Conv, ConvTranspose,
Gemm and MatMul belongs to it, and so does an elementwise or layout operator (``Relu``,
``Add``, ``MaxPool``, ``Reshape``...) all of whose float inputs come from the feature part or
are weights. Everything else, and everything reached only through it, is geometry.
"""

from __future__ import annotations

import onnx

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
FEATURE_READ = ""  # stands for RoIAlign's feature input among a tensor's readers (node names are never empty)
LAYOUT = ("Reshape", "Flatten", "Transpose", "Concat")  # with Add: what may sit between a last layer and the geometry
FOLLOWERS = ("Relu", "Add", "MaxPool", "Resize", "Reshape", "Flatten", "Transpose", "ReduceMax", "Concat", "Max")


def _float_inputs(node: onnx.NodeProto, types: dict[str, int]) -> list[str]:
    return [name for name in node.input if name and types.get(name) == onnx.TensorProto.FLOAT]


def feature_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes of the feature part (see the module docstring), in a graph whose
    nodes are all named and topologically sorted (as the exporter writes them)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in
             (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)}
    weights = {i.name for i in model.graph.initializer}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    feature_tensors: set[str] = set()
    found: set[str] = set()
    for node in model.graph.node:
        if node.op_type in WEIGHTED:
            ok = True
        elif node.op_type in FOLLOWERS:
            data = [name for name in _float_inputs(node, types) if name not in weights]
            ok = bool(data) and all(name in feature_tensors for name in data)
        else:
            ok = False
        if ok:
            found.add(node.name)
            feature_tensors.update(node.output)
    return found


def head_outputs(model: onnx.ModelProto, features: set[str]) -> set[str]:
    """Each head's last layer, whose outputs the geometry decodes (RPN objectness and deltas,
    class scores and box deltas, mask logits), with the layout nodes between it and the geometry:
    the weighted, layout and ``Add`` feature nodes all of whose readers are geometry or such
    nodes. RoIAlign reading a tensor as its features (input 0) is a feature reader: pooling
    FP16 or INT8 features is what the pyramid is for."""
    readers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            feature_read = node.op_type == "RoiAlign" and i == 0
            readers.setdefault(name, []).append(FEATURE_READ if feature_read else node.name)
    graph_outputs = {o.name for o in model.graph.output}
    tails: set[str] = set()
    for node in reversed(model.graph.node):  # readers before the nodes they read
        if node.name not in features or node.op_type not in (*WEIGHTED, *LAYOUT, "Add"):
            continue
        read_by = [r for out in node.output for r in readers.get(out, [])]
        if not any(out in graph_outputs for out in node.output) and \
                all(r != FEATURE_READ and (r not in features or r in tails) for r in read_by):
            tails.add(node.name)
    return tails


def geometry_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of every node outside the feature part, and of the heads' last layers whose
    outputs the geometry decodes: kept FP32 in FP16 and INT8 models."""
    features = feature_nodes(model)
    features -= head_outputs(model, features)
    return [n.name for n in model.graph.node if n.name not in features]


def is_instance_graph(model: onnx.ModelProto) -> bool:
    """Whether the graph is one of segexport's instance networks (its metadata says so)."""
    props = {p.key: p.value for p in model.metadata_props}
    return props.get("task") == "instance"
