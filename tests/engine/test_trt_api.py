"""The tensorrt adapter and the decisions around it, without a GPU: one importing module, the wheel
hint, broken installs, the Builder/Runtime probe, LOCAL_RANK's device, a missing execution context."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from engine.fake_trt import failing_factory, fake_trt

import segexport
from segexport.distributed import local_device_index
from segexport.engine import trt_api
from segexport.engine.availability import unavailable_reason
from segexport.errors import ConfigError, InputError, MissingDependencyError
from segexport.precision.trt_cache import cache_trt_version, installed_trt_version
from segexport.runners.tensorrt_runner import TensorRTRunner, check_device_index

PACKAGE = Path(segexport.__file__).parent
IMPORTERS = ("import_module", "__import__", "find_spec")


def _imports_tensorrt(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "tensorrt" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tensorrt" and node.level == 0:
            return True
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in IMPORTERS:
            if node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "tensorrt":
                return True
    return False


def test_only_the_adapter_imports_tensorrt():
    importers = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                       if _imports_tensorrt(ast.parse(path.read_text(), str(path))))
    assert importers == ["engine/trt_api.py"]


@pytest.mark.parametrize(("cuda", "line"), [("12.8", "pip install tensorrt-cu12"), ("13.0", "pip install tensorrt-cu13"),
                                            ("11.8", "pip install tensorrt-cu11"), (None, "pip install tensorrt")])
def test_install_hint_names_the_wheel_of_torchs_cuda(cuda, line):
    assert trt_api.install_hint(cuda) == line


def test_missing_tensorrt_names_the_matching_wheel(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` now fails as if not installed
    monkeypatch.setattr(trt_api, "torch_cuda_version", lambda: "12.4")
    assert trt_api.import_problem() == "the tensorrt package is not installed (pip install tensorrt-cu12)"
    with pytest.raises(MissingDependencyError, match="tensorrt-cu12"):
        trt_api.tensorrt_module()


@pytest.mark.parametrize(("raised", "said"), [
    ("OSError('libnvinfer.so.10: cannot open shared object file')", "cannot load its libraries (libnvinfer.so.10"),
    ("RuntimeError('CUDA initialization failed')", "is broken (RuntimeError: CUDA initialization failed)"),
    ("ImportError('libcudart.so.13: cannot open')", "does not import (libcudart.so.13"),
])
def test_a_broken_tensorrt_install_is_one_line_and_does_not_break_quantize(tmp_path, monkeypatch, raised, said):
    (tmp_path / "tensorrt.py").write_text(f"raise {raised}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    problem = trt_api.import_problem()
    assert said in problem and "\n" not in problem and "pip install tensorrt" in problem
    assert trt_api.tensorrt_version() is None
    assert installed_trt_version() == (10, 0, 0)  # `quantize --int8` writes its cache header, no traceback


def test_calibration_cache_header_is_for_tensorrt_10_only():
    assert cache_trt_version(None) == (10, 0, 0)
    assert cache_trt_version("10.13.0.35") == (10, 13, 0)
    assert cache_trt_version("11.1.0.7") == (10, 0, 0)  # TensorRT 11 reads no calibration cache


def test_probe_names_tensorrts_own_reason_for_a_builder_it_cannot_create(monkeypatch):
    monkeypatch.setattr(trt_api, "torch_cuda_version", lambda: "12.8")
    trt = fake_trt(builder=failing_factory("CUDA initialization failure with error: 35"), version="11.1.0")
    problem = trt_api.runtime_problem(trt)
    assert problem.startswith("TensorRT 11.1.0 cannot create a trt.Builder (CUDA initialization failure with error: 35)")
    assert "update the NVIDIA driver" in problem and "pip install tensorrt-cu12" in problem and "\n" not in problem


def test_probe_checks_the_runtime_too_and_passes_when_both_can_be_made():
    assert trt_api.runtime_problem(fake_trt()) is None
    trt = fake_trt(runtime=failing_factory("Unsupported SM: 0x601", exc=None))
    assert "cannot create a trt.Runtime (Unsupported SM: 0x601)" in trt_api.runtime_problem(trt)
    trt = fake_trt(builder=lambda logger: (_ for _ in ()).throw(TypeError("factory function returned nullptr")))
    assert "cannot create a trt.Builder (factory function returned nullptr)" in trt_api.runtime_problem(trt)


def test_availability_probes_only_when_nothing_else_is_missing():
    def must_not_probe():
        raise AssertionError("probed without the package, driver and device")

    missing = unavailable_reason("the tensorrt package is not installed (pip install tensorrt)", None, None,
                                 must_not_probe)
    assert missing.startswith("TensorRT engines need") and "pip install tensorrt" in missing
    assert unavailable_reason(None, None, None, lambda: None) is None
    broken = unavailable_reason(None, None, None, lambda: "TensorRT 11.1.0 cannot create a trt.Builder (x)")
    assert broken == "TensorRT is installed but cannot run here: TensorRT 11.1.0 cannot create a trt.Builder (x)"


def test_local_rank_selects_the_device():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert local_device_index(env) == 1
    import torch

    assert local_device_index({}) == (torch.cuda.current_device() if torch.cuda.is_available() else 0)
    with pytest.raises(ConfigError, match="launch with torchrun"):
        local_device_index({"LOCAL_RANK": "1"})


def test_open_runner_builds_the_tensorrt_runner_on_local_ranks_gpu(tmp_path, monkeypatch):
    import segexport.engine.availability as availability
    import segexport.runners.tensorrt_runner as tensorrt_runner
    from segexport.runners import open_runner

    made = {}

    class Recording:
        def __init__(self, path, *, precision=None, device_index=None):
            made.update(path=path, precision=precision, device_index=device_index)

    monkeypatch.setattr(availability, "engine_unavailable_reason", lambda: None)
    monkeypatch.setattr(tensorrt_runner, "TensorRTRunner", Recording)
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"\x00")
    open_runner(engine, precision="int8")
    assert made == {"path": engine, "precision": "int8", "device_index": 1}


def test_a_device_index_beyond_the_visible_gpus_is_a_config_error(tmp_path):
    check_device_index(tmp_path / "m.plan", 1, 2)
    with pytest.raises(ConfigError, match=r"CUDA device 1 does not exist here \(1 visible\).*--nproc-per-node 1"):
        check_device_index(tmp_path / "m.plan", 1, 1)


class _Engine:
    def __init__(self, context):
        self._context = context

    def create_execution_context(self):
        return self._context


def _runner_loading(tmp_path, engine, error: str) -> TensorRTRunner:
    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, blob):
            self.logger.log(1, error)
            return engine

    runner = TensorRTRunner.__new__(TensorRTRunner)  # only _load's decisions are tested, nothing runs
    runner.artifact, runner._closed = tmp_path / "model.plan", False
    runner._load(fake_trt(runtime=Runtime), b"engine bytes")
    return runner


def test_no_execution_context_is_reported_when_loading_not_as_closed(tmp_path):
    with pytest.raises(InputError, match=r"could not create an execution context \(out of device memory\); "
                                         r"free GPU memory .* smaller --max-batch"):
        _runner_loading(tmp_path, _Engine(None), "out of device memory")
    with pytest.raises(InputError, match=r"cannot deserialise it \(version tag mismatch\); rebuild it"):
        _runner_loading(tmp_path, None, "version tag mismatch")


def test_a_closed_runner_says_so(tmp_path):
    runner = TensorRTRunner.__new__(TensorRTRunner)
    runner.artifact, runner._closed = tmp_path / "model.plan", False
    runner.close()
    with pytest.raises(InputError, match="the runner was closed"):
        runner.run(None)
