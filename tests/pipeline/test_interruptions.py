"""A build interrupted anywhere, by any signal, resumes to bitwise the artifacts of one that was not;
two builds into one folder never run at once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segexport.locks import LOCK_NAME
from segexport.weights import file_sha256

QUICK = ["--input-size", "64x64", "--epochs", "1", "--train-images", "16", "--val-images", "8", "--no-progress",
         "--int8", "--target", "cpu", "--calib-images", "4", "--method", "minmax", "--max-fallback", "0",
         "--budget-int8", "100"]
# Every artifact (model.json and rewrites.json also record wall times, so they are not bitwise).
COMPARED = ["reference/checkpoint.safetensors", "model.onnx", "model.int8.cpu.onnx", "calibration.json"]
# Where a build is interrupted: the stage record that must exist first (the next stage is then running).
POINTS = {"during-export": ".stages/reference.json", "during-int8": ".stages/export.json"}
SIGNALS = {"SIGINT": (signal.SIGINT, 130), "SIGTERM": (signal.SIGTERM, 143), "SIGKILL": (signal.SIGKILL, -9)}


def _start(cwd: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "segexport", "build", "deeplabv3p", *QUICK, "--out", "build", *extra],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"},
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert path.exists() and proc.poll() is None, f"the build ended before {path.name} appeared"


def _hashes(build: Path) -> dict[str, str]:
    return {name: file_sha256(build / name) for name in COMPARED}


@pytest.fixture(scope="module")
def whole_build(tmp_path_factory) -> Path:
    """An uninterrupted build, ``CWD/build`` (the same relative --out, so recorded paths match)."""
    cwd = tmp_path_factory.mktemp("whole")
    proc = _start(cwd)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    return cwd / "build"


@pytest.fixture(scope="module")
def whole(whole_build) -> dict[str, str]:
    """The artifacts of the uninterrupted build."""
    return _hashes(whole_build)


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("sig", SIGNALS)
def test_interrupted_build_resumes_to_identical_artifacts(whole, tmp_path, sig, point):
    signum, code = SIGNALS[sig]
    proc = _start(tmp_path)
    _wait_for(tmp_path / "build" / POINTS[point], proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    if signum != signal.SIGKILL:
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert "Traceback" not in stderr and lines[-1].startswith("interrupted:"), stderr
        assert "run the same command again" in lines[-1]
        assert not list((tmp_path / "build").rglob(".*.part")), "temporary files left behind"
    assert not (tmp_path / "build" / "report.json").exists()
    for name in COMPARED:  # whatever stands under an artifact's name is complete
        if (tmp_path / "build" / name).exists():
            assert file_sha256(tmp_path / "build" / name) == whole[name], name
    rerun = _start(tmp_path)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    assert _hashes(tmp_path / "build") == whole
    assert not list((tmp_path / "build").rglob(".*.part"))
    stages = json.loads((tmp_path / "build" / ".stages" / "last_run.json").read_text())["stages"]
    assert {s["stage"]: s["status"] for s in stages}["reference"] == "cached"


@pytest.mark.slow
def test_a_second_build_into_the_same_folder_is_refused_while_the_first_runs(whole, tmp_path):
    first = _start(tmp_path)
    lock = tmp_path / "build" / LOCK_NAME
    deadline = time.monotonic() + 120
    while not (lock.exists() and lock.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    second = _start(tmp_path)
    _, stderr = second.communicate(timeout=120)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert second.returncode == 2 and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert f"in use by process {first.pid}" in lines[0] and "segexport build deeplabv3p" in lines[0]
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    assert _hashes(tmp_path / "build") == whole  # the first build's own artifacts, untouched by the second
    report = json.loads((tmp_path / "build" / "report.json").read_text())
    assert report["pass"] is True and not lock.read_text()  # released cleanly


@pytest.mark.slow
def test_a_build_of_another_architecture_is_refused_in_a_build_folder(whole_build, tmp_path):
    shutil.copytree(whole_build, tmp_path / "build")
    before = {p: p.read_bytes() for p in (tmp_path / "build").rglob("*") if p.is_file()}
    r = subprocess.run([sys.executable, "-m", "segexport", "build", "fcn32s", *QUICK, "--out", "build"],
                       cwd=tmp_path, capture_output=True, text=True)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "holds the artifacts of the build of deeplabv3p, not the build of fcn32s" in lines[0]
    assert "--force" in lines[0]
    assert {p: p.read_bytes() for p in (tmp_path / "build").rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_an_interrupted_rebuild_keeps_the_old_model(whole_build, whole, tmp_path):
    shutil.copytree(whole_build, tmp_path / "build")
    proc = _start(tmp_path, "--calib-images", "3")  # a new calibration: the INT8 stage runs again
    record = tmp_path / "build" / ".stages" / "int8-cpu.json"
    deadline = time.monotonic() + 120
    while record.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the stage drops its record when it starts
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
    refused = _start(tmp_path)
    _, stderr = refused.communicate(timeout=120)
    assert refused.returncode == 2 and "holds 1 file(s) segexport did not write ('notes.txt')" in stderr, stderr
    (tmp_path / "build" / "notes.txt").unlink()
    rerun = _start(tmp_path)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    stages = json.loads((tmp_path / "build" / ".stages" / "last_run.json").read_text())["stages"]
    assert {s["stage"]: s["status"] for s in stages}["int8-cpu"] == "cached"
    assert _hashes(tmp_path / "build") == whole


@pytest.mark.slow
def test_a_copied_build_folder_named_another_way_is_still_the_same_build(whole_build, whole, tmp_path):
    shutil.copytree(whole_build, tmp_path / "copy")
    proc = _start(tmp_path, "--out", str(tmp_path / "copy"))  # absolute, and another name than it was built under
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    stages = json.loads((tmp_path / "copy" / ".stages" / "last_run.json").read_text())["stages"]
    assert {s["stage"]: s["status"] for s in stages}["reference"] == "cached"
    # (export records the reference's path in the model's metadata, so its stage runs again there)
    assert file_sha256(tmp_path / "copy" / "reference" / "checkpoint.safetensors") == whole[COMPARED[0]]
