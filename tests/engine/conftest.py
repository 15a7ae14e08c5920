"""ONNX models for the engine tests: a plain tiny one (runs everywhere) and, for the GPU tests,
the FP16 and INT8 (Q/DQ, TensorRT target) variants of the session's tiny deeplabv3p build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def write_conv_model(path: Path, *, batch: int | str = "batch", size: tuple[int | str, int | str] = (16, 16),
                     metadata: dict[str, str] | None = None) -> Path:
    """A Conv model ``images [batch, 3, H, W] -> logits [batch, 4, H, W]`` (str dims are dynamic)."""
    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 1, 1)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["logits"], name="conv")], "conv",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, *size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 4, *size])], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    if metadata:
        onnx.helper.set_model_props(model, metadata)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def conv_model(tmp_path):
    """Factory: ``conv_model(name, batch=..., size=..., metadata=...)`` writes a Conv model in tmp_path."""
    return lambda name="model.onnx", **kw: write_conv_model(tmp_path / name, **kw)


@pytest.fixture(scope="session")
def precision_models(tiny_build_dir, tmp_path_factory) -> dict[str, Path]:
    """``{"fp32", "fp16", "int8"}`` ONNX models of the tiny deeplabv3p (64x64); int8 is the TensorRT target (Q/DQ)."""
    from segexport.precision.stage import quantize_model

    out = tmp_path_factory.mktemp("engine-models")
    fp32 = tiny_build_dir / "model.onnx"
    # A 1-epoch model is judged on parity with ONNX Runtime here, not on its mIoU drop: no budget.
    common = {"val_images": 8, "budget": 100.0, "max_fallback": 0, "progress": False, "out": out}
    fp16 = quantize_model(fp32, precision="fp16", **common).model_path
    int8 = quantize_model(fp32, precision="int8", target="tensorrt", method="minmax", calib_images=16,
                          **common).model_path
    return {"fp32": fp32, "fp16": fp16, "int8": int8}


def _rewrite_record(engine: Path, **changes) -> None:
    path = engine.with_suffix(".json")
    record = json.loads(path.read_text())
    record.update(changes)
    path.write_text(json.dumps(record))


@pytest.fixture
def edit_record():
    """``edit_record(engine, **fields)``: change top-level fields of an engine's build record."""
    return _rewrite_record
