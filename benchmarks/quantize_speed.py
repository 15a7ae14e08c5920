"""INT8 (cpu target) speed against PyTorch eager FP32 and the FP32 ONNX model on ONNX Runtime.

One process, one input, the same threads for every engine: the model is exported (random
weights are fine for speed), calibrated on the built-in data and quantized for the ``cpu``
target; then each engine runs batch 1 after a warm-up and the medians are compared.

Engines take turns in blocks: every round runs each engine for a few timed iterations (after
one untimed run), so that load from other processes hits them alike, but no engine is timed
right after another. Taking turns on every iteration (``--schedule interleaved``) measures the
thread pools fighting instead: ONNX Runtime's intra-op workers and torch's OpenMP workers keep
spinning for a while after a run and take the cores from whatever runs next (measured here:
INT8 114 ms interleaved against 83 ms in blocks, PyTorch 478 against 406; BENCHMARKS.md).

    python benchmarks/quantize_speed.py                                   # paper: ResNet-50 DeepLabv3+, 512x512
    python benchmarks/quantize_speed.py --size tiny --input-size 128x128  # a quick check
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segexport.pipeline.export_stage import export_model
from segexport.pipeline.sources import resolve_source
from segexport.precision.calibrate import CalibrationSettings, calibrate, save_ranges
from segexport.precision.calibration_data import load_calibration_images
from segexport.precision.int8 import optimized_op_counts, quantize_int8
from segexport.precision.onnx_model import read_model_info
from segexport.precision.targets import TARGETS
from segexport.runners.onnxruntime_runner import open_session


def parse_size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w)


def build_models(
    arch: str, size: str, input_size: tuple[int, int], calib_images: int, out: Path
) -> tuple[torch.nn.Module, Path, Path]:
    """(PyTorch FP32 model, FP32 ONNX, INT8 cpu ONNX), all from the same seeded random weights."""
    model = resolve_source(arch, size=size, seed=0).model.eval()
    onnx_path = export_model(arch, size=size, input_size=input_size, out=out, images=2, seed=0).onnx_path
    info = read_model_info(onnx_path)
    settings = CalibrationSettings("minmax")  # the method changes the scales, not the speed
    images = load_calibration_images("synthetic", info.preprocess, count=calib_images)
    ranges = calibrate(onnx_path, images, settings, input_name=info.input_name, static_batch=info.batch)
    ranges_path = out / "calibration.json"
    save_ranges(ranges_path, ranges, {"model_sha256": info.sha256, "settings": settings.to_dict(), "images": images.report()})
    int8_path = out / TARGETS["cpu"].filename
    quantize_int8(onnx_path, int8_path, TARGETS["cpu"], ranges_path, settings)
    return model, onnx_path, int8_path


def runners(model: torch.nn.Module, fp32: Path, int8: Path, x: np.ndarray) -> dict[str, Callable[[], Any]]:
    sessions = {name: open_session(path) for name, path in (("onnxruntime fp32", fp32), ("onnxruntime int8 cpu", int8))}
    tensor = torch.from_numpy(x)

    def eager() -> Any:
        with torch.inference_mode():
            return model(tensor)

    out = {"pytorch eager fp32": eager}
    for name, session in sessions.items():
        feed = {session.get_inputs()[0].name: x}
        out[name] = lambda s=session, f=feed: s.run(None, f)
    return out


def time_interleaved(run: dict[str, Callable[[], Any]], warmup: int, runs: int) -> dict[str, list[float]]:
    """Each engine once per iteration, in turn: ``runs`` iterations after ``warmup`` each."""
    for fn in run.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in run}
    for _ in range(runs):
        for name, fn in run.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def time_blocks(run: dict[str, Callable[[], Any]], warmup: int, runs: int, rounds: int) -> dict[str, list[float]]:
    """``rounds`` rounds; in each, every engine runs once untimed, then ``runs / rounds`` timed."""
    for fn in run.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in run}
    per_round = max(1, -(-runs // rounds))
    for _ in range(rounds):
        for name, fn in run.items():
            fn()
            for _ in range(per_round):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="deeplabv3p")
    parser.add_argument("--size", default="paper", choices=("tiny", "paper"))
    parser.add_argument("--input-size", default="512x512", type=parse_size)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--schedule", choices=("blocks", "interleaved"), default="blocks",
                        help="engines take turns in blocks of runs (default) or on every run")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of blocks")
    parser.add_argument("--out", type=Path, default=None, help="keep the models here (default: a temporary folder)")
    parser.add_argument("--reuse", action="store_true", help="time the models already in --out instead of building them")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # open_session gives ONNX Runtime as many intra-op threads
    with tempfile.TemporaryDirectory(prefix="quantize-speed-") as tmp:
        out = args.out or Path(tmp)
        if args.reuse and args.out is not None:
            model = resolve_source(args.arch, size=args.size, seed=0).model.eval()
            fp32, int8 = out / "model.onnx", out / TARGETS["cpu"].filename
        else:
            model, fp32, int8 = build_models(args.arch, args.size, args.input_size, args.calib_images, out)
        fused = optimized_op_counts(int8).get("QLinearConv", 0)
        x = np.random.default_rng(0).standard_normal((1, 3, *args.input_size), dtype=np.float32)
        run = runners(model, fp32, int8, x)
        if args.schedule == "blocks":
            times = time_blocks(run, args.warmup, args.runs, args.rounds)
        else:
            times = time_interleaved(run, args.warmup, args.runs)
    median = {name: statistics.median(t) * 1000.0 for name, t in times.items()}
    int8_ms = median["onnxruntime int8 cpu"]
    result = {
        "arch": args.arch, "size": args.size, "input_size": list(args.input_size), "batch": 1, "threads": args.threads,
        "runs": args.runs, "warmup": args.warmup, "schedule": args.schedule, "qlinearconv": fused, "median_ms": median,
        "int8_speedup_vs_pytorch_fp32": median["pytorch eager fp32"] / int8_ms,
        "int8_speedup_vs_onnxruntime_fp32": median["onnxruntime fp32"] / int8_ms,
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    h, w = args.input_size
    print(f"{args.arch} {args.size} {h}x{w}, batch 1, {args.threads} threads, median of {args.runs} "
          f"({args.schedule}, {args.warmup} warm-up), "
          f"{fused} QLinearConv")
    print("| engine | median ms | INT8 speedup |\n|---|---:|---:|")
    for name, ms in median.items():
        print(f"| {name} | {ms:.1f} | {ms / int8_ms:.2f}x |")


if __name__ == "__main__":
    main()
