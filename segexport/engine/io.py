"""The inputs, outputs and metadata of an ONNX model, read without its weights.

Engines (optimisation profiles), the engine record and the Triton config writer all need the
same facts about a graph: tensor names, element types, dimensions (``-1`` where dynamic) and
the segexport metadata props (classes, mean, std, input size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from segexport.errors import InputError
from segexport.onnx_graph import load_onnx_graph


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output.

    Attributes:
        name: the tensor's name in the graph.
        dtype: numpy-style name (``float32``, ``float16``, ``int32``, ``int64``, ``uint8``, ...).
        shape: dimensions, ``-1`` where dynamic (a named or unknown dimension).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(str(d["name"]), str(d["dtype"]), tuple(int(v) for v in d["shape"]))


@dataclass(frozen=True)
class OnnxIO:
    """What a deployment needs to know about an ONNX model.

    Attributes:
        path: the file.
        inputs, outputs: graph inputs (initialisers excluded) and outputs, in graph order.
        metadata: the metadata props (segexport's: arch, classes, mean, std, input_size, ...).
    """

    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: dict[str, str]

    @property
    def image_input(self) -> TensorSpec:
        """The one ``[N, C, H, W]`` input.

        Raises:
            InputError: the model does not have exactly one 4-D input.
        """
        if len(self.inputs) != 1 or len(self.inputs[0].shape) != 4:
            found = ", ".join(f"{t.name}{list(t.shape)}" for t in self.inputs) or "none"
            raise InputError(f"{self.path}: expected one image input [N, C, H, W], found {found}; "
                             "pass a model written by `segexport export` or `segexport quantize`")
        return self.inputs[0]


def _dtype_name(elem_type: int) -> str:
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name if elem_type else "undefined"


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                 for d in value.type.tensor_type.shape.dim)
    return TensorSpec(value.name, _dtype_name(value.type.tensor_type.elem_type), dims)


def read_onnx_io(path: str | Path) -> OnnxIO:
    """Read the I/O and metadata of an ONNX file (weights are not loaded).

    Raises:
        InputError: the file is missing or not an ONNX model.
    """
    model = load_onnx_graph(path)
    weights = {init.name for init in model.graph.initializer}
    return OnnxIO(
        path=Path(path),
        inputs=tuple(_spec(v) for v in model.graph.input if v.name not in weights),
        outputs=tuple(_spec(v) for v in model.graph.output),
        metadata={prop.key: prop.value for prop in model.metadata_props},
    )
