"""The backend and precision-target registries: everything that lists backends or targets reads them."""

from __future__ import annotations

import importlib
import json
from dataclasses import fields

import pytest
from cli_helpers import assert_one_line_error

from segexport.errors import ConfigError, InputError, UnknownNameError
from segexport.pipeline.options import resolve_targets, target_choices
from segexport.precision.targets import TARGETS, get_target
from segexport.recipe import Recipe
from segexport.runners import BACKENDS, artifact_backend, open_runner
from segexport.runners.registry import backends_for, version_packages
from segexport.verify.parity import int8_pays


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_names_a_runner_that_imports(name):
    backend = BACKENDS[name]
    module, _, attr = backend.opener.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert backend.kinds and backend.install_hint.startswith("pip install") and backend.row
    assert backend.version_package in version_packages()


@pytest.mark.parametrize("name", list(TARGETS))
def test_every_target_is_judged_by_a_recipe_budget_on_registered_backends(name):
    target = get_target(name)
    assert target.budget_key in {f.name for f in fields(Recipe)} and target.budget_key.startswith("budget_")
    assert all(b in BACKENDS for b in target.backends)
    assert target.filename == f"model.int8.{name}.onnx"
    assert ".onnx" in BACKENDS[target.judge_backend].kinds  # judged without a GPU


def test_target_names_and_files_are_unique():
    assert len({t.filename for t in TARGETS.values()}) == len(TARGETS)


def test_an_onnx_file_runs_on_every_backend_that_takes_onnx(tiny_build_dir):
    onnx = tiny_build_dir / "model.onnx"
    assert artifact_backend(onnx) == "onnxruntime"
    assert [b.name for b in backends_for(".onnx")] == ["onnxruntime", "openvino"]
    for backend in ("onnxruntime", "openvino"):
        with open_runner(onnx, backend=backend, threads=1) as runner:
            assert runner.backend == backend and runner.precision == "fp32" and runner.input_size == (64, 64)


def test_a_backend_that_cannot_run_the_kind_is_refused(tiny_build_dir):
    with pytest.raises(InputError, match=r"the openvino backend cannot run it \(checkpoint artifacts run on torch\)"):
        open_runner(tiny_build_dir / "reference", backend="openvino")
    with pytest.raises(UnknownNameError, match="unknown backend 'onnx'; use one of torch, onnxruntime, openvino"):
        open_runner(tiny_build_dir / "model.onnx", backend="onnx")


@pytest.mark.parametrize(("given", "expected"), [
    ("all", tuple(TARGETS)), ("both", tuple(TARGETS)), ("cpu", ("cpu",)),
    ("openvino,tensorrt", ("tensorrt", "openvino")), (" cpu , openvino ", ("cpu", "openvino")),
])
def test_target_option_resolves_in_registry_order(given, expected):
    assert resolve_targets(given) == expected


@pytest.mark.parametrize("given", ["gpu", "cpu,", "", "cpu,avx"])
def test_unknown_targets_are_refused_naming_the_choices(given):
    with pytest.raises(ConfigError, match="--target must be tensorrt, cpu, openvino"):
        resolve_targets(given)
    assert "all" in target_choices() and "both" in target_choices()


def _row(name, backend, precision, target, p50):
    return {"name": name, "backend": backend, "precision": precision, "target": target, "latency_ms": {"p50": p50}}


def test_int8_must_pay_on_the_backend_its_target_is_made_for():
    rows = [_row("onnx", "onnxruntime", "fp32", None, 1.0), _row("openvino", "openvino", "fp32", None, 2.0),
            _row("onnx-int8-tensorrt", "onnxruntime", "int8", "tensorrt", 4.0),
            _row("onnx-int8-cpu", "onnxruntime", "int8", "cpu", 0.5),
            _row("openvino-int8", "openvino", "int8", "openvino", 2.5),
            _row("trt-int8", "tensorrt", "int8", "tensorrt", 0.1)]
    int8_pays(rows)
    by = {r["name"]: r for r in rows}
    assert by["onnx-int8-cpu"]["speedup_vs_fp32"] == 2.0 and by["onnx-int8-cpu"]["int8_slower"] is False
    assert by["openvino-int8"]["speedup_vs_fp32"] == 0.8 and by["openvino-int8"]["int8_slower"] is True
    # TensorRT's Q/DQ model on ONNX Runtime is an accuracy proxy: its speed-up is shown, not judged.
    assert by["onnx-int8-tensorrt"]["speedup_vs_fp32"] == 0.25 and "int8_slower" not in by["onnx-int8-tensorrt"]
    assert "speedup_vs_fp32" not in by["trt-int8"]  # no FP32 engine row to compare with


def test_bench_runs_onnx_files_on_the_backend_asked_for(cli, tiny_build_dir):
    result = cli("bench", tiny_build_dir / "reference", tiny_build_dir / "model.onnx", "--backend", "openvino",
                 "--runs", "2", "--batch", "2", "--threads", "1", "--json")
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert [r["backend"] for r in rows] == ["torch", "openvino"]
    assert "openvino" in json.loads(result.stdout)["versions"]


def test_bench_backend_that_runs_no_given_artifact_is_bad_input(cli, tiny_build_dir):
    assert_one_line_error(cli("bench", tiny_build_dir / "reference", "--backend", "openvino"),
                          "--backend openvino runs .onnx, .xml artifacts and none was given")
    assert_one_line_error(cli("bench", tiny_build_dir / "model.onnx", "--backend", "cuda"), "unknown backend 'cuda'")


def test_triton_serves_openvino_rows_with_its_backend_and_the_verified_settings(tiny_build_dir):
    from segexport.deploy.triton import _variant_model, config_pbtxt
    from segexport.verify.manifest import VariantSpec

    spec = VariantSpec("openvino", "openvino", "fp32", None, "model.onnx", 0.1)
    model, path = _variant_model(tiny_build_dir, spec, "seg_openvino", None, [])
    config = config_pbtxt(model, 1, "test")
    assert path == tiny_build_dir / "model.onnx"
    assert 'backend: "openvino"' in config and 'default_model_filename: "model.onnx"' in config
    assert 'key: "NUM_STREAMS"' in config and "kind: KIND_CPU" in config and "platform:" not in config
    onnx_spec = VariantSpec("onnx", "onnxruntime", "fp32", None, "model.onnx", 0.1)
    onnx_config = config_pbtxt(_variant_model(tiny_build_dir, onnx_spec, "seg_onnx", None, [])[0], 1, "test")
    assert 'platform: "onnxruntime_onnx"' in onnx_config and "default_model_filename" not in onnx_config
