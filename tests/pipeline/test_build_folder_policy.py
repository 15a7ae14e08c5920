"""A build folder is written by its own build only, survives being copied or renamed, keeps the
old model when a rebuild is interrupted, and one from before the ledger is adopted, not refused."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import pytest
from build_runs import COMPARED, ENV, QUICK, hashes, start_build, wait_for

from segexport.hashing import file_sha256


@pytest.mark.slow
def test_a_build_of_another_architecture_is_refused_in_a_build_folder(whole_build, tmp_path):
    shutil.copytree(whole_build, tmp_path / "build")
    before = {p: p.read_bytes() for p in (tmp_path / "build").rglob("*") if p.is_file()}
    r = subprocess.run([sys.executable, "-m", "segexport", "build", "fcn32s", *QUICK, "--out", "build"],
                       cwd=tmp_path, capture_output=True, text=True, env=ENV)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "holds the artifacts of the build of deeplabv3p, not the build of fcn32s" in lines[0]
    assert "--force" in lines[0]
    assert {p: p.read_bytes() for p in (tmp_path / "build").rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_an_interrupted_rebuild_keeps_the_old_model(whole_build, whole, tmp_path):
    shutil.copytree(whole_build, tmp_path / "build")
    proc = start_build(tmp_path, "--calib-images", "3")  # a new calibration: the INT8 stage runs again
    wait_for(tmp_path / "build" / ".stages" / "int8-cpu.json", proc, gone=True)  # dropped when the stage starts
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert file_sha256(tmp_path / "build" / "model.int8.cpu.onnx") == whole["model.int8.cpu.onnx"]
    assert not list((tmp_path / "build").rglob(".*.part"))


@pytest.mark.slow
def test_a_build_folder_from_before_the_ledger_is_adopted_not_refused(whole_build, whole, tmp_path):
    shutil.copytree(whole_build, tmp_path / "build")
    for ledger in (tmp_path / "build").rglob(".segexport-files.json"):  # as an earlier segexport left it
        ledger.unlink()
    (tmp_path / "build" / "notes.txt").write_text("mine\n")
    refused = start_build(tmp_path)
    _, stderr = refused.communicate(timeout=120)
    assert refused.returncode == 2 and "holds 1 file(s) segexport did not write ('notes.txt')" in stderr, stderr
    (tmp_path / "build" / "notes.txt").unlink()
    rerun = start_build(tmp_path)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    stages = json.loads((tmp_path / "build" / ".stages" / "last_run.json").read_text())["stages"]
    assert {s["stage"]: s["status"] for s in stages}["int8-cpu"] == "cached"
    assert hashes(tmp_path / "build") == whole


@pytest.mark.slow
def test_a_copied_build_folder_named_another_way_is_still_the_same_build(whole_build, whole, tmp_path):
    shutil.copytree(whole_build, tmp_path / "copy")
    proc = start_build(tmp_path, "--out", str(tmp_path / "copy"))  # absolute, and another name than it was built under
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    stages = json.loads((tmp_path / "copy" / ".stages" / "last_run.json").read_text())["stages"]
    assert {s["stage"]: s["status"] for s in stages}["reference"] == "cached"
    # (export records the reference's path in the model's metadata, so its stage runs again there)
    assert file_sha256(tmp_path / "copy" / COMPARED[0]) == whole[COMPARED[0]]
