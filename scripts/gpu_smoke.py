#!/usr/bin/env python
"""GPU smoke test of the TensorRT path: one line per check, about 6 minutes on one GPU
before the instance-engine check was added (its time is not measured yet).

    make gpu-smoke                      # or: .venv/bin/python scripts/gpu_smoke.py [--workdir DIR]

Needs torch with CUDA and the tensorrt wheel matching its CUDA (README, "TensorRT on a GPU").
Checks, in order: the ``gpu``/``trt`` tests; a tiny ``segexport build --fp16 --int8`` with
engines; ``verify``, ``bench`` and ``predict`` on its ``.plan`` files; ``segexport engine``
with a fresh, a reused and a corrupt timing cache; a static-batch and a dynamic-shape engine
through the runner; a tiny Mask R-CNN's FP16 and INT8 engines with AP rows; and, where 2 GPUs exist, a 2-process torchrun ``verify`` whose figures must
equal the single process's.

Exit 0 when every check passes, 1 when one fails. Where there is no GPU or no working TensorRT
it prints one line saying why it cannot go on, and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "OMP_NUM_THREADS": "4"}
RUNNER_TESTS = "static_batch or dynamic_shape"  # the runner check runs these; the gpu check the rest


class SmokeFailure(Exception):
    """A check failed; the message is its one line."""


class Skip(Exception):
    """A check that cannot run here (e.g. one GPU for a 2-GPU check); the message says why."""


def cannot_go_on() -> str | None:
    """Why this machine cannot run the smoke test (no torch with CUDA, GPU, driver or tensorrt), or None."""
    try:
        from segexport.engine import engine_unavailable_reason
    except ImportError as exc:
        return f"segexport does not import ({exc}); run `make install` first"
    return engine_unavailable_reason()


def run(args: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command from the repository root; SmokeFailure with its last stderr line when it fails."""
    try:
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env or ENV)
    except subprocess.TimeoutExpired:
        raise SmokeFailure(f"{' '.join(args[:5])} ... ran past {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()] or ["no output"]
        raise SmokeFailure(f"exit {proc.returncode}: {lines[-1].strip()[:300]}")
    return proc


def segexport(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "segexport", *map(str, args)], timeout)


def pytest_summary(expr: str, timeout: float) -> str:
    proc = run([sys.executable, "-m", "pytest", "-q", "-m", "gpu or trt", "-k", expr, "tests"], timeout)
    summary = proc.stdout.strip().splitlines()[-1]
    if " passed" not in summary:
        raise SmokeFailure(f"no test ran: {summary}")
    return summary


def check_gpu_tests(work: Path) -> str:
    return pytest_summary(f"not ({RUNNER_TESTS})", timeout=300)


def check_build(work: Path) -> str:
    segexport("build", "deeplabv3p", "--fp16", "--int8", "--target", "tensorrt", "--input-size", "64x64",
              "--epochs", "1", "--train-images", "64", "--val-images", "8", "--calib-images", "16",
              "--budget-fp16", "100", "--budget-int8", "100", "--out", work / "build", "--no-progress", timeout=300)
    return rows_ok(json.loads((work / "build" / "report.json").read_text()))


def rows_ok(report: dict) -> str:
    """The TensorRT rows of a report, which must have run: ``trt-fp16 mIoU 0.41, trt-int8 ...``."""
    rows = {row["name"]: row for row in report["variants"] if row["backend"] == "tensorrt"}
    if set(rows) != {"trt-fp16", "trt-int8"}:
        raise SmokeFailure(f"expected rows trt-fp16 and trt-int8, found {sorted(rows)}")
    for name, row in rows.items():
        if row["skipped"] or row["error"] or row["miou"] is None:
            raise SmokeFailure(f"{name}: {row['skipped'] or row['error'] or 'no mIoU'}")
    return ", ".join(f"{name} mIoU {row['miou']:.3f} on {row['device']}" for name, row in sorted(rows.items()))


def check_verify(work: Path) -> str:
    proc = segexport("verify", work / "build", "--json", "--no-progress", "--runs", "5")
    (work / "verify.json").write_text(proc.stdout)
    return rows_ok(json.loads(proc.stdout))


def check_bench(work: Path) -> str:
    plans = [work / "build" / "model.fp16.plan", work / "build" / "model.int8.tensorrt.plan"]
    proc = segexport("bench", *plans, "--runs", "5", "--json", "--no-progress")
    return f"{len(plans)} engines timed ({len(proc.stdout)} bytes of JSON)"


def check_predict(work: Path) -> str:
    import numpy as np
    from PIL import Image

    image = work / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 70, 3), dtype=np.uint8)).save(image)
    segexport("predict", work / "build" / "model.int8.tensorrt.plan", image, "--out", work / "pred", "--json")
    mask = Image.open(work / "pred" / "scene.png")
    if mask.size != (70, 90):
        raise SmokeFailure(f"mask is {mask.size[0]}x{mask.size[1]}, the image 70x90")
    return "mask written at the image's size"


def _engine_status(work: Path, name: str, cache: Path) -> str:
    out = work / "tc" / f"{name}.plan"
    proc = segexport("engine", work / "build" / "model.fp16.onnx", "--out", out, "--max-batch", "2",
                     "--workspace", "1", "--timing-cache", cache, "--json")
    return json.loads(proc.stdout)["settings"]["timing_cache_status"]


