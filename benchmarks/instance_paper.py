"""Paper-size instance networks: export at SIDE x SIDE with seeded random weights, ONNX Runtime vs
PyTorch detections, TensorRT check, and CPU latency of PyTorch eager and ONNX Runtime (batch 1).

    python benchmarks/instance_paper.py --side 800 --images 2 maskrcnn panet

A random network's class scores sit near 1/91, under the 0.05 score threshold, so nothing would be
detected and the comparison would be empty: the box classifier's bias is raised for classes 1-5
(``--bias``) so that detections exist. Latency ratios are measured in one run, alternating engines.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from segexport.export.onnx_export import export_onnx
from segexport.export.trt_check import check_tensorrt_compat
from segexport.export.verify_instances import verify_instance_onnx
from segexport.models import build_model
from segexport.runners.onnxruntime_runner import open_session


def _p50(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def run(arch: str, side: int, images: int, bias: float, repeats: int, root: Path) -> dict:
    torch.manual_seed(0)
    model = build_model(arch, size="paper", num_classes=91).eval()
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[1:6] += bias
    path = root / f"{arch}-paper-{side}.onnx"
    start = time.perf_counter()
    exported = export_onnx(model, path, input_size=(side, side))
    export_s = time.perf_counter() - start
    x = torch.randn(images, 3, side, side, generator=torch.Generator().manual_seed(1))
    report = verify_instance_onnx(path, model, x)
    session = open_session(path)
    one = x[:1]
    with torch.no_grad():
        torch_ms = _p50(lambda: model(one), repeats)
    ort_ms = _p50(lambda: session.run(None, {"images": one.numpy()}), repeats)
    proto = onnx.load(str(path), load_external_data=False)
    return {
        "arch": arch, "side": side, "images": images, "params": sum(p.numel() for p in model.parameters()),
        "nodes": exported.nodes_final, "domains": sorted({n.domain or "ai.onnx" for n in proto.graph.node}),
        "tensorrt_ok": check_tensorrt_compat(proto).ok, "export_s": round(export_s, 1),
        "batch_1": report["batch_1"], "batch_4": report["batch_4"], "passed": report["passed"],
        "torch_p50_ms": round(torch_ms, 1), "ort_fp32_p50_ms": round(ort_ms, 1),
        "ort_speedup": round(torch_ms / ort_ms, 2), "threads": torch.get_num_threads(), "cpu": platform.processor(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="*", default=["maskrcnn", "panet"])
    parser.add_argument("--side", type=int, default=800)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--bias", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", type=Path, default=Path("builds/bench/instance-paper"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    rows = []
    print("| arch | side | params | detections matched b1 / b4 | worst IoU / score / mask | TensorRT check | "
          "domains | PyTorch p50 ms | ORT FP32 p50 ms | ORT speed-up | export s |")
    print("|---|---:|---:|---|---|---|---|---:|---:|---:|---:|")
    for arch in args.archs:
        r = run(arch, args.side, args.images, args.bias, args.repeats, args.root)
        rows.append(r)
        b1, b4 = r["batch_1"], r["batch_4"]
        print(f"| {arch} | {r['side']} | {r['params'] / 1e6:.1f} M | {b1['matched']}/{b1['reference']} / "
              f"{b4['matched']}/{b4['reference']} | {min(b1['min_box_iou'], b4['min_box_iou']):.6f} / "
              f"{max(b1['max_score_error'], b4['max_score_error']):.1e} / {max(b1['max_mask_error'], b4['max_mask_error']):.1e} | "
              f"{'pass' if r['tensorrt_ok'] else 'FAIL'} | {', '.join(r['domains'])} | {r['torch_p50_ms']:.0f} | "
              f"{r['ort_fp32_p50_ms']:.0f} | {r['ort_speedup']:.2f}x | {r['export_s']:.0f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=lambda o: np.asarray(o).tolist()) + "\n")


if __name__ == "__main__":
    main()
