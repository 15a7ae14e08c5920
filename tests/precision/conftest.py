"""Tiny FP32 ONNX models for the precision tests: the session's trained checkpoints exported at 64x64."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


@pytest.fixture(scope="session")
def deeplab_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    """deeplabv3p (tiny, briefly trained) exported to ONNX at 64x64, dynamic batch."""
    from segexport.pipeline.export_stage import export_model

    return export_model(str(tiny_checkpoint), out=tmp_path_factory.mktemp("onnx") / "deeplabv3p", images=8).onnx_path


@pytest.fixture(scope="session")
def fcn8s_onnx(tiny_fcn8s_checkpoint, tmp_path_factory) -> Path:
    """fcn8s (tiny, briefly trained) exported to ONNX at 64x64, dynamic batch."""
    from segexport.pipeline.export_stage import export_model

    return export_model(str(tiny_fcn8s_checkpoint), out=tmp_path_factory.mktemp("onnx") / "fcn8s", images=8).onnx_path


def _conv_relu_model(path: Path, *, channels: int = 4, size: int = 16, inputs: int = 1) -> Path:
    """A plain (no segexport metadata) Conv -> Relu model with input ``[N, 3, size, size]``.

    ``inputs=2`` adds a second float input (a model that is not an image model).
    """
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(channels, 3, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(size=channels).astype(np.float32), "b")
    graph_inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])]
    nodes = [helper.make_node("Conv", ["images", "w", "b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["logits"], name="relu")]
    if inputs == 2:
        graph_inputs.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["batch", 4]))
    graph = helper.make_graph(nodes, "conv_relu", graph_inputs,
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", channels, size, size])],
                              initializer=[weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return path


@pytest.fixture
def conv_relu():
    """Factory: ``conv_relu(path, channels=4, size=16, inputs=1)`` writes a plain Conv -> Relu model."""
    return _conv_relu_model