def check_timing_cache(work: Path) -> str:
    cache = work / "tc" / "timing.cache"
    seen = [_engine_status(work, "fresh", cache), _engine_status(work, "reused", cache)]
    cache.write_bytes(b"\x00corrupt timing cache\x00" * 100)  # its key still names this GPU: TensorRT decides
    seen.append(_engine_status(work, "corrupt", cache))
    if seen[:2] != ["new", "reused"] or not seen[2].startswith("replaced:"):
        raise SmokeFailure(f"fresh/reused/corrupt gave {seen}")
    return "new, reused, " + seen[2]


def check_instance_build(work: Path) -> str:
    """A tiny Mask R-CNN built to FP16 and INT8 engines (RoiAlign and NonMaxSuppression parsed
    natively, no plugin), whose engine rows must carry COCO AP."""
    segexport("build", "maskrcnn", "--fp16", "--int8", "--target", "tensorrt", "--epochs", "1", "--train-images", "64",
              "--val-images", "8", "--calib-images", "8", "--budget-fp16", "100", "--budget-int8", "100",
              "--out", work / "maskrcnn", "--no-progress", timeout=400)
    report = json.loads((work / "maskrcnn" / "report.json").read_text())
    rows = {row["name"]: row for row in report["variants"] if row["backend"] == "tensorrt"}
    if set(rows) != {"trt-fp16", "trt-int8"}:
        raise SmokeFailure(f"expected rows trt-fp16 and trt-int8, found {sorted(rows)}")
    for name, row in rows.items():
        if row["skipped"] or row["error"] or row.get("mask_ap") is None:
            raise SmokeFailure(f"{name}: {row['skipped'] or row['error'] or 'no mask AP'}")
    return ", ".join(f"{name} mask AP {row['mask_ap']:.3f}" for name, row in sorted(rows.items()))


def check_runner_shapes(work: Path) -> str:
    return pytest_summary(RUNNER_TESTS, timeout=180)


def check_torchrun_verify(work: Path) -> str:
    import torch

    if torch.cuda.device_count() < 2:
        raise Skip(f"needs 2 GPUs, {torch.cuda.device_count()} here")
    proc = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                "segexport", "verify", str(work / "build"), "--json", "--no-progress", "--runs", "3"], timeout=240)
    single = json.loads((work / "verify.json").read_text())
    both = {row["name"]: row["miou"] for row in json.loads(proc.stdout)["variants"]}
    differ = [row["name"] for row in single["variants"] if both.get(row["name"]) != row["miou"]]
    if differ:
        raise SmokeFailure(f"2-process mIoU differs from 1 process for {differ}")
    return rows_ok(json.loads(proc.stdout)) + " (equal to 1 process)"


CHECKS: list[tuple[str, Callable[[Path], str], bool]] = [  # name, check, needs the build
    ("gpu/trt tests", check_gpu_tests, False),
    ("segexport build --fp16 --int8 (engines)", check_build, False),
    ("segexport verify (.plan rows)", check_verify, True),
    ("segexport bench (.plan)", check_bench, True),
    ("segexport predict (.plan)", check_predict, True),
    ("segexport engine: fresh, reused, corrupt timing cache", check_timing_cache, True),
    ("runner: static-batch and dynamic-shape engines", check_runner_shapes, False),
    ("segexport build maskrcnn --fp16 --int8 (instance engines)", check_instance_build, False),
    ("torchrun --nproc-per-node 2 verify", check_torchrun_verify, True),
]


def run_checks(work: Path) -> int:
    """Run every check, one line each; the number that failed."""
    failed, built = 0, True
    for name, check, needs_build in CHECKS:
        started = time.perf_counter()
        try:
            if needs_build and not built:
                raise Skip("the build failed")
            line = f"PASS  {name}: {check(work)}"
        except Skip as why:
            line = f"SKIP  {name}: {why}"
        except Exception as exc:  # noqa: BLE001  (one line per check, whatever went wrong)
            failed += 1
            built = built and check is not check_build
            line = f"FAIL  {name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        print(f"{line} ({time.perf_counter() - started:.0f} s)", flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="Keep the build and engines here (default: a temporary folder).")
    args = parser.parse_args(argv)
    reason = cannot_go_on()
    if reason:
        print(f"gpu-smoke: cannot go on here: {reason}")
        return 0
    print(f"gpu-smoke: {machine()}", flush=True)
    started = time.perf_counter()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        failed = run_checks(args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as tmp:
            failed = run_checks(Path(tmp))
    verdict = "all checks passed" if not failed else f"{failed} check(s) failed"
    print(f"gpu-smoke: {verdict} in {time.perf_counter() - started:.0f} s")
    return 1 if failed else 0


def machine() -> str:
    """GPU(s), TensorRT and torch versions, on one line."""
    import torch

    from segexport.engine.trt_api import tensorrt_version

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return (f"{len(gpus)} x {gpus[0]}, TensorRT {tensorrt_version()}, torch {torch.__version__} "
            f"(CUDA {torch.version.cuda})")


if __name__ == "__main__":
    sys.exit(main())
