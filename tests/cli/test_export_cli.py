"""``segexport export`` as users run it: files written, JSON summary, one-line errors."""

from __future__ import annotations

import json

from cli_helpers import assert_one_line_error


def test_export_checkpoint_writes_verified_files(cli, tiny_checkpoint, tmp_path):
    out = tmp_path / "export"
    result = cli("export", tiny_checkpoint, "--out", out, "--images", "8", "--json")
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    assert (out / "model.onnx").is_file() and (out / "rewrites.json").is_file()
    assert summary["onnx"] == str(out / "model.onnx")
    assert summary["arch"] == "deeplabv3p" and summary["passed"] is True
    assert summary["agreement"] >= 0.9999
    assert summary["input_size"] == [64, 64] and summary["dynamic_batch"] is True
    written = json.loads((out / "rewrites.json").read_text())
    assert written["export"]["agreement"] == summary["agreement"]


def test_missing_checkpoint_folder_is_one_line(cli, tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    assert_one_line_error(cli("export", missing), str(missing), "not found")


def test_input_size_not_a_multiple_of_the_stride_is_one_line(cli, tiny_fcn8s_checkpoint):
    result = cli("export", tiny_fcn8s_checkpoint, "--input-size", "100x100")
    assert_one_line_error(result, "100x100", "multiple of 32", "96x96", "128x128")


def test_input_size_below_the_smallest_is_one_line(cli, tmp_path):
    result = cli("export", "deconvnet", "--input-size", "32x64", "--out", tmp_path / "out")
    assert_one_line_error(result, "32x64", "at least 64", "64x64")
    assert not (tmp_path / "out").exists()


def test_malformed_input_size_is_a_usage_error(cli):
    result = cli("export", "fcn8s", "--input-size", "abc")
    assert result.code == 2
    assert "Traceback" not in result.stderr
    assert "--input-size" in result.stderr and "HEIGHTxWIDTH" in result.stderr
