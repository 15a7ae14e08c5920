"""What the precision stage needs to know about an FP32 ONNX model, read and checked once.

A segexport model (written by ``segexport export``) carries its preprocessing and class names
as metadata props; a plain ONNX model is accepted when it has one float image input
``[N, 3, H, W]`` with a fixed height and width, and is fed with ImageNet's mean and std.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from segexport.data import Preprocess
from segexport.errors import InputError
from segexport.hashing import file_sha256
from segexport.onnx_graph import load_onnx_graph

_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "DynamicQuantizeLinear")
_FIX = "quantize an FP32 model written by `segexport export`, or one with a single float input [N, 3, H, W]"


@dataclass(frozen=True)
class ModelInfo:
    """An FP32 image-segmentation ONNX model, as the precision stage sees it.

    Attributes:
        path: the file.
        sha256: of the file (identifies it in calibration caches).
        input_name: the one graph input.
        batch: the input's fixed batch size, or None when dynamic.
        preprocess: size (the input's height and width), mean, std and resize mode.
        classes: class names (``class_i`` when only the count is known), or None when unknown.
        arch: the architecture for a segexport model, else None.
        metadata: the metadata props (segexport's; empty for a plain model).
        notes: what was assumed (e.g. ImageNet mean/std for a plain model).
    """

    path: Path
    sha256: str
    input_name: str
    batch: int | None
    preprocess: Preprocess
    classes: tuple[str, ...] | None
    arch: str | None
    metadata: dict[str, str]
    notes: list[str] = field(default_factory=list)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.preprocess.size


def _load(path: Path) -> onnx.ModelProto:
    return load_onnx_graph(path, missing_fix="pass the model.onnx written by `segexport export`", invalid_fix=_FIX)


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


def _image_input(path: Path, model: onnx.ModelProto) -> tuple[str, list[int | str]]:
    """The one float ``[N, 3, H, W]`` input, or InputError."""
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise InputError(f"{path}: the model has {len(inputs)} inputs ({names}), expected one image input; {_FIX}")
    value = inputs[0]
    dims = _dims(value)
    if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT or len(dims) != 4 or dims[1] != 3:
        kind = onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type).lower()
        raise InputError(f"{path}: input {value.name!r} is {kind} of shape {dims}, expected float32 [N, 3, H, W]; {_FIX}")
    return value.name, dims


def _input_size(path: Path, dims: list[int | str], metadata: dict[str, str]) -> tuple[int, int]:
    if "input_size" in metadata:
        h, w = json.loads(metadata["input_size"])
        return int(h), int(w)
    if isinstance(dims[2], int) and isinstance(dims[3], int) and dims[2] > 0 and dims[3] > 0:
        return dims[2], dims[3]
    raise InputError(
        f"{path}: the input's height and width are dynamic and the model carries no segexport metadata; "
        "export it with a fixed size (or with `segexport export`)"
    )


def _classes(model: onnx.ModelProto, metadata: dict[str, str]) -> tuple[str, ...] | None:
    if "classes" in metadata:
        return tuple(json.loads(metadata["classes"]))
    for out in model.graph.output:
        dims = _dims(out)
        if len(dims) == 4 and isinstance(dims[1], int) and dims[1] > 0:
            return tuple(f"class_{i}" for i in range(dims[1]))
    return None


def read_model_info(path: str | Path) -> ModelInfo:
    """Read and check an FP32 segmentation model for quantization.

    Raises:
        InputError: missing or not ONNX, not exactly one float ``[N, 3, H, W]`` input, dynamic
            height/width without segexport metadata, or a model that is already quantized.
    """
    p = Path(path)
    model = _load(p)
    name, dims = _image_input(p, model)
    quantized = sorted({n.op_type for n in model.graph.node if n.op_type in _QDQ_OPS})
    if quantized:
        raise InputError(f"{p}: already quantized ({', '.join(quantized)} nodes); pass the FP32 model.onnx")
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    segexport_model = "arch" in metadata and "mean" in metadata
    notes = [] if segexport_model else [f"{p.name} has no segexport metadata: images are fed with ImageNet mean/std"]
    preprocess = Preprocess(size=_input_size(p, dims, metadata))
    if segexport_model:
        preprocess = Preprocess(
            size=preprocess.size, mean=json.loads(metadata["mean"]), std=json.loads(metadata["std"]),
            resize=metadata.get("resize", "resize"),
        )
    return ModelInfo(
        path=p, sha256=file_sha256(p), input_name=name, batch=dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None,
        preprocess=preprocess, classes=_classes(model, metadata), arch=metadata.get("arch") if segexport_model else None,
        metadata=metadata if segexport_model else {}, notes=notes,
    )
