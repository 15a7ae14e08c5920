"""Engine tooling that needs no GPU: the one-line refusal, the trtexec line, profiles, records."""

from __future__ import annotations

import json
import shlex

import pytest
from cli_helpers import assert_one_line_error

from segexport.engine import engine_unavailable_reason, trtexec_command
from segexport.engine.profile import resolve_profile
from segexport.engine.record import engine_mismatch, read_engine_record
from segexport.errors import ConfigError, InputError, MissingDependencyError

REASON = engine_unavailable_reason()
no_engine_here = pytest.mark.skipif(REASON is None, reason="tensorrt and a CUDA device are present here")


@no_engine_here
def test_engine_command_without_tensorrt_exits_2_with_one_line(cli, conv_model, tmp_path):
    model = conv_model()
    result = cli("engine", model, "--max-batch", "4")
    assert_one_line_error(result, "TensorRT engines need", "trtexec --onnx=", "--maxShapes=images:4x3x16x16")
    named = [piece for piece in ("tensorrt package", "NVIDIA driver", "CUDA") if piece in result.stderr]
    assert named, result.stderr
    assert not (tmp_path / "model.plan").exists() and not (tmp_path / "model.json").exists()


@no_engine_here
def test_open_runner_on_an_engine_without_tensorrt_raises_missing_dependency(tmp_path):
    from segexport.runners import open_runner

    engine = tmp_path / "model.plan"
    engine.write_bytes(b"not an engine")
    with pytest.raises(MissingDependencyError, match="tensorrt"):
        open_runner(engine)


def test_trtexec_command_given_a_size_is_well_formed(tmp_path):
    line = trtexec_command(tmp_path / "m.int8.onnx", tmp_path / "m.int8.plan", min_batch=1, opt_batch=2,
                           max_batch=16, size=(64, 96))
    assert shlex.split(line) == [
        "trtexec", f"--onnx={tmp_path / 'm.int8.onnx'}", f"--saveEngine={tmp_path / 'm.int8.plan'}",
        "--stronglyTyped", "--minShapes=images:1x3x64x96", "--optShapes=images:2x3x64x96",
        "--maxShapes=images:16x3x64x96",
    ]


def test_trtexec_command_reads_the_model_and_quotes_paths(conv_model, tmp_path):
    model = conv_model("my model.onnx", size=(32, 48))
    line = trtexec_command(model, tmp_path / "my model.plan", max_batch=4, workspace_gb=2,
                           timing_cache=tmp_path / "timing.cache")
    args = shlex.split(line)
    assert args[:4] == ["trtexec", f"--onnx={model}", f"--saveEngine={tmp_path / 'my model.plan'}", "--stronglyTyped"]
    assert args[4:] == ["--minShapes=images:1x3x32x48", "--optShapes=images:1x3x32x48", "--maxShapes=images:4x3x32x48",
                        "--memPoolSize=workspace:2048M", f"--timingCacheFile={tmp_path / 'timing.cache'}"]


def test_static_model_gets_no_shape_flags_and_refuses_batch_options(conv_model, tmp_path):
    model = conv_model(batch=1)
    assert "Shapes" not in trtexec_command(model, tmp_path / "m.plan", max_batch=1)
    with pytest.raises(ConfigError, match="fixed at 1"):
        trtexec_command(model, tmp_path / "m.plan", max_batch=8)


def test_profile_of_a_dynamic_size_model_defaults_to_the_export_size(conv_model):
    model = conv_model(size=("h", "w"), metadata={"input_size": "[64, 32]", "input_divisor": "16"})
    profile = resolve_profile(model, max_batch=2, max_size=(128, 64))
    assert (profile.min, profile.opt, profile.max) == ((1, 3, 64, 32), (1, 3, 64, 32), (2, 3, 128, 64))
    with pytest.raises(ConfigError, match="multiples of 16"):
        resolve_profile(model, max_size=(100, 64))
    with pytest.raises(ConfigError, match="--min-size <= --opt-size <= --max-size"):
        resolve_profile(model, min_size=(128, 128))


def test_profile_refuses_sizes_for_a_fixed_size_model(conv_model):
    with pytest.raises(ConfigError, match="fixed at 16x16"):
        resolve_profile(conv_model(), opt_size=(32, 32))


def _record(version: str = "10.13.0", gpu: str = "NVIDIA H100 80GB HBM3", cc: str = "9.0") -> dict:
    return {"tensorrt_version": version, "gpu": {"name": gpu, "compute_capability": cc}, "onnx": "m.int8.onnx"}


def test_engine_mismatch_names_version_then_gpu_and_the_fix():
    here = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    assert engine_mismatch(_record(), "10.13.0", here) is None
    version = engine_mismatch(_record(version="10.9.0"), "10.13.0", here)
    assert "TensorRT 10.9.0" in version and "TensorRT 10.13.0 is installed" in version
    assert "segexport engine m.int8.onnx" in version
    gpu = engine_mismatch(_record(gpu="NVIDIA L4", cc="8.9"), "10.13.0", here)
    assert "NVIDIA L4 (compute 8.9)" in gpu and "this GPU is NVIDIA H100 80GB HBM3 (compute 9.0)" in gpu


def test_engine_without_its_record_is_refused(tmp_path):
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"\x00")
    with pytest.raises(InputError, match="model.json is missing"):
        read_engine_record(engine)
    (tmp_path / "model.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputError, match="not a segexport-engine/1 engine record"):
        read_engine_record(engine)
