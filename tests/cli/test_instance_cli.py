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
                      .replace("train_images = 1024", "train_images = 16").replace("val_images = 256", "val_images = 8"))
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
def maskrcnn_build(maskrcnn_checkpoint, tmp_path_factory):
    """The whole job on the tiny checkpoint: (build folder, exit code, its folder for JUnit and Triton)."""
    root = tmp_path_factory.mktemp("maskrcnn-build")
    result = run_cli("build", "maskrcnn", "--checkpoint", maskrcnn_checkpoint[0], "--fp16", "--int8", "--target", "all",
                     "--val-images", "8", "--calib-images", "8", "--out", root / "build", "--junit", root / "junit.xml",
                     "--triton-repo", root / "repo", "--no-progress")
    assert result.code in (0, 1), result.stderr  # an untrained model's drops are whatever this CPU gives
    return root / "build", result.code, root


@pytest.fixture(scope="module")
def maskrcnn_export(maskrcnn_build):
    """The build's export: its folder and the export summary (``segexport export --json``'s)."""
    out = maskrcnn_build[0]
    return out, json.loads((out / "rewrites.json").read_text())["export"]


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


def test_options_that_do_not_apply_to_instance_networks_are_refused(capfd, maskrcnn_export, tmp_path):
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (64, 64)).save(image)
    model = maskrcnn_export[0] / "model.onnx"
    cases = [
        (("predict", model, image, "--out", tmp_path / "p", "--crf"), "instance network"),
        (("predict", model, image, "--out", tmp_path / "p", "--min-score", "1.5"), "--min-score"),
        (("triton", maskrcnn_export[0], "--repo", tmp_path / "t", "--python-backend"), "instance network"),
    ]
    for args, fragment in cases:
        assert_one_line_error(run_cli_in_process(capfd, *args), fragment)
    assert not any((tmp_path / d).exists() for d in ("p", "t"))


def test_runners_return_the_padded_detections(maskrcnn_checkpoint, maskrcnn_export):
    import numpy as np

    from segexport.errors import InputError
    from segexport.export.verify_instances import match_detections
    from segexport.runners import open_runner

    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    found = {}
    for artifact, backend in ((maskrcnn_checkpoint[0], "torch"), (maskrcnn_export[0] / "model.onnx", "onnxruntime"),
                              (maskrcnn_export[0] / "model.onnx", "openvino")):
        with open_runner(artifact, backend=backend) as runner:
            assert runner.task == "instance"
            with pytest.raises(InputError, match="run_outputs"):
                runner.run(x)
            found[backend] = runner.run_outputs(x)
            assert runner.timed_run(x[:1]) > 0
        with pytest.raises(InputError, match="closed"):
            runner.run_outputs(x)
    names = ["boxes", "scores", "classes", "masks", "count"]
    for backend, outputs in found.items():
        assert list(outputs) == names, backend
        assert outputs["boxes"].shape[:1] == outputs["count"].shape == (3,)
        # Equal-scoring detections may come in either order: matched by class and box, not by slot.
        matched = match_detections([found["torch"][k] for k in names], [outputs[k] for k in names])
        assert matched["matched"] == matched["reference"] == matched["candidate"], (backend, matched)
    with pytest.raises(InputError, match="float32"):
        open_runner(maskrcnn_checkpoint[0], backend="torch", precision="fp16")


def test_build_judges_instance_rows_by_ap(capfd, maskrcnn_build):
    out, code, root = maskrcnn_build
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "instance" and report["pass"] == (code == 0)
    names = [row["name"] for row in report["variants"]]
    assert names[:6] == ["onnx", "openvino", "onnx-fp16", "onnx-int8-tensorrt", "onnx-int8-cpu", "openvino-int8"]
    assert "pytorch-fp16" not in names
    reference = report["reference"]
    assert set(AP_KEYS) <= set(reference) and "miou" in reference and "ap_drop_pts" not in reference
    for row in report["variants"]:
        if row.get("skipped"):
            continue
        drop = 100 * max(reference["mask_ap"] - row["mask_ap"], reference["box_ap"] - row["box_ap"])
        assert row["ap_drop_pts"] == pytest.approx(drop, abs=1e-9)
        assert row["pass"] == (drop <= row["budget_pts"] + 1e-9)
        assert row["latency_ms"]["p50"] > 0 and 0 <= row["agreement"] <= 1
    assert "mask AP" in (out / "report.md").read_text() and (out / "parity.png").is_file()
    assert "AP drop" in (root / "junit.xml").read_text() or report["pass"]
    config = (root / "repo" / "maskrcnn_onnx" / "config.pbtxt").read_text()
    assert 'name: "count"' in config and "reshape: { shape: [ ] }" in config
    verified = run_cli_in_process(capfd, "verify", str(out), "--json", "--no-progress")
    assert verified.code == code, verified.stderr
    again = json.loads(verified.stdout)
    for first, second in zip(report["variants"], again["variants"]):
        assert first.get("mask_ap") == second.get("mask_ap") and first["pass"] == second["pass"]


def test_predict_writes_detections_and_overlays(capfd, maskrcnn_export, tmp_path):
    from PIL import Image

    from segexport.data import open_dataset

    sample = open_dataset("synthetic", "val", size=(64, 64), seed=0, length=1)[0]
    Image.fromarray(sample.image).resize((96, 80)).save(tmp_path / "a.png")
    result = run_cli_in_process(capfd, "predict", str(maskrcnn_export[0] / "model.onnx"), str(tmp_path / "a.png"),
                                "--out", str(tmp_path / "p"), "--overlay", "--min-score", "0", "--json")
    assert result.code == 0, result.stderr
    record = json.loads(result.stdout.splitlines()[0])
    listed = json.loads(Path(record["detections"]).read_text())["detections"]
    assert record["objects"] == len(listed)
    assert [d["score"] for d in listed] == sorted((d["score"] for d in listed), reverse=True)
    for d in listed:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 96 and 0 <= y1 <= y2 <= 80
    assert Image.open(record["mask"]).size == Image.open(record["overlay"]).size == (96, 80)


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
