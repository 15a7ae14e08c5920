"""OpenVINO INT8 speed: which Q/DQ graph OpenVINO should get, against PyTorch, ONNX Runtime and NNCF.

One process, one input, 2 threads for every engine. The model is exported with seeded random
weights (speed does not depend on them), calibrated (minmax) on the built-in data, and
quantized once per candidate INT8 graph (:data:`CANDIDATES`); NNCF's default
``nncf.quantize`` of the FP32 model (converted by ``ov.convert_model``, the same calibration
images) is the peer baseline. Engines:

- PyTorch eager FP32, ONNX Runtime FP32, ONNX Runtime INT8 (the ``cpu`` target's model);
- OpenVINO FP32 (``INFERENCE_PRECISION_HINT`` f32) and OpenVINO's default inference precision
  (bf16 on CPUs with AMX/AVX-512 bf16, f32 elsewhere) on the FP32 model;
- OpenVINO INT8 on each candidate graph, and on NNCF's model.

OpenVINO runs through ``segexport.runners.openvino_runner.OpenVINORunner`` (one stream, latency
hint). Engines take turns in blocks, as in ``benchmarks/quantize_speed.py``: every round runs each
engine once untimed, then a few timed runs, so load from other processes hits them alike.

    python benchmarks/openvino_int8.py                                   # paper: ResNet-50 DeepLabv3+, 512x512
    python benchmarks/openvino_int8.py --size tiny --input-size 128x128  # a quick check
    python benchmarks/openvino_int8.py --out builds/ov/paper --json builds/ov/paper/speed.json
    python benchmarks/openvino_int8.py --out builds/ov/paper --reuse     # time the models already there

NNCF is the peer baseline only, not a segexport dependency: ``.venv/bin/pip install -c
constraints.txt -e '.[bench]'`` installs it (with scipy and scikit-learn).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from quantize_speed import parse_size, time_blocks  # benchmarks/ is the script's folder

from segexport.pipeline.export_stage import export_model
from segexport.pipeline.sources import resolve_source
from segexport.precision.calibrate import CalibrationSettings, calibrate, save_ranges
from segexport.precision.calibration_data import (
    CalibrationImages,
    load_calibration_images,
)
from segexport.precision.int8 import quantize_int8
from segexport.precision.onnx_model import read_model_info
from segexport.precision.targets import TARGETS, WEIGHTED_OPS, Int8Target
from segexport.runners.onnxruntime_runner import OnnxRuntimeRunner
from segexport.runners.openvino_runner import OpenVINORunner

_WEIGHTED = WEIGHTED_OPS
_OV_OPTIONS = {"WeightSymmetric": True, "QuantizeBias": False}

# The INT8 graphs compared on OpenVINO. All use unsigned activations, symmetric per-channel
# INT8 weights and minmax ranges; they differ in which operators get Q/DQ and where.
CANDIDATES: dict[str, Int8Target] = {
    # segexport's ONNX Runtime graph: every operator, inputs and outputs.
    "cpu": TARGETS["cpu"],
    # Q/DQ on the inputs of the weighted layers and Add (OpenVINO fuses the residual Add into
    # the conv before it), MaxPool, AveragePool and Concat; no output Q/DQ.
    "ov-inputs": Int8Target(
        "ov-inputs", "model.int8.ov-inputs.onnx", False, (*_WEIGHTED, "Add", "MaxPool", "AveragePool", "Concat"),
        {**_OV_OPTIONS, "OpTypesToExcludeOutputQuantization": [*_WEIGHTED, "Add"]}),
    # Q/DQ on the inputs of the weighted layers and Add only.
    "ov-conv-add": Int8Target(
        "ov-conv-add", "model.int8.ov-conv-add.onnx", False, (*_WEIGHTED, "Add"),
        {**_OV_OPTIONS, "OpTypesToExcludeOutputQuantization": [*_WEIGHTED, "Add"]}),
    # Q/DQ on the inputs of the weighted layers only: what OpenVINO needs to run every conv in
    # INT8; it moves the dequantization through pools, concats and adds itself. This one won and
    # is segexport's openvino target (precision/targets.py), so the product's own entry is timed.
    "openvino": TARGETS["openvino"],
}
CHOSEN = "openvino"
NNCF_IR = "model.int8.nncf.xml"


def quantize_candidates(onnx_path: Path, ranges_path: Path, settings: CalibrationSettings, out: Path,
                        names: list[str]) -> dict[str, Path]:
    """Each named candidate's Q/DQ model, written in ``out``."""
    paths = {}
    for name in names:
        target = CANDIDATES[name]
        paths[name] = out / target.filename
        quantize_int8(onnx_path, paths[name], target, ranges_path, settings)
    return paths


def nncf_default(onnx_path: Path, images: CalibrationImages, xml_path: Path, **options: Any) -> Path:
    """NNCF's default post-training quantization of the FP32 model (every image, one at a time),
    saved as an IR with its weights as NNCF left them (no FP16 compression); ``options`` go to
    ``nncf.quantize`` (an ablation of a default)."""
    import nncf
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    dataset = nncf.Dataset(list(images.batches(1)))
    quantized = nncf.quantize(model, dataset, subset_size=len(images), **options)
    ov.save_model(quantized, str(xml_path), compress_to_fp16=False)
    return xml_path


