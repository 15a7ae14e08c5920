"""TensorRT engines on a real GPU: build (FP16 and INT8 Q/DQ), parity with ONNX Runtime, refusal.

Skipped, with the reason, where tensorrt or a CUDA device is missing.
"""

from __future__ import annotations

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
