"""Instance networks through the CLI: train, evaluate and export a tiny Mask R-CNN."""

import json
from pathlib import Path

import onnx
import pytest

import segexport
from segexport.instance_metrics import AP_KEYS
from tests.cli_helpers import assert_one_line_error, run_cli, run_cli_in_process

RECIPE_FILE = Path(segexport.__file__).parent / "recipes" / "maskrcnn.toml"


@pytest.fixture(scope="module")
def maskrcnn_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("maskrcnn")
    recipe = root / "tiny.toml"
    recipe.write_text(RECIPE_FILE.read_text().replace("epochs = 8", "epochs = 1")
                      .replace("train_images = 1024", "train_images = 16").replace("val_images = 64", "val_images = 8"))
    result = run_cli("train", "maskrcnn", "--recipe", recipe, "--out", root / "ckpt", "--json", "--no-progress")
    assert result.code == 0, result.stderr
    return root / "ckpt", json.loads(result.stdout)


def test_train_reports_ap_and_evaluate_reproduces_it(capfd, maskrcnn_checkpoint):
    out, metrics = maskrcnn_checkpoint
    assert set(AP_KEYS) <= set(metrics) and "miou" in metrics
    history = json.loads((out / "model.json").read_text())["training"]["history"]
    assert len(history) == 1 and "val_mask_ap50" in history[0]
    result = run_cli_in_process(capfd, "evaluate", str(out), "--json", "--no-progress")
    assert result.code == 0, result.stderr
    again = json.loads(result.stdout)
    assert all(again[k] == pytest.approx(metrics[k], abs=1e-9) for k in (*AP_KEYS, "miou"))


@pytest.fixture(scope="module")
def maskrcnn_export(maskrcnn_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("maskrcnn-export")
    result = run_cli("export", maskrcnn_checkpoint[0], "--out", out, "--images", "8", "--json")
    assert result.code == 0, result.stderr
    return out, json.loads(result.stdout)


def test_export_matches_pytorch_detections(maskrcnn_export):
    tmp_path, summary = maskrcnn_export
    assert summary["task"] == "instance" and summary["passed"]
    for batch in ("batch_1", "batch_4"):
        found = summary["verification"][batch]
        assert found["matched"] == found["reference"] == found["candidate"]
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert props["task"] == "instance" and json.loads(props["outputs"]) == ["boxes", "scores", "classes", "masks", "count"]


def test_semantic_only_export_options_are_refused(capfd, maskrcnn_checkpoint, tmp_path):
    out, _ = maskrcnn_checkpoint
    result = run_cli_in_process(capfd, "export", str(out), "--out", str(tmp_path), "--dynamic-hw")
    assert_one_line_error(result, "--dynamic-hw", "instance network")


def test_commands_not_yet_for_instance_networks_say_so(capfd, maskrcnn_checkpoint, maskrcnn_export, tmp_path):
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (64, 64)).save(image)
    cases = [
        (("build", "maskrcnn", "--out", tmp_path / "b"), "does not verify instance networks"),
        (("predict", maskrcnn_checkpoint[0], image, "--out", tmp_path / "p"), "instance networks"),
        (("quantize", maskrcnn_export[0] / "model.onnx", "--int8", "--target", "openvino", "--out", tmp_path / "q"),
         "judged on ONNX Runtime"),
        (("predict", maskrcnn_export[0] / "model.onnx", image, "--out", tmp_path / "p"), "instance networks"),
    ]
    for args, fragment in cases:
        assert_one_line_error(run_cli_in_process(capfd, *args), fragment)
    assert not any((tmp_path / d).exists() for d in ("b", "p", "q"))


@pytest.mark.parametrize("precision", ["--fp16", "--int8"])
def test_quantize_keeps_geometry_fp32_and_judges_by_ap(capfd, maskrcnn_export, tmp_path, precision):
    model = maskrcnn_export[0] / "model.onnx"
    result = run_cli_in_process(capfd, "quantize", model, precision, "--out", tmp_path, "--val-images", "8",
                                *(["--calib-images", "8"] if precision == "--int8" else []), "--json")
    assert result.code in (0, 1), result.stderr
    summary = json.loads(result.stdout)
    assert summary["accuracy"]["metric"] == "AP" and summary["accuracy"]["images"] == 8
    assert set(summary["accuracy"]["drops"]) == {"mask_ap", "box_ap"}
    assert summary["passed"] == (result.code == 0)
    written = onnx.load(str(tmp_path / Path(summary["output"]).name))
    producers = {out: n for n in written.graph.node for out in n.output}
    types = {v.name: v.type.tensor_type.elem_type for v in
             onnx.shape_inference.infer_shapes(written).graph.value_info}
    geometry = [n for n in written.graph.node if n.op_type in ("NonMaxSuppression", "RoiAlign", "TopK")]
    assert len(geometry) >= 5
    # Coordinates and scores reach suppression, RoIAlign and top-k in float32, never straight from
    # a dequantize or an FP16 tensor (RoIAlign's feature input may be the quantized features).
    coordinates = {"NonMaxSuppression": [0, 1], "RoiAlign": [1], "TopK": [0]}
    for node in geometry:
        for i in coordinates[node.op_type]:
            data = node.input[i]
            assert producers.get(data) is None or producers[data].op_type != "DequantizeLinear", node.name
            assert types.get(data, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT, node.name
    ops = {n.op_type for n in written.graph.node}
    assert ("QuantizeLinear" in ops) == (precision == "--int8")