def calibrated(onnx_path: Path, out: Path, count: int, seed: int = 0) -> tuple[Path, CalibrationImages]:
    """(minmax ranges file, the calibration images), ``count`` images of the built-in calib data."""
    info = read_model_info(onnx_path)
    settings = CalibrationSettings("minmax")
    images = load_calibration_images("synthetic", info.preprocess, count=count, seed=seed)
    ranges = calibrate(onnx_path, images, settings, input_name=info.input_name, static_batch=info.batch,
                       progress=False)
    ranges_path = out / "calibration.json"
    save_ranges(ranges_path, ranges, {"model_sha256": info.sha256, "settings": settings.to_dict(),
                                      "images": images.report()})
    return ranges_path, images


def build_models(arch: str, size: str, input_size: tuple[int, int], calib_images: int, out: Path) -> Path:
    """Export the seeded model, calibrate it and write every candidate and NNCF's IR into ``out``."""
    onnx_path = export_model(arch, size=size, input_size=input_size, out=out, images=2, seed=0).onnx_path
    ranges_path, images = calibrated(onnx_path, out, calib_images)
    quantize_candidates(onnx_path, ranges_path, CalibrationSettings("minmax"), out, list(CANDIDATES))
    nncf_default(onnx_path, images, out / NNCF_IR)
    return onnx_path


def engines(model: torch.nn.Module, out: Path, threads: int, x: np.ndarray) -> dict[str, Callable[[], Any]]:
    tensor = torch.from_numpy(x)

    def eager() -> Any:
        with torch.inference_mode():
            return model(tensor)

    fp32 = out / "model.onnx"
    runners = {
        "onnxruntime fp32": OnnxRuntimeRunner(fp32, threads=threads),
        "onnxruntime int8 cpu": OnnxRuntimeRunner(out / TARGETS["cpu"].filename, threads=threads),
        "openvino fp32": OpenVINORunner(fp32, threads=threads, inference_precision="f32"),
    }
    default = OpenVINORunner(fp32, threads=threads)
    runners[f"openvino default ({default.inference_precision})"] = default
    for name, target in CANDIDATES.items():
        runners[f"openvino int8 {name}"] = OpenVINORunner(out / target.filename, threads=threads, precision="int8")
    runners["openvino int8 nncf default"] = OpenVINORunner(out / NNCF_IR, threads=threads, precision="int8")
    return {"pytorch eager fp32": eager, **{name: (lambda r=r: r.run(x)) for name, r in runners.items()}}


def ratio_rows(median: dict[str, float]) -> dict[str, float]:
    chosen = median[f"openvino int8 {CHOSEN}"]
    return {"vs pytorch eager fp32": median["pytorch eager fp32"] / chosen,
            "vs onnxruntime int8 cpu": median["onnxruntime int8 cpu"] / chosen,
            "vs nncf default": median["openvino int8 nncf default"] / chosen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="deeplabv3p")
    parser.add_argument("--size", default="paper", choices=("tiny", "paper"))
    parser.add_argument("--input-size", default="512x512", type=parse_size)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of blocks")
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None, help="keep the models here (default: a temporary folder)")
    parser.add_argument("--reuse", action="store_true", help="time the models already in --out instead of building them")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="openvino-int8-") as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        if not (args.reuse and args.out is not None):
            build_models(args.arch, args.size, args.input_size, args.calib_images, out)
        model = resolve_source(args.arch, size=args.size, seed=0).model.eval()
        x = np.random.default_rng(0).standard_normal((1, 3, *args.input_size), dtype=np.float32)
        times = time_blocks(engines(model, out, args.threads, x), args.warmup, args.runs, args.rounds)
        qdq = {name: sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(out / t.filename)).graph.node)
               for name, t in CANDIDATES.items()}
    median = {name: statistics.median(t) * 1000.0 for name, t in times.items()}
    fastest = {name: min(t) * 1000.0 for name, t in times.items()}  # less sensitive to other processes' load
    chosen = median[f"openvino int8 {CHOSEN}"]
    result = {"arch": args.arch, "size": args.size, "input_size": list(args.input_size), "batch": 1,
              "threads": args.threads, "runs": args.runs, "warmup": args.warmup, "rounds": args.rounds,
              "chosen": CHOSEN, "quantize_linear_nodes": qdq, "median_ms": median, "min_ms": fastest, "chosen_speedup": ratio_rows(median),
              "torch": torch.__version__}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    h, w = args.input_size
    print(f"{args.arch} {args.size} {h}x{w}, batch 1, {args.threads} threads, median of {args.runs} "
          f"({args.rounds} rounds of blocks, {args.warmup} warm-up); chosen OpenVINO INT8 graph: {CHOSEN}")
    print(f"| engine | median ms | {CHOSEN} speed-up | min ms |\n|---|---:|---:|---:|")
    for name, ms in median.items():
        print(f"| {name} | {ms:.1f} | {ms / chosen:.2f}x | {fastest[name]:.1f} |")
    print("\n| OpenVINO INT8 " + CHOSEN + " | speed-up |\n|---|---:|")
    for name, ratio in result["chosen_speedup"].items():
        print(f"| {name} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
