"""Which ONNX models the precision stage accepts, and what it reads from them."""

from __future__ import annotations

import json

import onnx
import pytest

from segexport.errors import InputError
from segexport.precision.onnx_model import read_model_info


def test_segexport_model_brings_its_preprocessing_and_classes(fcn8s_onnx):
    info = read_model_info(fcn8s_onnx)
    meta = {p.key: p.value for p in onnx.load(str(fcn8s_onnx)).metadata_props}
    assert info.arch == "fcn8s" and info.input_name == "images" and info.batch is None
    assert info.input_size == (64, 64) and list(info.preprocess.mean) == json.loads(meta["mean"])
    assert info.classes == tuple(json.loads(meta["classes"])) and info.notes == []
    assert len(info.sha256) == 64


def test_plain_model_gets_imagenet_normalisation_and_counted_classes(conv_relu, tmp_path):
    info = read_model_info(conv_relu(tmp_path / "plain.onnx", channels=5, size=24))
    assert info.arch is None and info.metadata == {} and info.input_size == (24, 24)
    assert info.classes == tuple(f"class_{i}" for i in range(5))
    assert info.preprocess.mean == (0.485, 0.456, 0.406) and "ImageNet" in info.notes[0]


def test_plain_model_with_dynamic_size_is_refused(conv_relu, tmp_path):
    path = conv_relu(tmp_path / "plain.onnx")
    model = onnx.load(str(path))
    for d in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "side"
    onnx.save(model, str(path))
    with pytest.raises(InputError, match="height and width are dynamic"):
        read_model_info(path)


def test_non_image_input_is_refused(conv_relu, tmp_path):
    path = conv_relu(tmp_path / "plain.onnx")
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    onnx.save(model, str(path))
    with pytest.raises(InputError, match=r"float16 of shape \['batch', 3, 16, 16\], expected float32"):
        read_model_info(path)


def test_quantized_model_is_refused(tmp_path, fcn8s_onnx):
    from segexport.precision.stage import quantize_model

    result = quantize_model(fcn8s_onnx, precision="int8", method="minmax", calib_images=4, val_images=4,
                            out=tmp_path, progress=False)
    with pytest.raises(InputError, match="already quantized"):
        read_model_info(result.model_path)
