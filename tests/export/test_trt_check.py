"""The static TensorRT-compatibility check: its table, its rules, and `segexport check`."""

import json

import numpy as np
import onnx
import pytest
from cli_helpers import assert_one_line_error, run_cli
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from segexport.errors import InputError
from segexport.export.trt_check import TABLE_PATH, check_tensorrt_compat, load_trt_table

OPS_OUR_MODELS_USE = (
    "Conv", "ConvTranspose", "Relu", "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool",
    "Resize", "Concat", "Add", "Mul", "ArgMax", "QuantizeLinear", "DequantizeLinear", "Cast",
)


def _model(nodes, inputs, outputs, inits=(), opset=18, extra_opsets=()):
    graph = h.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset), *extra_opsets])
    return model


def _x(name="x", shape=(1, 4, 8, 8), dtype=T.FLOAT):
    return h.make_tensor_value_info(name, dtype, None if shape is None else list(shape))


def _unpool_model():
    """SegNet's pattern: a MaxPool whose indices feed a MaxUnpool."""
    nodes = [
        h.make_node("MaxPool", ["x"], ["p", "idx"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node("MaxUnpool", ["p", "idx"], ["y"], name="unpool", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    model = _model(nodes, [_x()], [_x("y")])
    onnx.checker.check_model(model, full_check=True)
    return model


def _clean_model():
    """Conv -> Relu -> Resize(linear) -> Add -> ArgMax (+ Cast to int32): what our exports contain."""
    w = numpy_helper.from_array(np.ones((3, 4, 3, 3), np.float32), "w")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [
        h.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c"], ["r"], name="relu"),
        h.make_node("Resize", ["r", "", "scales"], ["up"], name="resize", mode="linear",
                    coordinate_transformation_mode="half_pixel"),
        h.make_node("Add", ["up", "up"], ["logits"], name="add"),
        h.make_node("ArgMax", ["logits"], ["am"], name="argmax", axis=1, keepdims=0),
        h.make_node("Cast", ["am"], ["labels"], name="cast", to=T.INT32),
    ]
    outputs = [_x("logits", (1, 3, 16, 16)), _x("labels", (1, 16, 16), T.INT32)]
    model = _model(nodes, [_x()], outputs, [w, scales])
    onnx.checker.check_model(model, full_check=True)
    return model


def _unsupported(report):
    return {(f.node, f.op_type, f.rule) for f in report.findings if f.severity == "unsupported"}


# --- the table -------------------------------------------------------------------------------

def test_table_parses_and_lists_the_ops_our_models_use():
    data = json.loads(TABLE_PATH.read_text())
    assert data["source"]["commit"] == "96e781103cfc4adf4a6bb557e94bac8e693f6f4c"
    table = load_trt_table()
    assert "ONNX-TensorRT 10.1" in table.version
    for op in OPS_OUR_MODELS_USE:
        assert table.ops[op]["supported"] is True, op
        assert "FP32" in table.ops[op]["types"] or op == "DequantizeLinear", op
    assert table.ops["MaxUnpool"]["supported"] is False
    assert table.opset_range == (9, 20)


# --- the library -----------------------------------------------------------------------------

def test_maxunpool_and_used_maxpool_indices_are_unsupported():
    report = check_tensorrt_compat(_unpool_model())
    assert not report.ok
    assert _unsupported(report) == {
        ("pool", "MaxPool", "MaxPool.no_output(Indices)"),
        ("unpool", "MaxUnpool", "matrix.unsupported_op"),
    }
    pool = next(f for f in report.findings if f.node == "pool")
    assert "output 'idx' (Indices) is used" in pool.message


def test_clean_graph_has_no_findings():
    report = check_tensorrt_compat(_clean_model())
    assert report.ok and report.findings == []
    assert report.op_types == {"Add": 1, "ArgMax": 1, "Cast": 1, "Conv": 1, "Relu": 1, "Resize": 1}


def test_input_model_is_not_modified():
    model = _unpool_model()
    before = model.SerializeToString()
    check_tensorrt_compat(model)
    assert model.SerializeToString() == before


def test_attribute_dtype_constant_and_domain_rules():
    zp = numpy_helper.from_array(np.array(128, np.uint8), "zp")
    sc = numpy_helper.from_array(np.array(0.1, np.float32), "sc")
    nodes = [
        h.make_node("Resize", ["x", "", "sc4"], ["r"], name="resize", mode="cubic"),
        h.make_node("QuantizeLinear", ["r", "sc", "zp"], ["q"], name="q"),
        h.make_node("DequantizeLinear", ["q", "sc", "zp"], ["dq"], name="dq"),
        h.make_node("AveragePool", ["dq"], ["y"], name="ap", kernel_shape=[2, 2], dilations=[2, 2]),
        h.make_node("Unsqueeze", ["x", "axes"], ["u"], name="unsq"),
        h.make_node("Plugin", ["x"], ["c"], name="custom", domain="my.ops"),
    ]
    sc4 = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc4")
    model = _model(nodes, [_x(), _x("axes", (1,), T.INT64)], [_x("y", None)], [zp, sc, sc4],
                   extra_opsets=[h.make_opsetid("my.ops", 1)])
    assert _unsupported(check_tensorrt_compat(model)) == {
        ("resize", "Resize", "Resize.attr_in(mode)"),
        ("q", "QuantizeLinear", "QuantizeLinear.types"),  # uint8 output: TensorRT wants signed INT8
        ("q", "QuantizeLinear", "QuantizeLinear.constant_input(y_zero_point)"),
        ("dq", "DequantizeLinear", "DequantizeLinear.types"),
        ("dq", "DequantizeLinear", "DequantizeLinear.constant_input(x_zero_point)"),
        ("ap", "AveragePool", "AveragePool.attr_all_ones(dilations)"),
        ("unsq", "Unsqueeze", "Unsqueeze.constant_input(axes)"),
        ("custom", "Plugin", "domain.custom"),
    }


def test_signed_int8_qdq_is_supported_and_new_opset_is_restricted():
    zp = numpy_helper.from_array(np.array(0, np.int8), "zp")
    sc = numpy_helper.from_array(np.array(0.1, np.float32), "sc")
    nodes = [
        h.make_node("QuantizeLinear", ["x", "sc", "zp"], ["q"], name="q"),
        h.make_node("DequantizeLinear", ["q", "sc", "zp"], ["y"], name="dq"),
    ]
    report = check_tensorrt_compat(_model(nodes, [_x()], [_x("y")], [zp, sc], opset=21))
    assert report.ok
    assert [(f.severity, f.rule) for f in report.findings] == [("restricted", "opset.range")]


# --- the CLI ---------------------------------------------------------------------------------

def test_cli_flags_unpool_graph_exit_1(tmp_path):
    path = tmp_path / "segnet_like.onnx"
    onnx.save(_unpool_model(), path)
    r = run_cli("check", path, "--json")
    assert r.code == 1, r.stderr
    got = json.loads(r.stdout)
    assert got["ok"] is False and got["counts"]["unsupported"] == 2
    assert {f["op_type"] for f in got["findings"]} == {"MaxPool", "MaxUnpool"}
    assert_one_line_error(r, "not compatible", "MaxPool, MaxUnpool", code=1)
    table = run_cli("check", path)
    assert table.code == 1 and "MaxUnpool" in table.stdout and "Indices" in table.stdout


def test_cli_clean_graph_exit_0(tmp_path):
    path = tmp_path / "clean.onnx"
    onnx.save(_clean_model(), path)
    r = run_cli("check", path, "--target", "tensorrt")
    assert r.code == 0, r.stderr
    assert "all 6 nodes supported" in r.stdout


def test_cli_exported_fcn8s_with_convtranspose_passes(tmp_path):
    import torch

    from segexport.models import build_model

    path = tmp_path / "fcn8s.onnx"
    model = build_model("fcn8s", num_classes=3).eval()
    torch.onnx.export(model, torch.zeros(1, 3, 64, 64), path, dynamo=True, opset_version=18)
    r = run_cli("check", path, "--json")
    assert r.code == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["op_types"]["ConvTranspose"] >= 1
    assert got["ok"] is True and got["counts"]["unsupported"] == 0
    assert not [f for f in got["findings"] if f["op_type"] == "ConvTranspose"]


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_text("this is not an onnx model\n")
    assert_one_line_error(run_cli("check", not_onnx), "model.onnx", "not an ONNX model")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert_one_line_error(run_cli("check", empty), "empty.onnx", "not an ONNX model")
    assert_one_line_error(run_cli("check", tmp_path / "nope.onnx"), "nope.onnx", "no such file")
    with pytest.raises(InputError, match="not a file"):
        check_tensorrt_compat(tmp_path)


def test_cli_unknown_target_is_usage_error(tmp_path):
    path = tmp_path / "clean.onnx"
    onnx.save(_clean_model(), path)
    r = run_cli("check", path, "--target", "openvino")
    assert r.code == 2 and "Usage" in r.stderr and "Traceback" not in r.stderr


def test_cli_help_shows_examples():
    r = run_cli("check", "--help")
    assert r.code == 0 and "segexport check builds/fcn8s/model.onnx" in r.stdout


def _single(node, inputs, outputs, inits=(), opset=18):
    return check_tensorrt_compat(_model([node], inputs, outputs, inits, opset=opset))


RULE_CASES = {
    "resize axes not iota with scales": (
        lambda: _single(h.make_node("Resize", ["x", "", "s"], ["y"], name="n", axes=[3, 2]), [_x()], [_x("y", None)],
                        [numpy_helper.from_array(np.array([2, 2], np.float32), "s")]),
        [("unsupported", "Resize.attr_iota(axes)")]),
    "1D max pooling": (
        lambda: _single(h.make_node("MaxPool", ["x"], ["y"], name="n", kernel_shape=[2]), [_x(shape=(1, 4, 8))],
                        [_x("y", None)]),
        [("unsupported", "MaxPool.spatial_dims")]),
    "maxpool indices declared but unused": (
        lambda: _single(h.make_node("MaxPool", ["x"], ["y", "i"], name="n", kernel_shape=[2, 2]), [_x()],
                        [_x("y", None)]),
        [("unsupported", "MaxPool.no_output(Indices)")]),
    "gridsample on 5D input": (
        lambda: _single(h.make_node("GridSample", ["x", "g"], ["y"], name="n"),
                        [_x(shape=(1, 2, 4, 4, 4)), _x("g", (1, 4, 4, 4, 3))], [_x("y", None)]),
        [("unsupported", "GridSample.input_rank")]),
    "eyelike of dynamic shape": (
        lambda: _single(h.make_node("EyeLike", ["x"], ["y"], name="n"), [_x(shape=("n", 4))], [_x("y", None)]),
        [("unsupported", "EyeLike.static_shape")]),
    "topk with K too large": (
        lambda: _single(h.make_node("TopK", ["x", "k"], ["v", "i"], name="n"), [_x(shape=(1, 5000))],
                        [_x("v", None), _x("i", None, T.INT64)],
                        [numpy_helper.from_array(np.array([4000], np.int64), "k")]),
        [("unsupported", "TopK.input_below(K)")]),
    "string constant": (
        lambda: _single(h.make_node("Constant", [], ["y"], name="n", value_string="a"), [], [_x("y", None, T.STRING)]),
        [("unsupported", "Constant.types"), ("unsupported", "Constant.attr_absent")]),
    "cast to int16": (
        lambda: _single(h.make_node("Cast", ["x"], ["y"], name="n", to=T.INT16), [_x()], [_x("y", None, T.INT16)]),
        [("unsupported", "Cast.types")]),
    "op outside the matrix": (
        lambda: _single(h.make_node("Swish", ["x"], ["y"], name="n"), [_x()], [_x("y", None)], opset=24),
        [("unsupported", "matrix.unknown_op")]),
    "random seed is ignored": (
        lambda: _single(h.make_node("RandomUniform", [], ["y"], name="n", shape=[2], seed=1.0), [], [_x("y", None)]),
        [("info", "RandomUniform.attr_ignored(seed)")]),
    "roialign without sampling_ratio, zero output height, 3D rois": (
        lambda: _single(h.make_node("RoiAlign", ["x", "r", "b"], ["y"], name="n", output_height=0),
                        [_x(), _x("r", (1, 2, 4)), _x("b", (2,), T.INT64)], [_x("y", None)]),
        [("unsupported", "RoiAlign.input_rank(rois)"), ("unsupported", "RoiAlign.attr_at_least(output_height)"),
         ("restricted", "RoiAlign.attr_required(sampling_ratio)")]),
    "roialign as an instance network exports it": (
        lambda: _single(h.make_node("RoiAlign", ["x", "r", "b"], ["y"], name="n", output_height=7, output_width=7,
                                    sampling_ratio=2, spatial_scale=0.25, coordinate_transformation_mode="half_pixel"),
                        [_x(), _x("r", (2, 4)), _x("b", (2,), T.INT64)], [_x("y", None)], opset=16),
        []),
    "nms with a centre box code out of range and too many boxes": (
        lambda: _single(h.make_node("NonMaxSuppression", ["b", "s", "m"], ["i"], name="n", center_point_box=2),
                        [_x("b", (1, 6000, 4)), _x("s", (1, 3, 6000))], [_x("i", None, T.INT64)],
                        [numpy_helper.from_array(np.array([10], np.int64), "m")]),
        [("unsupported", "NonMaxSuppression.attr_in(center_point_box)"),
         ("restricted", "NonMaxSuppression.dim_at_most(boxes per image)")]),
    "nms after a topk of 1000": (
        lambda: _single(h.make_node("NonMaxSuppression", ["b", "s", "m"], ["i"], name="n"),
                        [_x("b", (1, 1000, 4)), _x("s", (1, 3, 1000))], [_x("i", None, T.INT64)],
                        [numpy_helper.from_array(np.array([10], np.int64), "m")]),
        []),
    "hardmax note": (
        lambda: _single(h.make_node("Hardmax", ["x"], ["y"], name="n"), [_x()], [_x("y", None)]),
        [("info", "Hardmax.note")]),
}


@pytest.mark.parametrize("case", sorted(RULE_CASES))
def test_rule_kinds(case):
    build, expected = RULE_CASES[case]
    report = build()
    assert [(f.severity, f.rule) for f in report.findings if f.rule != "opset.range"] == expected


def test_uint8_between_nodes_is_unsupported():
    nodes = [h.make_node("Cast", ["x"], ["u8"], name="to_u8", to=T.UINT8),
             h.make_node("Cast", ["u8"], ["y"], name="back", to=T.FLOAT)]
    report = check_tensorrt_compat(_model(nodes, [_x()], [_x("y")]))
    assert [(f.node, f.rule) for f in report.findings] == [("to_u8", "types.tensor")]
    assert "only as a network input or output" in report.findings[0].message
