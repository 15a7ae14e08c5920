"""FP16 and INT8 models of trained tiny instance networks, judged by COCO AP on ONNX Runtime.

For each checkpoint (``builds/bench/ARCH``, written by ``benchmarks/train_tiny.py``) this exports
the FP32 graph, then makes

- ``fp16``: the feature part FP16, the geometry FP32 (:mod:`segexport.precision.instance_graph`);
- ``fp16-all``: every operator the converter can type in FP16, geometry included (the
  measurement behind keeping geometry FP32);
- ``int8-tensorrt`` / ``int8-cpu``: Q/DQ on the feature part only, from minmax ranges of the
  calibration split;
- ``int8-tensorrt-all``: Q/DQ wherever the target places it, geometry included;

and measures mask and box AP (COCOeval) and the rendered map's mIoU of each on the val split,
with the AP drop in points against the FP32 graph, and ONNX Runtime's p50 latency at batch 1.

    python benchmarks/instance_precision.py maskrcnn panet
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from segexport.checkpoint import load_checkpoint
from segexport.data import normalize_batch, open_dataset
from segexport.errors import SegexportError
from segexport.export.verify_instances import run_batches
from segexport.pipeline.export_stage import export_model
from segexport.precision.calibrate import CalibrationSettings, calibrate, save_ranges
from segexport.precision.calibration_data import load_calibration_images
from segexport.precision.fp16 import convert_fp16
from segexport.precision.instance_graph import geometry_nodes
from segexport.precision.int8 import quantize_int8
from segexport.precision.targets import get_target
from segexport.runners.onnxruntime_runner import open_session
from segexport.train_instance import evaluate_instances, load_instance_set

BATCH = 8


def run_outputs(path: Path, images: np.ndarray) -> tuple[list[np.ndarray], float]:
    """The graph's five outputs on normalised ``images``, and its p50 ms at batch 1."""
    import torch

    session = open_session(path)
    x = normalize_batch(torch.from_numpy(images[0]), images[1]).numpy()
    outputs = run_batches(session, x, BATCH)
    times = []
    for i in range(11):
        start = time.perf_counter()
        session.run(None, {"images": x[i % len(x) : i % len(x) + 1]})
        times.append(time.perf_counter() - start)
    return outputs, statistics.median(times[1:]) * 1000


def variants(onnx_path: Path, folder: Path, arch_dir: Path, calib_images: int) -> dict[str, Path]:
    model = onnx.load(str(onnx_path))
    geometry = geometry_nodes(model)
    out = {"fp32": onnx_path}
    convert_fp16(onnx_path, folder / "fp16.onnx", nodes_kept=geometry)
    out["fp16"] = folder / "fp16.onnx"
    convert_fp16(onnx_path, folder / "fp16-all.onnx")
    out["fp16-all"] = folder / "fp16-all.onnx"
    _, config = load_checkpoint(arch_dir)
    calib = load_calibration_images("synthetic", config.preprocess, count=calib_images, seed=0)
    settings = CalibrationSettings()
    ranges = calibrate(onnx_path, calib, settings, input_name="images", progress=False)
    save_ranges(folder / "ranges.json", ranges, {"images": calib_images})
    for name, target, exclude in (("int8-tensorrt", "tensorrt", geometry), ("int8-cpu", "cpu", geometry),
                                  ("int8-tensorrt-all", "tensorrt", [])):
        quantize_int8(onnx_path, folder / f"{name}.onnx", get_target(target), folder / "ranges.json", settings,
                      nodes_to_exclude=exclude)
        out[name] = folder / f"{name}.onnx"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="*", default=["maskrcnn", "panet"])
    parser.add_argument("--root", type=Path, default=Path("builds/bench"))
    parser.add_argument("--val-images", type=int, default=128)
    parser.add_argument("--calib-images", type=int, default=128)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    print(f"CPU: {platform.processor() or platform.machine()}")
    print("| arch | variant | mask AP | mask AP50 | box AP | box AP50 | mIoU | mask AP drop (pts) | box AP drop (pts) "
          "| ORT p50 ms (batch 1) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for arch in args.archs:
        arch_dir = args.root / arch
        _, config = load_checkpoint(arch_dir)
        size = tuple(config.preprocess.size)
        val = load_instance_set(open_dataset("synthetic", "val", size=size, seed=0, length=args.val_images),
                                config.preprocess)
        with tempfile.TemporaryDirectory(prefix="segexport-instance-precision-") as tmp:
            folder = Path(tmp)
            exported = export_model(str(arch_dir), out=folder / "export", images=8)
            found = variants(exported.onnx_path, folder, arch_dir, args.calib_images)
            reference = None
            for name, path in found.items():
                try:
                    outputs, p50 = run_outputs(path, (val[0], config.preprocess))
                except SegexportError as exc:  # a variant ONNX Runtime refuses is a result too
                    rows.append({"arch": arch, "variant": name, "error": str(exc).split("(", 1)[-1][:160]})
                    print(f"| {arch} | {name} | does not load: {rows[-1]['error']} |", flush=True)
                    continue
                m = evaluate_instances(outputs, val[1], val[2], tuple(config.classes))
                reference = reference or m
                row = {"arch": arch, "variant": name, **{k: round(m[k], 4) for k in
                                                         ("mask_ap", "mask_ap50", "box_ap", "box_ap50", "miou")},
                       "mask_ap_drop": round(100 * (reference["mask_ap"] - m["mask_ap"]), 2),
                       "box_ap_drop": round(100 * (reference["box_ap"] - m["box_ap"]), 2), "ort_p50_ms": round(p50, 2)}
                rows.append(row)
                print(f"| {arch} | {name} | {row['mask_ap']:.4f} | {row['mask_ap50']:.4f} | {row['box_ap']:.4f} | "
                      f"{row['box_ap50']:.4f} | {row['miou']:.4f} | {row['mask_ap_drop']:.2f} | {row['box_ap_drop']:.2f} | "
                      f"{row['ort_p50_ms']:.1f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
