"""`segexport build ARCH --fp16 --int8` for every seed architecture, one table row per variant.

Each build runs in a fresh subprocess, one at a time. With ``--checkpoints ROOT`` the build
loads ``ROOT/ARCH`` (a folder written by ``segexport train``, e.g. by
``benchmarks/train_tiny.py``) instead of training, so the table isolates export, precision
and verification; without it every build trains from its recipe. Accuracy figures do not
depend on the machine's load; the latency columns do (take them from a quiet machine).

    python benchmarks/build_zoo.py --checkpoints builds/bench            # the ten seed architectures
    python benchmarks/build_zoo.py unet segnet --checkpoints builds/bench
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SEEDS = ("fcn32s", "fcn16s", "fcn8s", "unet", "segnet", "pspnet", "deeplabv1", "deeplabv2", "deeplabv3", "deeplabv3p")


def build(arch: str, out: Path, checkpoints: Path | None, extra: list[str]) -> tuple[int, float, str]:
    """Run one build; (exit code, wall seconds, last stderr line)."""
    cmd = [sys.executable, "-m", "segexport", "build", arch, "--fp16", "--int8", "--out", str(out), "--no-progress"]
    if checkpoints is not None:
        cmd += ["--checkpoint", str(checkpoints / arch)]
    start = time.perf_counter()
    proc = subprocess.run([*cmd, *extra], capture_output=True, text=True, check=False)
    tail = (proc.stderr.strip().splitlines() or [""])[-1]
    return proc.returncode, time.perf_counter() - start, tail


def rows(arch: str, report: dict) -> list[dict]:
    ref = report["reference"]
    out = []
    for v in report["variants"]:
        out.append({"arch": arch, "variant": v["name"], "reference_miou": ref.get("miou"), "miou": v.get("miou"),
                    "drop_pts": v.get("miou_drop_pts"), "agreement": v.get("agreement"), "budget": v.get("budget_pts"),
                    "speedup": v.get("speedup_vs_pytorch"), "pass": v.get("pass"), "skipped": v.get("skipped")})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="*", default=list(SEEDS))
    parser.add_argument("--checkpoints", type=Path, default=None, help="folder of trained checkpoint folders")
    parser.add_argument("--out", type=Path, default=Path("builds/zoo"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results_build_zoo.json"))
    args, extra = parser.parse_known_args()
    old = json.loads(args.json.read_text()) if args.json.exists() else {"builds": [], "rows": []}
    builds = [b for b in old["builds"] if b["arch"] not in args.archs]
    table = [r for r in old["rows"] if r["arch"] not in args.archs]
    for arch in args.archs:
        code, seconds, tail = build(arch, args.out / arch, args.checkpoints, extra)
        report_path = args.out / arch / "report.json"
        report = json.loads(report_path.read_text()) if report_path.exists() else None
        builds.append({"arch": arch, "exit_code": code, "seconds": round(seconds, 1), "stderr_tail": tail,
                       "pass": None if report is None else report["pass"]})
        table += rows(arch, report) if report else []
        print(f"{arch}: exit {code} in {seconds:.0f} s {tail}", flush=True)
    order = {a: i for i, a in enumerate(SEEDS)}
    builds.sort(key=lambda b: order.get(b["arch"], 99))
    table.sort(key=lambda r: order.get(r["arch"], 99))
    args.json.write_text(json.dumps({"builds": builds, "rows": table}, indent=1) + "\n")
    print("\n| arch | variant | mIoU (PyTorch) | mIoU | drop (pts) | budget | agreement | pass |")
    print("|---|---|---|---|---|---|---|---|")
    for r in table:
        if r["skipped"]:
            print(f"| {r['arch']} | {r['variant']} | | | | | | skipped: {r['skipped'][:60]} |")
            continue
        print(f"| {r['arch']} | {r['variant']} | {r['reference_miou']:.4f} | {r['miou']:.4f} | {r['drop_pts']:.2f} | "
              f"{r['budget']} | {r['agreement']:.4f} | {'pass' if r['pass'] else 'FAIL'} |")


if __name__ == "__main__":
    main()
