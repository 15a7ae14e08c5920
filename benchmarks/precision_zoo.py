"""INT8 (tensorrt and cpu targets) and FP16 accuracy of every trained tiny seed architecture.

For each architecture, takes a checkpoint folder written by ``segexport train`` and its
``export/model.onnx`` (``benchmarks/export_zoo.py`` makes both under ``builds/bench/ARCH``),
runs ``segexport quantize`` for the three variants with the recipe's budgets (sensitivity
pass included), and prints one table row per variant: the mIoU of PyTorch FP32 (the
checkpoint's val metrics), of the FP32 ONNX model on ONNX Runtime and of the variant, the drop
against PyTorch in points, the layers kept in FP32, and pass/fail. Accuracy only: no timing,
so other processes on the machine do not change the figures.

    python benchmarks/precision_zoo.py                       # the ten seed architectures
    python benchmarks/precision_zoo.py fcn8s unet --root builds/bench
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from segexport.checkpoint import read_metrics
from segexport.errors import CheckFailed
from segexport.precision.stage import quantize_model
from segexport.precision.summary import read_summaries

SEEDS = ("fcn32s", "fcn16s", "fcn8s", "unet", "segnet", "pspnet", "deeplabv1", "deeplabv2", "deeplabv3", "deeplabv3p")
VARIANTS = (("int8.tensorrt", {"precision": "int8", "target": "tensorrt"}),
            ("int8.cpu", {"precision": "int8", "target": "cpu"}),
            ("fp16", {"precision": "fp16"}))


def run_arch(arch: str, root: Path, out_root: Path) -> list[dict[str, Any]]:
    """Quantize ``root/arch/export/model.onnx`` three ways into ``out_root/arch``; one row per variant."""
    ckpt = root / arch
    onnx_path = ckpt / "export" / "model.onnx"
    out = out_root / arch
    out.mkdir(parents=True, exist_ok=True)
    torch_miou = read_metrics(ckpt)["miou"]
    rows = []
    for name, options in VARIANTS:
        try:
            quantize_model(onnx_path, out=out, progress=False, **options)
        except CheckFailed as exc:
            print(f"{arch} {name}: {exc}", flush=True)
        summary = read_summaries(out)[name]
        acc = summary["accuracy"]
        half = summary.get("true_half")
        row = {
            "arch": arch, "variant": name, "budget": summary["budget_points"],
            "torch_fp32": torch_miou, "ort_fp32": acc["reference"]["miou"], "miou": acc["variant"]["miou"],
            "drop_vs_torch": 100 * (torch_miou - acc["variant"]["miou"]),
            "drop_vs_ort": acc["drop_points"], "agreement": acc["agreement"],
            "kept_fp32": len(summary.get("kept_fp32", [])), "pass": not summary["problems"],
        }
        if half is not None:
            row["true_half_drop"] = half["drop_points"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="*", default=list(SEEDS))
    parser.add_argument("--root", type=Path, default=Path("builds/bench"), help="folder of checkpoint folders")
    parser.add_argument("--out", type=Path, default=Path("builds/bench/precision"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results_precision_zoo.json"))
    args = parser.parse_args()
    old = json.loads(args.json.read_text()) if args.json.exists() else []
    rows = [r for r in old if r["arch"] not in args.archs]
    for arch in args.archs:
        rows += run_arch(arch, args.root, args.out)
    rows.sort(key=lambda r: (SEEDS.index(r["arch"]) if r["arch"] in SEEDS else 99, r["variant"]))
    args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print("\n| arch | variant | budget | PyTorch FP32 | ORT FP32 | variant | drop vs PyTorch (pts) | kept FP32 | pass |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        extra = f" (true half {r['true_half_drop']:.2f})" if "true_half_drop" in r else ""
        print(f"| {r['arch']} | {r['variant']} | {r['budget']} | {r['torch_fp32']:.4f} | {r['ort_fp32']:.4f} | "
              f"{r['miou']:.4f} | {r['drop_vs_torch']:.2f}{extra} | {r['kept_fp32']} | {'pass' if r['pass'] else 'FAIL'} |")


if __name__ == "__main__":
    main()
