"""Quick `segexport build` runs as real subprocesses, for tests that interrupt, race or re-run them.

Every run builds into ``CWD/build`` (a relative --out, so what a build records is the same in
every folder) with one torch thread, so that two runs share the 2 cores without spinning.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from segexport.hashing import file_sha256

QUICK = ["--input-size", "64x64", "--epochs", "1", "--train-images", "16", "--val-images", "8", "--no-progress",
         "--int8", "--target", "cpu", "--calib-images", "4", "--method", "minmax", "--max-fallback", "0",
         "--budget-int8", "100"]
# Every artifact (model.json and rewrites.json also record wall times, so they are not bitwise).
COMPARED = ["reference/checkpoint.safetensors", "model.onnx", "model.int8.cpu.onnx", "calibration.json"]
ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1"}


def start_build(cwd: Path, *extra: str, arch: str = "deeplabv3p") -> subprocess.Popen:
    """``segexport build ARCH QUICK --out build EXTRA`` started in ``cwd``."""
    return subprocess.Popen(
        [sys.executable, "-m", "segexport", "build", arch, *QUICK, "--out", "build", *extra],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )


def wait_for(path: Path, proc: subprocess.Popen, *, gone: bool = False, timeout: float = 600) -> None:
    """Until ``path`` exists (or, with ``gone``, no longer does) while ``proc`` runs."""
    deadline = time.monotonic() + timeout
    while path.exists() == gone and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert path.exists() != gone and proc.poll() is None, f"the build ended before {path.name} was there or gone"


def hashes(build: Path) -> dict[str, str]:
    return {name: file_sha256(build / name) for name in COMPARED}
