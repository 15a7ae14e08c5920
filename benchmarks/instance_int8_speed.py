"""Paper-size CPU INT8 speed-up of the instance networks against PyTorch eager (batch 1, one run).

    python benchmarks/instance_int8_speed.py --side 800 maskrcnn panet --json benchmarks/results_instance_int8_speed.json

Seeded random weights: speed does not depend on them, since every output is padded to a fixed
size, so suppression, RoIAlign and the heads do the same work for any weights. Each network is
exported as `segexport export` does, calibrated on synthetic images at the input size and
quantized for the `cpu` target with the geometry (and each head's last layer) in FP32, as the
precision stage does. PyTorch eager FP32, ONNX Runtime FP32 and ONNX Runtime INT8 then run batch
1 in one process with the same threads, round robin (one run of each per round), so that drift on
a noisy machine hits all three alike; the ratios of medians are the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import onnx
import torch

from segexport.data import Preprocess
from segexport.export.onnx_export import export_onnx
from segexport.models import build_model
from segexport.precision.calibrate import CalibrationSettings, calibrate, save_ranges
from segexport.precision.calibration_data import load_calibration_images
from segexport.precision.instance_graph import geometry_nodes
from segexport.precision.int8 import quantize_int8
from segexport.precision.targets import get_target
from segexport.runners.onnxruntime_runner import open_session


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def run(arch: str, side: int, calib_images: int, rounds: int, root: Path) -> dict:
    torch.manual_seed(0)
    model = build_model(arch, size="paper", num_classes=91).eval()
    fp32 = root / f"{arch}-{side}.onnx"
    export_onnx(model, fp32, input_size=(side, side), metadata={"task": "instance", "arch": arch})
    preprocess = Preprocess(size=(side, side))
    images = load_calibration_images("synthetic", preprocess, count=calib_images, seed=0)
    settings = CalibrationSettings()
    started = time.perf_counter()
    ranges = calibrate(fp32, images, settings, input_name="images", progress=False)
    ranges_path = root / f"{arch}-{side}.calibration.json"
    save_ranges(ranges_path, ranges, {"images": images.report()})
    int8 = root / f"{arch}-{side}.int8.cpu.onnx"
    kept = geometry_nodes(onnx.load(str(fp32), load_external_data=False))
    quantize_int8(fp32, int8, get_target("cpu"), ranges_path, settings, nodes_to_exclude=kept)
    quantize_s = time.perf_counter() - started
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(1))
    sessions = {"ort_fp32": open_session(fp32), "ort_int8": open_session(int8)}
    runs = {"torch": lambda: model(x), **{k: (lambda s=s: s.run(None, {"images": x.numpy()})) for k, s in sessions.items()}}
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for fn in runs.values():
            fn()  # warm-up
        for _ in range(rounds):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    p50 = {k: statistics.median(v) * 1000 for k, v in times.items()}
    return {
        "arch": arch, "side": side, "calib_images": calib_images, "rounds": rounds, "kept_fp32": len(kept),
        "quantize_s": round(quantize_s, 1), **{f"{k}_p50_ms": round(v, 1) for k, v in p50.items()},
        "int8_vs_torch": round(p50["torch"] / p50["ort_int8"], 2),
        "fp32_vs_torch": round(p50["torch"] / p50["ort_fp32"], 2),
        "int8_vs_fp32": round(p50["ort_fp32"] / p50["ort_int8"], 2),
        "threads": torch.get_num_threads(), "cpu": _cpu(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="*", default=["maskrcnn", "panet"])
    parser.add_argument("--side", type=int, default=800)
    parser.add_argument("--calib-images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    print("| arch | side | PyTorch eager p50 ms | ORT FP32 p50 ms | ORT INT8 (cpu) p50 ms | INT8 vs eager | "
          "FP32 vs eager | INT8 vs FP32 | CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory(prefix="segexport-int8-speed-") as tmp:
        for arch in args.archs:
            r = run(arch, args.side, args.calib_images, args.rounds, Path(tmp))
            rows.append(r)
            print(f"| {arch} | {r['side']} | {r['torch_p50_ms']:.0f} | {r['ort_fp32_p50_ms']:.0f} | "
                  f"{r['ort_int8_p50_ms']:.0f} | {r['int8_vs_torch']:.2f}x | {r['fp32_vs_torch']:.2f}x | "
                  f"{r['int8_vs_fp32']:.2f}x | {r['cpu']}, {r['threads']} threads |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
