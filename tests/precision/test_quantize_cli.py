"""``segexport quantize`` as users run it: files, JSON summary, warnings and one-line errors."""

from __future__ import annotations

import json

import numpy as np
from cli_helpers import assert_one_line_error
from PIL import Image


def _images(folder, count, broken=0):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (50 + i, 70, 3), dtype=np.uint8)).save(folder / f"img{i}.jpg")
    for i in range(broken):
        (folder / f"broken{i}.png").write_bytes(b"\x89PNG but not really")
    return folder


def test_int8_cpu_from_an_image_folder_writes_the_files_and_warns_of_a_shortfall(cli, fcn8s_onnx, tmp_path):
    calib = _images(tmp_path / "calib", 3, broken=1)
    out = tmp_path / "out"
    # --budget 100: no drop exceeds it, so the exit code does not hang on what this CPU trained
    result = cli("quantize", fcn8s_onnx, "--int8", "--target", "cpu", "--calib", calib, "--calib-images", "5",
                 "--method", "minmax", "--val-images", "8", "--budget", "100", "--out", out, "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["output"] == str(out / "model.int8.cpu.onnx") and summary["model"] == str(fcn8s_onnx)
    assert summary["passed"] is True and summary["summary_file"] == str(out / "quantize.json")
    assert summary["calibration"]["images"] | {"used": 3, "requested": 5, "skipped": 1} == summary["calibration"]["images"]
    assert {p.name for p in out.iterdir()} == {"model.int8.cpu.onnx", "calibration.json", "quantize.json",
                                             ".segexport-files.json"}
    warnings = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: calibration: 3 usable images of 5 asked")


def test_fp16_prints_a_table(cli, fcn8s_onnx, tmp_path):
    result = cli("quantize", fcn8s_onnx, "--fp16", "--val-images", "8", "--budget", "100", "--out", tmp_path)
    assert result.code == 0, result.stderr
    assert "model.fp16.onnx" in result.stdout and "passed" in result.stdout and "true half" in result.stdout


def test_empty_calibration_folder_is_one_line(cli, fcn8s_onnx, tmp_path):
    (tmp_path / "calib").mkdir()
    result = cli("quantize", fcn8s_onnx, "--int8", "--calib", tmp_path / "calib", "--out", tmp_path / "out")
    assert_one_line_error(result, str(tmp_path / "calib"), "empty")


def test_folder_of_non_images_is_one_line(cli, fcn8s_onnx, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "readme.txt").write_text("not an image")
    result = cli("quantize", fcn8s_onnx, "--int8", "--calib", folder, "--out", tmp_path / "out")
    assert_one_line_error(result, str(folder), "is an image")


def test_model_with_two_inputs_is_one_line(cli, conv_relu, tmp_path):
    model = conv_relu(tmp_path / "two.onnx", inputs=2)
    assert_one_line_error(cli("quantize", model, "--int8"), str(model), "2 inputs", "one image input")


def test_file_that_is_not_onnx_is_one_line(cli, tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"\x00\x01 definitely not protobuf \xff" * 20)
    assert_one_line_error(cli("quantize", bogus, "--fp16"), str(bogus), "not an ONNX model")


def test_missing_model_and_missing_precision_are_one_line(cli, fcn8s_onnx, tmp_path):
    assert_one_line_error(cli("quantize", tmp_path / "none.onnx", "--int8"), "none.onnx", "not found")
    assert_one_line_error(cli("quantize", fcn8s_onnx), "exactly one of --int8 and --fp16")
