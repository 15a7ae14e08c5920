"""INT8 models: the TensorRT target's Q/DQ form, the CPU target's fused kernels, calibration
methods, the calibration caches and bitwise-identical re-runs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from segexport.data import Preprocess
from segexport.errors import ConfigError
from segexport.precision.calibrate import CalibrationSettings, calibrate
from segexport.precision.calibration_data import CalibrationImages
from segexport.precision.int8_stage import trt_amax
from segexport.precision.stage import quantize_model
from segexport.precision.trt_cache import read_trt_cache, scale_of

FAST = dict(method="minmax", calib_images=16, val_images=16, progress=False)


@pytest.fixture(scope="module")
def tensorrt_int8(deeplab_onnx, tmp_path_factory):
    return quantize_model(deeplab_onnx, precision="int8", target="tensorrt", out=tmp_path_factory.mktemp("trt"), **FAST)


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def test_tensorrt_model_has_only_int8_qdq_with_zero_points_0(tensorrt_int8):
    model = onnx.load(str(tensorrt_int8.model_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        zero_point = inits[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
    facts = tensorrt_int8.summary["graph"]
    assert list(facts["zero_point_types"]) == ["int8"] and facts["nonzero_zero_points"] == 0
    assert facts["constants"]["biases"] == 0 and facts["constants"]["weights_per_tensor"] == 0


def test_tensorrt_model_quantizes_every_conv_input_with_per_channel_weights(tensorrt_int8):
    model = onnx.load(str(tensorrt_int8.model_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = _producers(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == tensorrt_int8.summary["graph"]["constants"]["weights_per_channel"] > 0
    for conv in convs:
        x, w = producers[conv.input[0]], producers[conv.input[1]]
        assert x.op_type == w.op_type == "DequantizeLinear", conv.name
        weight, scale = inits[w.input[0]], inits[w.input[1]]
        axis = next((a.i for a in w.attribute if a.name == "axis"), 1)
        assert weight.dtype == np.int8 and axis == 0 and scale.shape == (weight.shape[0],)
        assert len(conv.input) < 3 or conv.input[2] in inits  # bias stays float


def test_tensorrt_writes_calibration_cache_that_parses_back_into_the_ranges(tensorrt_int8, deeplab_onnx):
    out = tensorrt_int8.model_path.parent
    cache = read_trt_cache(out / "calibration.cache")
    amax = trt_amax(out / "calibration.json")
    assert cache.calibrator == "EntropyCalibration2" and set(cache.scales) == set(amax)
    assert cache.scales == {name: scale_of(value) for name, value in amax.items()}
    fp32 = onnx.load(str(deeplab_onnx))
    tensors = {"images"} | {o for n in fp32.graph.node for o in n.output}
    assert set(cache.scales) <= tensors and "images" in cache.scales


def test_quantized_model_keeps_the_segexport_metadata(tensorrt_int8, deeplab_onnx):
    props = {p.key: p.value for p in onnx.load(str(tensorrt_int8.model_path)).metadata_props}
    fp32 = {p.key: p.value for p in onnx.load(str(deeplab_onnx)).metadata_props}
    assert all(props[k] == v for k, v in fp32.items())
    assert props["precision"] == "int8" and props["int8_target"] == "tensorrt" and "onnx.infer" not in props


def test_cpu_model_convs_run_as_qlinearconv_in_onnxruntime(deeplab_onnx, tmp_path):
    result = quantize_model(deeplab_onnx, precision="int8", target="cpu", out=tmp_path, **FAST)
    model = onnx.load(str(result.model_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    activation_zero_points = {inits[n.input[2]].dtype for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert activation_zero_points == {np.dtype(np.uint8)}
    optimized = result.summary["graph"]["optimized"]
    convs = sum(1 for n in model.graph.node if n.op_type == "Conv")
    assert convs > 0 and optimized["QLinearConv"] == optimized["Conv_in_model"] == convs
    assert "Conv" not in optimized["op_counts"] and "FusedConv" not in optimized["op_counts"]
    assert not (tmp_path / "calibration.cache").exists() and (tmp_path / "calibration.json").is_file()


@pytest.mark.parametrize("target", ["tensorrt", "cpu"])
def test_rerun_with_calib_cache_is_bitwise_identical(fcn8s_onnx, tmp_path, target):
    cache = tmp_path / "ranges.json"
    first = quantize_model(fcn8s_onnx, precision="int8", target=target, calib_cache=cache, out=tmp_path / "a", **FAST)
    assert cache.is_file() and first.summary["calibration"]["cache"]["reused"] is False
    second = quantize_model(fcn8s_onnx, precision="int8", target=target, calib_cache=cache, out=tmp_path / "b",
                            **{**FAST, "calib": str(tmp_path / "no-such-folder")})  # never read: the cache is used
    assert second.summary["calibration"]["cache"]["reused"] is True
    assert second.model_path.read_bytes() == first.model_path.read_bytes()
    assert (tmp_path / "b" / "calibration.json").read_bytes() == cache.read_bytes()


def test_calib_cache_of_another_model_or_method_is_refused(fcn8s_onnx, deeplab_onnx, tmp_path):
    cache = tmp_path / "ranges.json"
    quantize_model(fcn8s_onnx, precision="int8", target="cpu", calib_cache=cache, out=tmp_path / "a", **FAST)
    with pytest.raises(ConfigError, match="another model"):
        quantize_model(deeplab_onnx, precision="int8", calib_cache=cache, out=tmp_path / "b", **FAST)
    with pytest.raises(ConfigError, match="--method"):
        quantize_model(fcn8s_onnx, precision="int8", calib_cache=cache, out=tmp_path / "c", **{**FAST, "method": "percentile"})


def _outlier_images() -> CalibrationImages:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 40, (16, 16, 16, 3), dtype=np.uint8)
    images[:, 3, 5] = 255  # one bright pixel per image: a rare outlier in every activation
    return CalibrationImages(images, Preprocess(size=(16, 16)), "test", 16, 16, 0)


def test_entropy_and_percentile_clip_outliers_that_minmax_keeps(conv_relu, tmp_path):
    model = conv_relu(tmp_path / "conv_relu.onnx")
    images = _outlier_images()
    ranges = {m: calibrate(model, images, CalibrationSettings(m), input_name="images", progress=False)
              for m in ("minmax", "entropy", "percentile")}
    highest = {m: float(np.ravel(r["logits"].highest)[0]) for m, r in ranges.items()}
    assert highest["entropy"] < 0.8 * highest["minmax"]
    assert highest["percentile"] < highest["minmax"]
    assert float(np.ravel(ranges["minmax"]["logits"].lowest)[0]) == 0.0  # ReLU output: asymmetric range kept


class _Reader:
    def __init__(self, items: list) -> None:
        self.items = list(items)

    def get_next(self) -> dict | None:
        return self.items.pop(0) if self.items else None


def test_library_default_entropy_bins_degenerate_to_minmax(conv_relu, tmp_path):
    """Why calibrate() passes num_bins=2048: with onnxruntime's default of 128 bins (equal to
    its 128 quantized bins) the entropy search has one candidate, the full range."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    model = conv_relu(tmp_path / "conv_relu.onnx")
    images = _outlier_images()
    calibrator = create_calibrator(model, None, augmented_model_path=str(tmp_path / "aug.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy)
    calibrator.collect_data(_Reader([{"images": x} for x in images.batches(16)]))
    default = float(np.ravel(calibrator.compute_data()["logits"].highest)[0])
    minmax = calibrate(model, images, CalibrationSettings("minmax"), input_name="images", progress=False)
    assert default == float(np.ravel(minmax["logits"].highest)[0])


def test_summary_file_keeps_one_entry_per_variant(tensorrt_int8, deeplab_onnx):
    out = tensorrt_int8.model_path.parent
    quantize_model(deeplab_onnx, precision="int8", target="cpu", out=out, calib_cache=out / "calibration.json", **FAST)
    variants = json.loads((out / "quantize.json").read_text())["variants"]
    assert set(variants) == {"int8.tensorrt", "int8.cpu"}
    assert variants["int8.cpu"]["calibration"]["cache"]["reused"] is True


def test_logits_tail_stays_fp32_in_the_cpu_model(fcn8s_onnx, tmp_path):
    """The operators after the classifier (FCN-8s: score fusion and resizes) get no Q/DQ."""
    from segexport.precision.int8 import logits_tail

    fp32 = onnx.load(str(fcn8s_onnx))
    tail = logits_tail(fp32)
    ops = {n.name: n.op_type for n in fp32.graph.node}
    assert tail and "Conv" not in {ops[name] for name in tail}
    last = [n for n in fp32.graph.node if n.op_type == "Conv"][-1].name
    assert last not in tail and fp32.graph.node[-1].name in tail
    result = quantize_model(fcn8s_onnx, precision="int8", target="cpu", out=tmp_path, **FAST)
    model = onnx.load(str(result.model_path))
    tail_nodes = [n for n in model.graph.node if n.name in set(tail)]
    assert len(tail_nodes) == len(tail)
    tail_outputs = {out for n in tail_nodes for out in n.output}
    quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert not tail_outputs & quantized  # every tail operator computes and passes on FP32
    assert json.loads(dict((p.key, p.value) for p in model.metadata_props)["fp32_logits_tail"]) == tail


def test_unpool_masks_compare_unquantized_tensors(tmp_path):
    """SegNet's rewritten MaxUnpool compares pooled values with the window's inputs: both the
    pools and the comparisons must see FP32 tensors, or every mask breaks (tensorrt target)."""
    from segexport.pipeline.export_stage import export_model

    onnx_path = export_model("segnet", size="tiny", input_size=(64, 64), out=tmp_path / "fp32", images=2).onnx_path
    result = quantize_model(onnx_path, precision="int8", target="tensorrt", out=tmp_path, **{**FAST, "budget": 100.0})
    model = onnx.load(str(result.model_path))
    producers = {out: n for n in model.graph.node for out in n.output}
    equals = [n for n in model.graph.node if n.op_type == "Equal"]
    pools = [n for n in model.graph.node if n.op_type == "MaxPool"]
    assert equals and len(pools) == 5
    assert all(producers[i].op_type != "DequantizeLinear" for n in equals for i in n.input if i in producers)
    assert all(producers[n.input[0]].op_type != "DequantizeLinear" for n in pools)


def _weight_levels(model: onnx.ModelProto) -> dict[str, int]:
    """Per weighted layer: the largest |quantized weight| its DequantizeLinear holds."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = _producers(model)
    levels = {}
    for node in model.graph.node:
        dq = producers.get(node.input[1]) if node.op_type == "Conv" else None
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
            levels[node.name] = int(np.abs(inits[dq.input[0]].astype(np.int32)).max())
    return levels


def test_openvino_target_gives_the_first_conv_7_bit_weights_and_the_rest_8(deeplab_onnx, tmp_path):
    from segexport.precision.int8 import first_layers

    fp32 = onnx.load(str(deeplab_onnx), load_external_data=False)
    first = first_layers(fp32)
    assert len(first) == 1  # the stem conv: the only weighted layer fed by no other
    stem = next(n.name for n in fp32.graph.node if n.op_type == "Conv" and n.input[1] == first[0])
    ov = _weight_levels(onnx.load(str(quantize_model(
        deeplab_onnx, precision="int8", target="openvino", out=tmp_path / "ov", **FAST).model_path)))
    assert ov[stem] <= 64 and max(v for k, v in ov.items() if k != stem) == 127
    cpu = _weight_levels(onnx.load(str(quantize_model(
        deeplab_onnx, precision="int8", target="cpu", out=tmp_path / "cpu", **FAST).model_path)))
    assert cpu[stem] == 127  # the other targets keep 8 bits everywhere
