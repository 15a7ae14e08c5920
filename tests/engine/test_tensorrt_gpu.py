"""TensorRT engines on a real GPU: build (FP16 and INT8 Q/DQ), parity with ONNX Runtime, refusal.

Skipped, with the reason, where tensorrt or a CUDA device is missing.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from segexport.engine import build_engine, engine_unavailable_reason
from segexport.engine.record import read_engine_record
from segexport.errors import InputError

REASON = engine_unavailable_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.trt, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

# Engine vs ONNX Runtime on the same graph: FP16 kernels and INT8 rounding may move a few border pixels.
MIN_AGREEMENT = {"fp16": 0.99, "int8": 0.98}


@pytest.fixture(scope="module")
def engines(precision_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("engines")
    cache = out / "timing.cache"
    return {p: build_engine(precision_models[p], out / f"model.{p}.plan", max_batch=4, workspace_gb=1,
                            timing_cache=cache) for p in ("fp16", "int8")}


def _images(count: int) -> np.ndarray:
    import torch

    from segexport.data import Preprocess, load_arrays, normalize_batch, open_dataset

    pre = Preprocess(size=(64, 64))
    images, _ = load_arrays(open_dataset("synthetic", "val", size=(64, 64), seed=0, length=count), pre)
    return normalize_batch(torch.from_numpy(images), pre).numpy()


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_build_writes_engine_and_record(engines, precision_models, precision):
    import tensorrt as trt
    import torch

    record = read_engine_record(engines[precision])
    assert engines[precision].stat().st_size > 0
    assert record["precision"] == precision
    assert record["tensorrt_version"] == trt.__version__
    assert record["gpu"]["name"] == torch.cuda.get_device_name(0)
    assert record["settings"]["strongly_typed"] is True
    assert record["settings"]["profile"]["max"] == [4, 3, 64, 64]
    assert record["metadata"]["arch"] == "deeplabv3p"
    assert "--stronglyTyped" in record["trtexec"]
    assert (engines[precision].parent / "timing.cache").stat().st_size > 0


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engine_matches_onnxruntime_on_the_same_graph(engines, precision_models, precision):
    from segexport.runners import open_runner

    images = _images(6)  # more than the profile's max batch of 4: the runner runs two chunks
    with open_runner(engines[precision]) as trt_runner, open_runner(precision_models[precision]) as ort_runner:
        assert trt_runner.backend == "tensorrt" and trt_runner.precision == precision
        got, want = trt_runner.run(images), ort_runner.run(images)
        seconds = trt_runner.timed_run(images[:4])
    assert got.shape == want.shape == (6, 8, 64, 64) and got.dtype == np.float32
    agreement = float((got.argmax(1) == want.argmax(1)).mean())
    assert agreement >= MIN_AGREEMENT[precision], agreement
    assert 0 < seconds < 10


def test_runner_refuses_an_engine_of_another_version_or_gpu(engines, tmp_path, edit_record):
    from segexport.runners.tensorrt_runner import TensorRTRunner

    engine = tmp_path / "copy.plan"
    shutil.copy(engines["int8"], engine)
    shutil.copy(engines["int8"].with_suffix(".json"), engine.with_suffix(".json"))
    edit_record(engine, tensorrt_version="9.0.0")
    with pytest.raises(InputError, match=r"built with TensorRT 9\.0\.0 but TensorRT .* is installed"):
        TensorRTRunner(engine)
    record = read_engine_record(engines["int8"])
    edit_record(engine, tensorrt_version=record["tensorrt_version"],
                gpu={"name": "NVIDIA Imaginary GPU", "compute_capability": "1.0"})
    with pytest.raises(InputError, match="built for NVIDIA Imaginary GPU"):
        TensorRTRunner(engine)
    with pytest.raises(InputError, match="precision is int8, not fp16"):
        TensorRTRunner(engines["int8"], precision="fp16")


def test_record_names_its_engine_and_the_timing_cache_it_used(engines):
    import hashlib

    fp16, int8 = (read_engine_record(engines[p]) for p in ("fp16", "int8"))
    assert fp16["engine_sha256"] == hashlib.sha256(engines["fp16"].read_bytes()).hexdigest()
    assert fp16["settings"]["timing_cache_status"] == "new"  # built first, into an empty folder
    assert int8["settings"]["timing_cache_status"] == "reused"
    key = json.loads((engines["fp16"].parent / "timing.cache.json").read_text())
    assert key == {"tensorrt_version": fp16["tensorrt_version"], "gpu": fp16["gpu"]}


def test_corrupt_timing_cache_is_replaced_and_the_build_succeeds(conv_model, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"\x00not a timing cache" * 64)
    engine = build_engine(conv_model(), tmp_path / "m.plan", max_batch=2, workspace_gb=1, timing_cache=cache)
    assert read_engine_record(engine)["settings"]["timing_cache_status"].startswith("replaced:")
    again = build_engine(conv_model(), tmp_path / "m2.plan", max_batch=2, workspace_gb=1, timing_cache=cache)
    assert read_engine_record(again)["settings"]["timing_cache_status"] == "reused"


def _conv_reference(images: np.ndarray, model) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    weight = numpy_helper.to_array(onnx.load(str(model)).graph.initializer[0])[:, :, 0, 0]
    return np.einsum("oc,nchw->nohw", weight, images)


def test_static_batch_engine_pads_the_last_chunk(conv_model, tmp_path):
    from segexport.runners import open_runner

    model = conv_model(batch=2)
    engine = build_engine(model, tmp_path / "static.plan", workspace_gb=1)
    images = np.random.default_rng(1).normal(size=(3, 3, 16, 16)).astype(np.float32)
    with open_runner(engine) as runner:
        assert runner.fixed_batch == 2
        got = runner.run(images)
    np.testing.assert_allclose(got, _conv_reference(images, model), rtol=1e-2, atol=1e-2)


def test_dynamic_shape_engine_runs_every_size_of_its_profile(conv_model, tmp_path):
    from segexport.runners import open_runner

    model = conv_model(size=("h", "w"), metadata={"input_size": "[16, 16]"})
    engine = build_engine(model, tmp_path / "dynamic.plan", max_batch=4, min_size=(16, 16), max_size=(32, 48),
                          workspace_gb=1)
    rng = np.random.default_rng(2)
    with open_runner(engine) as runner:
        for shape in [(1, 3, 16, 16), (4, 3, 32, 48), (2, 3, 24, 16)]:
            images = rng.normal(size=shape).astype(np.float32)
            np.testing.assert_allclose(runner.run(images), _conv_reference(images, model), rtol=1e-2, atol=1e-2)
        with pytest.raises(InputError, match="outside the engine's profile"):
            runner.run(np.zeros((1, 3, 64, 64), np.float32))
