"""Train every tiny architecture with its recipe and print a table (BENCHMARKS.md).

Each run is `segexport train ARCH` in a fresh subprocess, timed wall-clock end to end
(process start, data generation, training, per-epoch validation, checkpoint writing), one
at a time so runs do not compete for the cores. Paper-size parameters and GFLOPs at
1x3x512x512 (21 classes) are counted on the meta device: no memory, no weights.

    python benchmarks/train_tiny.py                 # all registered architectures
    python benchmarks/train_tiny.py deeplabv3p fcn8s
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from segexport.instance_metrics import AP_KEYS
from segexport.models import build_model, list_models


def paper_cost(arch: str) -> tuple[int, float]:
    """(parameters, GFLOPs at 1x3x512x512) of the paper-size model with 21 classes."""
    with torch.device("meta"):
        model = build_model(arch, size="paper", num_classes=21).eval()
        x = torch.empty(1, 3, 512, 512)
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter:
        model(x)
    return params, counter.get_total_flops() / 1e9


def train(arch: str, out: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "segexport", "train", arch, "--json", "--no-progress", "--out", str(out)],
        capture_output=True, text=True, check=False,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{arch}: training failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout), seconds


def evaluate(checkpoint: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "segexport", "evaluate", str(checkpoint), "--json", "--no-progress"],
        capture_output=True, text=True, check=True,
    )
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="*", help="architectures (default: all registered)")
    parser.add_argument("--out", type=Path, default=Path("builds/bench"), help="checkpoint root")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    archs = args.archs or [e.name for e in list_models()]
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| arch | paper params | paper GFLOPs @512 | tiny input | tiny epochs | tiny val mIoU | mask AP50 / AP "
          "| box AP50 / AP | train time (s) | evaluate reproduces mIoU |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---|")
    for arch in archs:
        params, gflops = paper_cost(arch)
        metrics, seconds = train(arch, args.out / arch)
        meta = json.loads((args.out / arch / "model.json").read_text())
        again = evaluate(args.out / arch)
        diff = abs(again["miou"] - metrics["miou"])
        row = {
            "arch": arch, "paper_params": params, "paper_gflops_512": round(gflops, 1),
            "input_size": meta["training"]["recipe"]["input_size"],
            "epochs": meta["training"]["recipe"]["epochs"], "miou": round(metrics["miou"], 4),
            "seconds": round(seconds, 1), "evaluate_abs_diff": diff,
            **{k: round(metrics[k], 4) for k in AP_KEYS if k in metrics},  # instance networks
        }
        ap = ("-", "-") if "mask_ap50" not in row else (f"{row['mask_ap50']:.4f} / {row['mask_ap']:.4f}",
                                                       f"{row['box_ap50']:.4f} / {row['box_ap']:.4f}")
        rows.append(row)
        print(
            f"| {arch} | {params:,} | {gflops:.1f} | {'x'.join(map(str, row['input_size']))} | {row['epochs']} | "
            f"{row['miou']:.4f} | {ap[0]} | {ap[1]} | "
            f"{row['seconds']:.0f} | {'yes' if diff <= 1e-6 else 'NO'} ({diff:.1e}) |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
