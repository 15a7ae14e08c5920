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
        (("quantize", maskrcnn_export[0] / "model.onnx", "--int8", "--out", tmp_path / "q"), "instance networks"),
        (("predict", maskrcnn_checkpoint[0], image, "--out", tmp_path / "p"), "instance networks"),
        (("predict", maskrcnn_export[0] / "model.onnx", image, "--out", tmp_path / "p"), "instance networks"),
    ]
    for args, fragment in cases:
        assert_one_line_error(run_cli_in_process(capfd, *args), fragment)
    assert not (tmp_path / "b").exists() and not (tmp_path / "p").exists()
