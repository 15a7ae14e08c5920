"""``segexport build`` as users run it: real subprocesses, exit codes, one-line errors, a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from accuracy_helpers import scenes_labelled_by
from cli_helpers import assert_one_line_error

from segexport.hashing import file_sha256

QUICK = ["--input-size", "64x64", "--epochs", "1", "--train-images", "32", "--val-images", "8", "--no-progress"]
# Budgets of 100 points hold whatever this CPU trained: the build exits 0 on any machine.
PRECISIONS = ["--fp16", "--int8", "--calib-images", "8", "--method", "minmax", "--max-fallback", "0",
              "--budget-fp16", "100", "--budget-int8", "100"]
COMPARED = ["reference/checkpoint.safetensors", "model.onnx", "model.fp16.onnx", "model.int8.tensorrt.onnx",
            "model.int8.cpu.onnx", "calibration.cache", "calibration.json"]
FIGURES = ("miou", "pixel_acc", "miou_drop_pts", "agreement", "max_abs_logit_error", "mean_abs_logit_error")


def test_help_shows_examples(cli):
    r = cli("build", "--help")
    assert r.code == 0 and "segexport build deeplabv3p --int8" in r.stdout


def test_checkpoint_of_another_architecture(cli, tiny_checkpoint, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_checkpoint, other)
    meta = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**meta, "arch": "fcn8s"}))
    r = cli("build", "deeplabv3p", "--checkpoint", other, "--out", tmp_path / "b")
    assert_one_line_error(r, "checkpoint of fcn8s, not deeplabv3p")
    assert not (tmp_path / "b").exists()


def test_weights_file_of_another_architecture(cli, tiny_checkpoint, tmp_path):
    r = cli("build", "fcn8s", "--checkpoint", tiny_checkpoint / "checkpoint.safetensors", "--size", "tiny",
            "--out", tmp_path / "b")
    assert_one_line_error(r, "does not fit fcn8s")


def test_missing_data_path(cli, tmp_path):
    r = cli("build", "deeplabv3p", "--data", f"folder:{tmp_path / 'nope'}", "--out", tmp_path / "b")
    assert_one_line_error(r, "nope")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("option", ["--budget-int8", "--budget-fp16"])
def test_budget_that_is_not_a_number(cli, tmp_path, option):
    r = cli("build", "deeplabv3p", "--int8", option, "half", "--out", tmp_path / "b")
    assert_one_line_error(r, option, "'half' is not a number")


def test_output_folder_that_cannot_be_written(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert_one_line_error(cli("build", "deeplabv3p", "--out", blocker / "b"), "cannot create the output folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(cli, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert_one_line_error(cli("build", "deeplabv3p", "--out", locked / "b"), "not writable")


def _int8_build(cli, checkpoint: Path, data: Path, out: Path, budget: float, junit: Path):
    return cli("build", "deeplabv3p", "--checkpoint", checkpoint, "--data", f"folder:{data}", "--int8",
               "--budget-int8", repr(budget), "--calib-images", "1", "--method", "minmax", "--max-fallback", "0",
               "--junit", junit, "--out", out, "--no-progress")


def test_broken_budget_exits_1_and_writes_junit(cli, tiny_checkpoint, tmp_path):
    # Measure the drops on scenes the reference labelled (see accuracy_helpers) with a budget
    # every variant holds, then ask for half the largest: sure to break on any CPU.
    data = scenes_labelled_by(tiny_checkpoint, tmp_path / "scenes")
    out, junit = tmp_path / "b", tmp_path / "results.xml"
    measured = _int8_build(cli, tiny_checkpoint, data, out, 100.0, junit)
    assert measured.code == 0, measured.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["reference"]["miou"] > 0.99  # the masks are the reference's predictions
    int8 = [v for v in report["variants"] if v["precision"] == "int8" and not v.get("skipped")]
    drops = {v["name"]: v["miou_drop_pts"] for v in int8}
    assert set(drops) == {"onnx-int8-tensorrt", "onnx-int8-cpu", "openvino-int8"}
    assert max(drops.values()) > 0, f"INT8 from 1 calibration image agreed with FP32 on every pixel: {drops}"
    budget = max(drops.values()) / 2
    r = _int8_build(cli, tiny_checkpoint, data, out, budget, junit)
    assert_one_line_error(r, "broke the budget", code=1)
    report = json.loads((out / "report.json").read_text())
    failed = [v["name"] for v in report["variants"] if v["pass"] is False]
    assert report["pass"] is False and failed == [name for name, drop in drops.items() if drop > budget]
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    assert [c.get("name") for c in cases] == [v["name"] for v in report["variants"]]
    assert [c.get("name") for c in cases if c.find("failure") is not None] == failed
    assert "FAIL" in r.stdout and str(out / "report.md") in r.stdout


def _start(cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "segexport", "build", "deeplabv3p", *QUICK, *PRECISIONS, "--out", "build"],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"},
    )


def _figures(report: dict) -> dict:
    rows = [report["reference"], *report["variants"]]
    return {row["name"]: {k: row.get(k) for k in FIGURES} for row in rows}


@pytest.mark.slow
def test_killed_build_resumes_to_bitwise_identical_artifacts(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir()
    killed.mkdir()
    assert _start(whole).wait(timeout=600) == 0
    proc = _start(killed)
    marker = killed / "build" / ".stages" / "export.json"
    deadline = time.monotonic() + 600
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not (killed / "build" / "report.json").exists()  # killed before verification
    for name in COMPARED:  # what the kill left under an artifact's name is complete
        if (killed / "build" / name).exists():
            assert file_sha256(whole / "build" / name) == file_sha256(killed / "build" / name), name
    assert _start(killed).wait(timeout=600) == 0
    assert not list((killed / "build").glob(".*.part"))
    for name in COMPARED:
        assert file_sha256(whole / "build" / name) == file_sha256(killed / "build" / name), name
    first = json.loads((whole / "build" / "report.json").read_text())
    second = json.loads((killed / "build" / "report.json").read_text())
    assert _figures(first) == _figures(second)
    stages = json.loads((killed / "build" / ".stages" / "last_run.json").read_text())["stages"]
    assert {s["stage"]: s["status"] for s in stages}["reference"] == "cached"
