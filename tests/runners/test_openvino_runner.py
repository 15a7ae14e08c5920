"""The OpenVINO runner on real OpenVINO sessions: the tiny trained export, its FP16 and Q/DQ INT8
variants, its IR, and hand-made graphs for fixed batches, quantized IRs and bad files."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from segexport.errors import CheckFailed, InputError
from segexport.runners.onnxruntime_runner import OnnxRuntimeRunner
from segexport.runners.openvino_runner import (
    INFERENCE_PRECISIONS,
    OpenVINORunner,
    export_ir,
)

# The runner module imports openvino only when a runner opens, so this skip is what guards the file.
pytest.importorskip("openvino", reason="openvino is not installed (pip install openvino)")


@pytest.fixture(scope="module")
def val_images() -> np.ndarray:
    """Three normalised synthetic val images at 64x64, as every runner gets them."""
    import torch

    from segexport.data import Preprocess, load_arrays, normalize_batch, open_dataset

    preprocess = Preprocess(size=(64, 64))
    images, _ = load_arrays(open_dataset("synthetic", "val", size=(64, 64), length=3), preprocess)
    return normalize_batch(torch.from_numpy(images), preprocess).numpy()


@pytest.fixture(scope="module")
def fp16_onnx(tiny_build_dir, tmp_path_factory):
    """The tiny export converted to FP16 (FP32 inputs and outputs, FP16 weights)."""
    from segexport.precision.fp16 import convert_fp16

    path = tmp_path_factory.mktemp("fp16") / "model.fp16.onnx"
    convert_fp16(tiny_build_dir / "model.onnx", path)
    return path


def _save(path, nodes, initializers, batch="batch", inputs=None, opsets=(("", 17),)):
    """A one-input ``images [batch, 3, 8, 8]`` -> ``logits [batch, 4, 8, 8]`` graph saved at ``path``."""
    graph = helper.make_graph(
        nodes, "tiny", inputs or [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 4, 8, 8])], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def _weight() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)


def _conv(path, batch="batch"):
    """A Conv (3 -> 4 channels, 3x3) graph; ``batch`` an int fixes the input's batch."""
    conv = helper.make_node("Conv", ["images", "w"], ["logits"], pads=[1, 1, 1, 1])
    return _save(path, [conv], [numpy_helper.from_array(_weight(), "w")], batch=batch)


