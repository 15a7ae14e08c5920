"""A read-only index over an ONNX graph and its subgraphs: element types, shapes, constants, uses.

The TensorRT-compatibility rules ask questions a bare ``GraphProto`` answers only by scanning:
"is this input an initializer?", "is this output used?", "what rank does this tensor have?".
The index answers them for the main graph and every ``If``/``Loop``/``Scan`` body at once
(tensor names are unique across a model's scopes, so one namespace suffices).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

Dims = tuple[int | None, ...]

_SUBGRAPH_TYPES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and, depth first, every subgraph of its nodes."""
    yield graph
    for node in graph.node:
        for sub in _subgraphs(node):
            yield from iter_graphs(sub)


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of its subgraphs, each node before its own subgraphs' nodes."""
    for node in graph.node:
        yield node
        for sub in _subgraphs(node):
            yield from iter_nodes(sub)


def _type_of(value_info: onnx.ValueInfoProto) -> tuple[int, Dims | None]:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return tensor_type.elem_type, None
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)
    return tensor_type.elem_type, dims


@dataclass
class GraphIndex:
    """What the rules need to know about a model's tensors.

    ``elem_types`` holds ``onnx.TensorProto`` element types (0 = unknown); ``shapes`` holds
    dims with ``None`` for a symbolic or unknown dimension, or ``None`` for an unknown rank.
    """

    elem_types: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, Dims | None] = field(default_factory=dict)
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    constant_nodes: dict[str, onnx.NodeProto] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    graph_inputs: list[str] = field(default_factory=list)
    graph_outputs: list[str] = field(default_factory=list)
    producers: dict[str, onnx.NodeProto] = field(default_factory=dict)

    @classmethod
    def build(cls, model: onnx.ModelProto) -> GraphIndex:
        """Index ``model`` (ideally after shape inference, so intermediate tensors have types)."""
        index = cls()
        top = model.graph
        top_inits = {t.name for t in top.initializer}
        index.graph_inputs = [v.name for v in top.input if v.name not in top_inits]
        index.graph_outputs = [v.name for v in top.output]
        for graph in iter_graphs(top):
            for value_info in (*graph.input, *graph.value_info, *graph.output):
                index.elem_types[value_info.name], index.shapes[value_info.name] = _type_of(value_info)
            for tensor in graph.initializer:
                index.initializers[tensor.name] = tensor
                index.elem_types.setdefault(tensor.name, tensor.data_type)
                index.shapes.setdefault(tensor.name, tuple(tensor.dims))
            # A subgraph's outputs feed its parent node, so they count as used.
            if graph is not top:
                index.used.update(v.name for v in graph.output)
            for node in graph.node:
                index.used.update(name for name in node.input if name)
                index.producers.update((name, node) for name in node.output if name)
                if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                    index.constant_nodes[node.output[0]] = node
        index.used.update(index.graph_outputs)
        return index

    def is_used(self, name: str) -> bool:
        """True when a node, a subgraph or the model's outputs read tensor ``name``."""
        return bool(name) and name in self.used

    def is_constant(self, name: str) -> bool:
        """True for an initializer or the output of a ``Constant`` node (weights, to TensorRT)."""
        return name in self.initializers or name in self.constant_nodes

    def constant_value(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor, or ``None`` when it is not constant (or sparse)."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.constant_nodes.get(name)
        if node is None or not node.attribute:
            return None
        attr = node.attribute[0]
        if attr.name == "sparse_value":
            return None
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, onnx.TensorProto):
            return numpy_helper.to_array(value)
        return np.asarray(value)

    def rank(self, name: str) -> int | None:
        """Rank of tensor ``name``, or ``None`` when inference could not tell."""
        dims = self.shapes.get(name)
        return None if dims is None else len(dims)
