"""ONNX export of trained tiny models: ORT parity, metadata, labels output, dynamic axes."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from segexport.checkpoint import WEIGHTS, load_checkpoint
from segexport.data import SYNTHETIC_CLASSES
from segexport.errors import CheckFailed, ConfigError
from segexport.export.metadata import read_metadata, set_metadata
from segexport.export.onnx_export import (
    ORT_MAX_IR_VERSION,
    check_export_options,
    set_ir_version,
)
from segexport.export.verify_onnx import verify_onnx
from segexport.hashing import file_sha256
from segexport.models import build_model
from segexport.pipeline.export_stage import export_model
from segexport.runners.onnxruntime_runner import open_session, run_onnx


@pytest.fixture(scope="module")
def fcn8s_export(tiny_fcn8s_checkpoint, tmp_path_factory):
    """fcn8s at 64x64, dynamic batch, logits and labels."""
    out = tmp_path_factory.mktemp("export") / "fcn8s"
    return export_model(str(tiny_fcn8s_checkpoint), out=out, output="both")


@pytest.fixture(scope="module")
def deeplab_export(tiny_checkpoint, tmp_path_factory):
    """deeplabv3p at 64x64 with dynamic batch, height and width."""
    out = tmp_path_factory.mktemp("export") / "deeplabv3p"
    return export_model(str(tiny_checkpoint), out=out, dynamic_hw=True)


def _dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _images(n: int, h: int = 64, w: int = 64) -> np.ndarray:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(1)).numpy()


def test_file_loads_in_onnx_runtime_with_named_io(fcn8s_export):
    model = onnx.load(str(fcn8s_export.onnx_path))
    assert model.ir_version <= ORT_MAX_IR_VERSION
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["logits", "labels"]
    assert _dims(model.graph.input[0]) == ["batch", 3, 64, 64]
    session = ort.InferenceSession(str(fcn8s_export.onnx_path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "labels"]


def test_metadata_props(fcn8s_export, tiny_fcn8s_checkpoint):
    meta = read_metadata(fcn8s_export.onnx_path)
    _, config = load_checkpoint(tiny_fcn8s_checkpoint)
    assert meta["arch"] == "fcn8s"
    assert json.loads(meta["classes"]) == list(SYNTHETIC_CLASSES)
    assert json.loads(meta["mean"]) == list(config.preprocess.mean)
    assert json.loads(meta["std"]) == list(config.preprocess.std)
    assert meta["input_layout"] == "NCHW"
    assert json.loads(meta["input_size"]) == [64, 64]
    assert meta["opset"] == "18"
    assert meta["segexport_version"]
    assert meta["source_sha256"] == file_sha256(tiny_fcn8s_checkpoint / WEIGHTS)
    assert not [k for k in meta if k.startswith("onnxsim.")]


def test_onnx_runtime_agrees_with_pytorch(fcn8s_export):
    s = fcn8s_export.summary
    assert s["passed"] and s["problems"] == []
    assert s["agreement"] >= 0.9999
    assert s["max_logit_error"] < 1e-4
    assert s["agreement_vs_original"] is not None
    assert s["verification"]["images"] == 32
    written = json.loads(fcn8s_export.rewrites_path.read_text())
    assert written["export"]["agreement"] == s["agreement"]
    assert written["rewrites"][-1]["rule"] == "model"


def test_labels_output_is_int32_argmax_of_logits(fcn8s_export):
    session = open_session(fcn8s_export.onnx_path)
    logits, labels = session.run(["logits", "labels"], {"images": _images(3)})
    assert labels.dtype == np.int32
    assert labels.shape == (3, 64, 64)
    np.testing.assert_array_equal(labels, logits.argmax(1))
    assert fcn8s_export.summary["verification"]["labels"]["equals_logits_argmax"] is True


def test_dynamic_batch_gives_identical_per_image_results(fcn8s_export):
    session = open_session(fcn8s_export.onnx_path)
    x = torch.from_numpy(_images(4))
    one, four = run_onnx(session, x, 1), run_onnx(session, x, 4)
    np.testing.assert_array_equal(one["logits"], four["logits"])
    np.testing.assert_array_equal(one["labels"], four["labels"])
    assert fcn8s_export.summary["verification"]["batch"]["identical"] is True


def test_verification_fails_against_a_different_model(fcn8s_export):
    torch.manual_seed(123)
    other = build_model("fcn8s", size="tiny", num_classes=len(SYNTHETIC_CLASSES)).eval()
    report = verify_onnx(fcn8s_export.onnx_path, other, torch.from_numpy(_images(2)))
    assert report["passed"] is False
    assert report["agreement"] < 0.9999
    assert "argmax agreement" in report["problems"][0]


def test_dynamic_hw_verified_at_three_sizes(deeplab_export):
    s = deeplab_export.summary
    assert s["passed"]
    sizes = [tuple(size) for size in s["sizes_checked"]]
    assert len(set(sizes)) == 3 and sizes[0] == (64, 64)
    for run in s["verification"]["sizes"]:
        assert run["agreement"] >= 0.9999 and run["max_logit_error"] < 1e-4
    model = onnx.load(str(deeplab_export.onnx_path))
    assert _dims(model.graph.input[0]) == ["batch", 3, "height", "width"]
    (logits,) = open_session(deeplab_export.onnx_path).run(None, {"images": _images(2, 48, 112)})
    assert logits.shape == (2, len(SYNTHETIC_CLASSES), 48, 112)


def test_dynamic_hw_refuses_a_model_fixed_to_one_size():
    # PSPNet's pyramid pooling becomes fixed pooling for 64x64 (8x8 features, bins 3 and 6
    # not dividing): a dynamic-size graph of it would be wrong at any other size.
    with pytest.raises(ConfigError, match="--dynamic-hw"):
        export_model("pspnet", size="tiny", input_size=(64, 64), dynamic_hw=True, images=2)


def test_ir_version_lowered_to_what_onnx_runtime_loads():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    assert model.ir_version > ORT_MAX_IR_VERSION  # ONNX 1.23 writes IR 14 by default
    assert set_ir_version(model) == ORT_MAX_IR_VERSION
    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_set_metadata_drops_simplifier_props():
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    onnx.helper.set_model_props(model, {"onnxsim.removed_nodes": "a", "keep": "1"})
    set_metadata(model, {"arch": "fcn8s", "size": [64, 64]})
    assert {p.key: p.value for p in model.metadata_props} == {"keep": "1", "arch": "fcn8s", "size": "[64, 64]"}


@pytest.mark.parametrize("opset, output", [(17, "logits"), (24, "logits"), (18, "scores")])
def test_bad_export_options(opset, output):
    with pytest.raises(ConfigError):
        check_export_options(opset, output)


@pytest.mark.slow
def test_static_batch_labels_only_without_simplifier(tiny_fcn8s_checkpoint, tmp_path):
    result = export_model(str(tiny_fcn8s_checkpoint), out=tmp_path, dynamic_batch=False,
                          output="labels", simplify=False, images=8)
    model = onnx.load(str(result.onnx_path))
    assert _dims(model.graph.input[0]) == [1, 3, 64, 64]
    assert [o.name for o in model.graph.output] == ["labels"]
    s = result.summary
    assert s["passed"] and s["agreement"] >= 0.9999 and s["max_logit_error"] is None
    assert s["verification"]["batch"] is None and s["nodes"]["exported"] == s["nodes"]["final"]


@pytest.mark.slow
def test_failed_verification_writes_the_summary_then_raises(tiny_fcn8s_checkpoint, tmp_path, monkeypatch):
    from segexport.pipeline import export_stage as stage

    real = stage.verify_onnx
    # A budget no graph can meet stands in for a graph that disagrees with PyTorch.
    monkeypatch.setattr(stage, "verify_onnx", lambda *a, **kw: real(*a, **{**kw, "min_agreement": 1.5}))
    with pytest.raises(CheckFailed, match="argmax agreement"):
        export_model(str(tiny_fcn8s_checkpoint), out=tmp_path, images=2)
    written = json.loads((tmp_path / "rewrites.json").read_text())
    assert written["export"]["passed"] is False and written["export"]["problems"]
    assert (tmp_path / "model.onnx").is_file()
