"""Export every architecture and print the parity table of BENCHMARKS.md (issue 4's checks).

Tiny seed architectures are exported from the checkpoints `benchmarks/train_tiny.py` leaves
in builds/bench/ARCH; torchvision-compatible variants at paper size from a state-dict file in
torchvision's format (keys and shapes identical; weights seeded, since no real torchvision
file can be downloaded here). Every export is verified on ONNX Runtime against PyTorch on 32
synthetic val images and checked for TensorRT compatibility.

    python benchmarks/export_zoo.py                       # everything
    python benchmarks/export_zoo.py fcn8s segnet pspnet
    python benchmarks/export_zoo.py --paper 512 --images 4 parsenet deconvnet fpn encnet

``--paper SIDE`` exports the paper size instead, seeded random weights, at SIDE x SIDE, verified
on ``--images`` val images (the paper sizes' forwards take seconds each on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import onnx
import torch

from segexport.errors import CheckFailed
from segexport.export.trt_check import check_tensorrt_compat
from segexport.models import build_model, list_models
from segexport.pipeline.export_stage import export_model

TORCHVISION = ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101")
WATCHED_OPS = ("ConvTranspose", "MaxUnpool", "ScatterND", "AveragePool", "MatMul", "Resize")


def torchvision_style_file(arch: str, root: Path) -> Path:
    """A torchvision-format state dict (plain torch.save of the paper model's state_dict)."""
    path = root / f"{arch}_torchvision_format.pth"
    if not path.is_file():
        torch.manual_seed(0)
        root.mkdir(parents=True, exist_ok=True)
        torch.save(build_model(arch, size="paper", num_classes=21).state_dict(), path)
    return path


def indices_maxpools(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type == "MaxPool" and len([o for o in n.output if o]) > 1)


def export_one(arch: str, root: Path, paper: int | None = None, images: int = 32) -> dict:
    out = root / arch / ("export" if paper is None else f"export-paper-{paper}")
    start = time.perf_counter()
    if paper is not None:
        result = export_model(arch, size="paper", input_size=(paper, paper), images=images, out=out, force=True)
    elif arch in TORCHVISION:
        kwargs = {"size": "paper", "checkpoint": torchvision_style_file(arch, root / "torchvision_files")}
        result = export_model(arch, out=out, **kwargs)
    else:
        result = export_model(str(root / arch), out=out)
    seconds = time.perf_counter() - start
    summary = result.summary
    model = onnx.load(str(result.onnx_path))
    ops = {op: sum(1 for n in model.graph.node if n.op_type == op) for op in WATCHED_OPS}
    records = json.loads(result.rewrites_path.read_text())["rewrites"]
    actions = [f"{r['rule']}:{r['action']}" for r in records if r["rule"] != "model"]
    return {
        "arch": arch,
        "size": f"paper (random) @{paper}" if paper else "paper" if arch in TORCHVISION else "tiny (trained)",
        "agreement": summary["agreement"], "max_logit_error": summary["max_logit_error"],
        "agreement_vs_original": summary["agreement_vs_original"],
        "max_logit_error_vs_original": summary["max_logit_error_vs_original"],
        "ops": ops, "indices_maxpool": indices_maxpools(model),
        "rewrites": {a: actions.count(a) for a in sorted(set(actions))},
        "tensorrt_ok": check_tensorrt_compat(model).ok, "seconds": round(seconds, 1),
        "onnx_mb": round(result.onnx_path.stat().st_size / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="*")
    parser.add_argument("--root", type=Path, default=Path("builds/bench"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--paper", type=int, metavar="SIDE", help="paper size, random weights, at SIDE x SIDE")
    parser.add_argument("--images", type=int, default=32, help="val images the export is verified on")
    args = parser.parse_args()
    archs = args.archs or [e.name for e in list_models()]
    print("| arch | size | ORT agreement | max logit err | vs unrewritten: agreement / max err | ConvTranspose | MaxUnpool / indices MaxPool | rewrites | TensorRT check | s | ONNX MiB |")
    print("|---|---|---:|---:|---|---:|---|---|---|---:|---:|")
    rows = []
    for arch in archs:
        try:
            row = export_one(arch, args.root, args.paper, args.images)
        except CheckFailed as exc:
            print(f"| {arch} | FAILED: {exc} |")
            continue
        rows.append(row)
        rw = ", ".join(f"{k} x{v}" for k, v in row["rewrites"].items()) or "-"
        print(
            f"| {arch} | {row['size']} | {row['agreement']:.6f} | {row['max_logit_error']:.1e} | "
            f"{row['agreement_vs_original']:.6f} / {row['max_logit_error_vs_original']:.1e} | "
            f"{row['ops']['ConvTranspose']} | {row['ops']['MaxUnpool']} / {row['indices_maxpool']} | {rw} | "
            f"{'pass' if row['tensorrt_ok'] else 'FAIL'} | {row['seconds']:.0f} | {row['onnx_mb']:.0f} |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
