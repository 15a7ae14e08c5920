"""Runners on real artifacts: a tiny trained checkpoint and its ONNX export, plus hand-made graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from segexport.data import Preprocess, load_arrays, normalize_batch, open_dataset
from segexport.errors import InputError, MissingDependencyError
from segexport.runners import open_runner
from segexport.runners.onnxruntime_runner import OnnxRuntimeRunner, choose_providers
from segexport.runners.torch_runner import TorchRunner


@pytest.fixture(scope="module")
def val_images() -> np.ndarray:
    """Six normalised synthetic val images at 64x64, as every runner gets them."""
    import torch

    preprocess = Preprocess(size=(64, 64))
    images, _ = load_arrays(open_dataset("synthetic", "val", size=(64, 64), length=6), preprocess)
    return normalize_batch(torch.from_numpy(images), preprocess).numpy()


def _fixed_batch_conv(path, batch: int):
    """A Conv (3 -> 4 channels, 3x3) graph whose input batch is fixed to ``batch``."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["logits"], pads=[1, 1, 1, 1])], "fixed",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 4, 8, 8])], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_torch_and_onnxruntime_agree_on_a_real_export(tiny_build_dir, val_images):
    with open_runner(tiny_build_dir / "reference") as torch_runner, \
            open_runner(tiny_build_dir / "model.onnx") as ort_runner:
        assert (torch_runner.backend, ort_runner.backend) == ("torch", "onnxruntime")
        assert (torch_runner.precision, ort_runner.precision) == ("fp32", "fp32")
        assert torch_runner.input_size == ort_runner.input_size == (64, 64)
        assert ort_runner.fixed_batch is None and "CPUExecutionProvider" in ort_runner.providers
        expected = torch_runner.run(val_images)
        got = ort_runner.run(val_images)
        single = ort_runner.run(val_images[:1])
    assert expected.shape == got.shape == (6, 8, 64, 64)
    assert expected.dtype == got.dtype == np.float32
    assert float(np.abs(expected - got).max()) < 1e-3
    assert float((expected.argmax(1) == got.argmax(1)).mean()) >= 0.999
    np.testing.assert_allclose(single[0], got[0], atol=1e-5)


def test_int8_graph_precision_is_read_from_the_graph(tiny_build_dir):
    with open_runner(tiny_build_dir / "model.int8.cpu.onnx") as runner:
        assert runner.precision == "int8"


def test_torch_fp16_runs_in_half_and_returns_float32(tiny_build_dir, val_images):
    with TorchRunner(tiny_build_dir / "reference") as full, \
            TorchRunner(tiny_build_dir / "reference", precision="fp16", threads=1) as half:
        assert "true half" in half.device
        expected, got = full.run(val_images), half.run(val_images)
    assert got.dtype == np.float32 and got.shape == expected.shape
    diff = float(np.abs(expected - got).max())
    # Half arithmetic changes the logits, a little: relative to their scale, since how large the
    # logits (and how close their ties) are depends on the weights this CPU trained.
    assert 0.0 < diff < 0.05 * float(np.abs(expected).max())


def test_a_fixed_batch_is_honoured_by_padding_the_last_chunk(tmp_path):
    path = _fixed_batch_conv(tmp_path / "fixed.onnx", batch=2)
    images = np.random.default_rng(1).normal(size=(3, 3, 8, 8)).astype(np.float32)
    with OnnxRuntimeRunner(path) as runner:
        assert runner.fixed_batch == 2 and runner.input_size == (8, 8)
        out = runner.run(images)
        first = runner.run(images[:2])
        last = runner.run(np.concatenate([images[2:], images[2:]]))
    assert out.shape == (3, 4, 8, 8)
    np.testing.assert_array_equal(out[:2], first)
    np.testing.assert_array_equal(out[2], last[0])


def test_gpu_providers_come_first_when_available():
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider", "TensorrtExecutionProvider"]) == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_missing_tensorrt_backend_names_what_to_install(tmp_path):
    from segexport.engine.availability import engine_unavailable_reason

    if engine_unavailable_reason() is None:
        pytest.skip("TensorRT and a CUDA device are available here: nothing is missing")
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"not an engine")
    with pytest.raises(MissingDependencyError, match="pip install tensorrt") as info:
        open_runner(engine)
    assert "\n" not in str(info.value) and str(engine) in str(info.value)


@pytest.mark.parametrize(("name", "fragment"), [("model.txt", "unknown artifact kind '.txt'"),
                                                ("missing.onnx", "not found")])
def test_unknown_or_missing_artifacts_are_one_line_input_errors(tmp_path, name, fragment):
    if name.endswith(".txt"):
        (tmp_path / name).write_text("x")
    with pytest.raises(InputError, match=fragment) as info:
        open_runner(tmp_path / name)
    assert "\n" not in str(info.value)


def test_a_backend_or_precision_the_artifact_cannot_take_is_refused(tiny_build_dir):
    with pytest.raises(InputError, match="the torch backend cannot run it"):
        open_runner(tiny_build_dir / "model.onnx", backend="torch")
    with pytest.raises(InputError, match="fp32 or fp16, not 'int8'"):
        open_runner(tiny_build_dir / "reference", precision="int8")


def test_a_closed_runner_refuses_to_run(tiny_build_dir, val_images):
    runner = open_runner(tiny_build_dir / "model.onnx")
    runner.close()
    with pytest.raises(InputError, match="closed"):
        runner.run(val_images)
