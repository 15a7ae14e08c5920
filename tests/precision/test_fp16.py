"""FP16 models: FP32 inputs and outputs, FP16 weights, sensitive ops kept FP32, true-half parity."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from segexport.checkpoint import load_checkpoint
from segexport.data import SYNTHETIC_CLASSES
from segexport.errors import ConfigError
from segexport.precision.fp16 import convert_fp16, fp16_op_block_list, torch_half_parity
from segexport.precision.onnx_model import read_model_info
from segexport.precision.stage import quantize_model, resolve_budget

FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


@pytest.fixture(scope="module")
def deeplab_fp16(deeplab_onnx, tmp_path_factory):
    # A budget no drop exceeds: whether this CPU's weights hold the recipe's 0.1 is not the point here.
    return quantize_model(deeplab_onnx, precision="fp16", val_images=16, budget=100.0, progress=False,
                          out=tmp_path_factory.mktemp("fp16"))


def test_fp16_graph_has_fp32_io_and_fp16_initializers(deeplab_fp16):
    model = onnx.load(str(deeplab_fp16.model_path))
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [FLOAT]
    # the logits come out of a Resize kept in FP32: the converter would leave them FP16
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [FLOAT]
    floats = [i for i in model.graph.initializer if i.data_type in (FLOAT, FLOAT16)]
    assert floats and all(i.data_type == FLOAT16 for i in floats)
    assert deeplab_fp16.summary["graph"]["outputs"] == {"logits": "float"}
    props = {p.key: p.value for p in model.metadata_props}
    assert props["precision"] == "fp16" and props["arch"] == "deeplabv3p"


def test_sensitive_ops_stay_fp32_and_are_listed(deeplab_fp16):
    conversion = deeplab_fp16.summary["conversion"]
    assert conversion["kept_fp32_ops"] == {"ReduceMean": 1, "Resize": 3}  # image pooling and every resize
    model = onnx.load(str(deeplab_fp16.model_path))
    reduce_mean = next(n for n in model.graph.node if n.op_type == "ReduceMean")
    cast = next(n for n in model.graph.node if reduce_mean.input[0] in n.output)
    assert cast.op_type == "Cast" and cast.attribute[0].i == FLOAT
    assert {"Softmax", "GlobalAveragePool", "Resize", "ReduceSum"} <= set(fp16_op_block_list())


def test_fp16_accuracy_is_judged_on_onnxruntime_and_in_true_half(deeplab_onnx, deeplab_fp16):
    s = deeplab_fp16.summary
    assert s["passed"] is True and s["problems"] == [] and s["budget_points"] == 100.0
    assert 0.0 <= s["accuracy"]["agreement"] <= 1.0 and s["accuracy"]["drop_points"] <= 100.0
    assert resolve_budget(read_model_info(deeplab_onnx), "fp16", None, None) == 0.1  # the recipe's, by default
    half = s["true_half"]
    assert half["dtype"] == "float16" and half["missing_half_kernel"] is None
    assert "float16 on the CPU" in half["label"] and half["images"] == 16


def test_torch_half_parity_measures_true_half_arithmetic(tiny_checkpoint):
    model, config = load_checkpoint(tiny_checkpoint)
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)).numpy()
    masks = np.zeros((4, 64, 64), dtype=np.uint8)
    result = torch_half_parity(model, images, masks, SYNTHETIC_CLASSES)
    # how far half arithmetic moves a label depends on the trained weights: only the bookkeeping is exact
    assert result["dtype"] == "float16" and 0.0 <= result["agreement"] <= 1.0
    assert result["drop_points"] == 100.0 * (result["miou_fp32"] - result["miou"])
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is not cast


def test_plain_output_of_an_fp16_node_gets_a_cast_back(conv_relu, tmp_path):
    source = conv_relu(tmp_path / "plain.onnx")
    facts = convert_fp16(source, tmp_path / "plain.fp16.onnx")
    model = onnx.load(str(tmp_path / "plain.fp16.onnx"))
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [FLOAT]
    assert facts["kept_fp32_ops"] == {} and facts["clamped_weights"] == 0
    onnx.checker.check_model(model, full_check=True)


def test_int8_options_are_refused_for_fp16(deeplab_onnx):
    with pytest.raises(ConfigError, match="--calib-images, --method apply to --int8 only"):
        quantize_model(deeplab_onnx, precision="fp16", method="minmax", calib_images=8)



def _fan_out(path):
    """``x -> Relu a -> t1``, read by ``Relu b`` and ``Relu c``, whose results ``Add d`` sums into
    ``y`` (float32 ``[1, 4]``, with value_info as exporters write it). A tensor with two readers
    is where the converter puts its FP32 -> FP16 -> FP32 pairs."""
    h = onnx.helper
    nodes = [h.make_node("Relu", ["x"], ["t1"], name="a"), h.make_node("Relu", ["t1"], ["t2"], name="b"),
             h.make_node("Relu", ["t1"], ["t3"], name="c"), h.make_node("Add", ["t2", "t3"], ["y"], name="d")]
    graph = h.make_graph(nodes, "fan_out", [h.make_tensor_value_info("x", FLOAT, [1, 4])],
                         [h.make_tensor_value_info("y", FLOAT, [1, 4])],
                         value_info=[h.make_tensor_value_info(t, FLOAT, [1, 4]) for t in ("t1", "t2", "t3")])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=9), str(path))
    return path


def _cast_types(model, node_name):
    """The ``to`` of each Cast on the path into ``node_name``'s input, nearest first."""
    producers = {out: n for n in model.graph.node for out in n.output}
    found, tensor = [], next(n for n in model.graph.node if n.name == node_name).input[0]
    while tensor in producers and producers[tensor].op_type == "Cast":
        found.append(producers[tensor].attribute[0].i)
        tensor = producers[tensor].input[0]
    return found


def test_a_tensor_between_fp32_nodes_is_not_rounded_to_fp16(tmp_path):
    import onnxruntime as ort

    facts = convert_fp16(_fan_out(tmp_path / "fan.onnx"), tmp_path / "all.onnx", nodes_kept=("a", "b", "c", "d"))
    model = onnx.load(str(tmp_path / "all.onnx"))
    onnx.checker.check_model(model, full_check=True)
    # the converter cast a's result to FP16 and b and c each cast it back: both now read it directly
    assert facts["dropped_round_trips"] == 2 and _cast_types(model, "b") == _cast_types(model, "c") == []
    x = np.full((1, 4), 1.0 + 2.0**-12, dtype=np.float32)  # between two FP16 values: FP16 would make y 2.0
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph as written
    session = ort.InferenceSession(str(tmp_path / "all.onnx"), options, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], 2 * x)

    # b and c in FP16: they read a's result through a real cast, and d reads theirs through casts back
    facts = convert_fp16(tmp_path / "fan.onnx", tmp_path / "mid.onnx", nodes_kept=("a", "d"))
    model = onnx.load(str(tmp_path / "mid.onnx"))
    assert facts["dropped_round_trips"] == 0
    assert _cast_types(model, "b") == _cast_types(model, "c") == [FLOAT16] and _cast_types(model, "d") == [FLOAT]