def _qdq_conv(path):
    """The Conv with explicit Q/DQ on its input (uint8) and its weights (int8, per channel)."""
    scale = np.abs(_weight()).reshape(4, -1).max(1) / 127
    inits = [numpy_helper.from_array(np.round(_weight() / scale[:, None, None, None]).astype(np.int8), "wq"),
             numpy_helper.from_array(scale.astype(np.float32), "ws"),
             numpy_helper.from_array(np.zeros(4, np.int8), "wz"),
             numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
             numpy_helper.from_array(np.array(128, np.uint8), "xz")]
    nodes = [helper.make_node("QuantizeLinear", ["images", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["x"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
             helper.make_node("Conv", ["x", "w"], ["logits"], pads=[1, 1, 1, 1])]
    return _save(path, nodes, inits)


def _images(n: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(n).normal(size=(n, 3, size, size)).astype(np.float32)


def test_openvino_matches_onnxruntime_at_batch_1_and_3_on_one_runner(tiny_build_dir, val_images):
    with OpenVINORunner(tiny_build_dir / "model.onnx") as ov_runner, \
            OnnxRuntimeRunner(tiny_build_dir / "model.onnx") as ort_runner:
        assert (ov_runner.backend, ov_runner.precision) == ("openvino", "fp32")
        assert ov_runner.fixed_batch is None and ov_runner.input_size == (64, 64)
        for batch in (1, 3, 1):  # the dynamic batch changes between runs of the one infer request
            expected, got = ort_runner.run(val_images[:batch]), ov_runner.run(val_images[:batch])
            assert got.shape == expected.shape == (batch, 8, 64, 64) and got.dtype == np.float32
            assert float(np.abs(expected - got).max()) < 1e-4
            assert float((expected.argmax(1) == got.argmax(1)).mean()) >= 0.999


@pytest.mark.parametrize(("name", "precision"), [("model.int8.cpu.onnx", "int8"), ("fp16", "fp16")])
def test_qdq_int8_and_fp16_models_open_with_their_precision(tiny_build_dir, fp16_onnx, val_images, name, precision):
    path = fp16_onnx if name == "fp16" else tiny_build_dir / name
    with OpenVINORunner(path) as runner:
        assert runner.precision == precision and runner.input_size == (64, 64)
        out = runner.run(val_images[:2])
    assert out.shape == (2, 8, 64, 64) and np.isfinite(out).all()


def test_ir_round_trip_gives_the_onnx_logits(tiny_build_dir, val_images, tmp_path):
    xml = export_ir(tiny_build_dir / "model.onnx", tmp_path / "ir" / "model.xml")
    assert xml == tmp_path / "ir" / "model.xml" and xml.with_suffix(".bin").is_file()
    assert sorted(p.name for p in xml.parent.iterdir() if not p.name.startswith(".")) == ["model.bin", "model.xml"]
    assert not [p for p in xml.parent.iterdir() if p.name.endswith(".part")]
    with OpenVINORunner(tiny_build_dir / "model.onnx") as from_onnx, OpenVINORunner(xml) as from_ir:
        assert (from_ir.precision, from_ir.input_size, from_ir.fixed_batch) == ("fp32", (64, 64), None)
        np.testing.assert_allclose(from_ir.run(val_images), from_onnx.run(val_images), atol=1e-5)


@pytest.mark.parametrize(("make", "precision"), [(_qdq_conv, "int8"), ("fp16", "fp16")])  # fp32: the round trip
def test_ir_precision_is_read_from_its_constants(tmp_path, make, precision):
    if make == "fp16":
        from segexport.precision.fp16 import convert_fp16

        convert_fp16(_conv(tmp_path / "fp32.onnx"), tmp_path / "tiny.onnx")
    else:
        make(tmp_path / "tiny.onnx")
    with OpenVINORunner(export_ir(tmp_path / "tiny.onnx", tmp_path / "tiny.xml")) as runner:
        assert runner.precision == precision and runner.input_size == (8, 8)
        assert runner.run(_images(2)).shape == (2, 4, 8, 8)


def test_a_fixed_batch_is_honoured_by_padding_the_last_chunk(tmp_path):
    images = _images(3)
    with OpenVINORunner(_conv(tmp_path / "fixed.onnx", batch=2)) as runner:
        assert runner.fixed_batch == 2 and runner.input_size == (8, 8)
        out, first, last = runner.run(images), runner.run(images[:2]), runner.run(images[[2, 2]])
    assert out.shape == (3, 4, 8, 8)
    np.testing.assert_array_equal(out[:2], first)
    np.testing.assert_array_equal(out[2], last[0])


def test_inference_precision_is_read_back_and_one_thread_one_stream_compiled(tiny_build_dir):
    with OpenVINORunner(tiny_build_dir / "model.onnx", threads=1) as runner:
        assert runner.inference_precision in INFERENCE_PRECISIONS
        assert runner.device.endswith(f"1 threads, {runner.inference_precision}")
        assert runner.device.startswith("cpu, openvino ")
        assert runner.compiled_property("INFERENCE_NUM_THREADS") == 1
        assert runner.compiled_property("NUM_STREAMS") == 1
        assert runner.compiled_property("PERFORMANCE_HINT") == "LATENCY"


def test_an_explicit_inference_precision_reports_what_openvino_runs(tmp_path):
    # bf16 is a request: a CPU without bf16 arithmetic runs f32 and the runner says so.
    with OpenVINORunner(_conv(tmp_path / "tiny.onnx"), inference_precision="bf16") as runner:
        assert runner.inference_precision in ("bf16", "f32") and runner.inference_precision in runner.device


def _bad_case(tmp_path, case: str) -> tuple[object, dict]:
    if case == "missing file":
        return tmp_path / "missing.onnx", {}
    if case == "missing bin":  # checked before OpenVINO reads the .xml, so its content does not matter
        (tmp_path / "tiny.xml").write_text("<net/>")
        return tmp_path / "tiny.xml", {}
    if case in ("not onnx", "not ir"):
        path = tmp_path / ("junk.onnx" if case == "not onnx" else "junk.xml")
        path.write_bytes(b"not a model at all")
        path.with_suffix(".bin").write_bytes(b"")
        return path, {}
    if case == "other suffix":
        (tmp_path / "model.txt").write_text("x")
        return tmp_path / "model.txt", {}
    options = {"inference precision": {"inference_precision": "fp32"}, "zero threads": {"threads": 0},
               "fractional threads": {"threads": 1.5}, "precision": {"precision": "int4"}}[case]
    return _conv(tmp_path / "tiny.onnx"), options


@pytest.mark.parametrize(("case", "fragment"), [
    ("missing file", "model file not found"),
    ("missing bin", "tiny.bin are missing; copy the .bin beside the .xml"),
    ("not onnx", "not an ONNX model"),
    ("not ir", "not an OpenVINO IR OpenVINO can read"),
    ("other suffix", "does not run .txt"),
    ("inference precision", "inference_precision must be f32, bf16, f16 or None"),
    ("zero threads", "threads must be a whole number of at least 1, got 0"),
    ("fractional threads", "got 1.5"),
    ("precision", "not 'int4'"),
])
def test_bad_files_and_options_are_one_line_input_errors(tmp_path, case, fragment):
    path, options = _bad_case(tmp_path, case)
    with pytest.raises(InputError, match=fragment) as info:
        OpenVINORunner(path, **options)
    assert "\n" not in str(info.value)


def test_a_graph_openvino_cannot_convert_names_the_operator(tmp_path):
    node = helper.make_node("Mystery", ["images"], ["logits"], domain="com.example")
    path = _save(tmp_path / "custom.onnx", [node], [], opsets=(("", 17), ("com.example", 1)))
    with pytest.raises(InputError, match="OpenVINO cannot read it .*com.example.Mystery") as info:
        OpenVINORunner(path)
    assert "\n" not in str(info.value)


def test_a_run_openvino_rejects_is_a_one_line_check_failure(tmp_path):
    with OpenVINORunner(_conv(tmp_path / "tiny.onnx")) as runner:
        with pytest.raises(CheckFailed, match=r"OpenVINO failed on \(1, 3, 16, 16\)") as info:
            runner.run(_images(1, size=16))
    assert "\n" not in str(info.value) and "Exception from" not in str(info.value)


def test_a_closed_runner_refuses_to_run(tmp_path):
    runner = OpenVINORunner(_conv(tmp_path / "tiny.onnx"))
    runner.close()
    with pytest.raises(InputError, match="closed"):
        runner.run(_images(1))


def test_export_ir_refuses_a_path_without_xml_and_writes_nothing(tmp_path):
    with pytest.raises(InputError, match="must end in .xml"):
        export_ir(_conv(tmp_path / "tiny.onnx"), tmp_path / "out" / "model.bin")
    assert not (tmp_path / "out").exists()


def test_without_openvino_the_error_names_the_package(tmp_path, monkeypatch):
    import sys

    from segexport.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "openvino", None)  # what `import openvino` sees when it is not installed
    with pytest.raises(MissingDependencyError, match="openvino is not installed; pip install openvino"):
        OpenVINORunner(_conv(tmp_path / "tiny.onnx"))
