"""OpenVINO INT8 accuracy of every trained tiny seed architecture: which Q/DQ graph OpenVINO should get.

For each checkpoint folder ``ROOT/ARCH`` (``benchmarks/train_tiny.py``) and its
``export/model.onnx`` (``benchmarks/export_zoo.py``): one calibration (minmax, the 256 images of
the built-in ``calib`` split that ``segexport quantize`` uses by default), every candidate INT8
graph of ``benchmarks/openvino_int8.py`` made from those ranges, and NNCF's default
``nncf.quantize`` calibrated on the same 256 images. Every engine then labels the same 128
``val`` images; the table gives PyTorch FP32's mIoU and each engine's drop against it in points
(positive = worse), with the fraction of pixels whose label equals PyTorch's. Accuracy only:
no timing, so the figures do not depend on the machine's load.

Whether the chosen target's drop differs from NNCF's by more than the val sample can tell is
judged by a paired bootstrap over the val images: both engines' per-image confusion matrices are
resampled with the same image draws, and the 95% interval of NNCF's mIoU minus the target's
(= the target's drop minus NNCF's; PyTorch's mIoU cancels) is printed beside the gap.

    python benchmarks/openvino_accuracy.py                          # the ten seed architectures
    python benchmarks/openvino_accuracy.py segnet unet --json builds/ov/accuracy.json

NNCF is the peer baseline only, not a segexport dependency: ``.venv/bin/pip install -c
constraints.txt -e '.[bench]'`` installs it (with scipy and scikit-learn).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from openvino_int8 import (
    CANDIDATES,
    CHOSEN,
    NNCF_IR,
    calibrated,
    nncf_default,
    quantize_candidates,
)

from segexport.metrics import confusion_matrix, metrics_from_confusion
from segexport.precision.calibrate import CalibrationSettings
from segexport.precision.calibration_data import DEFAULT_CALIB_IMAGES
from segexport.precision.evaluate import ValData, load_val
from segexport.precision.onnx_model import read_model_info
from segexport.runners.base import Runner
from segexport.runners.onnxruntime_runner import OnnxRuntimeRunner
from segexport.runners.openvino_runner import OpenVINORunner
from segexport.runners.torch_runner import TorchRunner

SEEDS = ("fcn32s", "fcn16s", "fcn8s", "unet", "segnet", "pspnet", "deeplabv1", "deeplabv2", "deeplabv3", "deeplabv3p")
VAL_IMAGES = 128
BATCH = 16
BOOTSTRAP = 2000  # resamples of the val images for the gap's interval


def labels_of(runner: Runner, val: ValData) -> np.ndarray:
    """The runner's argmax labels on every val image, ``BATCH`` images at a time."""
    out = [runner.run(val.normalised(start, min(start + BATCH, len(val)))).argmax(1)
           for start in range(0, len(val), BATCH)]
    runner.close()
    return np.concatenate(out).astype(np.uint8)


def miou(labels: np.ndarray, val: ValData) -> float:
    return metrics_from_confusion(confusion_matrix(val.masks, labels, len(val.classes))).miou


def per_image_confusions(labels: np.ndarray, val: ValData) -> np.ndarray:
    """``[N, C*C]`` float: one flattened confusion matrix per val image."""
    n = len(val.classes)
    return np.stack([confusion_matrix(m, l, n).reshape(-1) for m, l in zip(val.masks, labels)]).astype(np.float64)


def mious(cms: np.ndarray, n: int) -> np.ndarray:
    """mIoU of each row of ``cms`` ``[B, C*C]`` (flattened confusion matrices)."""
    return np.array([metrics_from_confusion(cm.reshape(n, n)).miou for cm in cms])


def gap_interval(target: np.ndarray, peer: np.ndarray, n: int, seed: int = 0) -> tuple[float, float, float]:
    """(gap, low, high) in points: the target's mIoU drop minus the peer's on all images, and the
    2.5th and 97.5th percentiles of that gap over :data:`BOOTSTRAP` paired resamples of the images
    (``target`` and ``peer`` from :func:`per_image_confusions`)."""
    count = len(target)
    draws = np.random.default_rng(seed).multinomial(count, np.full(count, 1.0 / count), size=BOOTSTRAP)
    draws = draws.astype(np.float64)
    gaps = 100.0 * (mious(draws @ peer, n) - mious(draws @ target, n))
    whole = 100.0 * (mious(peer.sum(0, keepdims=True), n) - mious(target.sum(0, keepdims=True), n))[0]
    low, high = np.percentile(gaps, [2.5, 97.5])
    return float(whole), float(low), float(high)


def engines(ckpt: Path, out: Path, int8: dict[str, Path], threads: int) -> dict[str, Runner]:
    """Every engine judged, PyTorch FP32 (the reference) first."""
    fp32 = ckpt / "export" / "model.onnx"
    found = {"pytorch fp32": TorchRunner(ckpt, threads=threads),
             "onnxruntime int8 cpu": OnnxRuntimeRunner(int8["cpu"], threads=threads),
             "openvino fp32": OpenVINORunner(fp32, threads=threads, inference_precision="f32")}
    for name, path in int8.items():
        found[f"openvino int8 {name}"] = OpenVINORunner(path, threads=threads, precision="int8")
    found["openvino int8 nncf default"] = OpenVINORunner(out / NNCF_IR, threads=threads, precision="int8")
    return found


def run_arch(arch: str, root: Path, out_root: Path, threads: int, val_images: int = VAL_IMAGES) -> dict:
    """Quantize ``root/arch/export/model.onnx`` every way into ``out_root/arch`` and judge each engine."""
    ckpt = root / arch
    onnx_path = ckpt / "export" / "model.onnx"
    out = out_root / arch
    out.mkdir(parents=True, exist_ok=True)
    ranges_path, images = calibrated(onnx_path, out, DEFAULT_CALIB_IMAGES)
    int8 = quantize_candidates(onnx_path, ranges_path, CalibrationSettings("minmax"), out, list(CANDIDATES))
    nncf_default(onnx_path, images, out / NNCF_IR)
    info = read_model_info(onnx_path)
    val = load_val("synthetic", info.preprocess, count=val_images, seed=0,
                   num_classes=len(info.classes) if info.classes else None)
    labels = {name: labels_of(runner, val) for name, runner in engines(ckpt, out, int8, threads).items()}
    reference = labels["pytorch fp32"]
    ref_miou = miou(reference, val)
    rows = {name: {"drop": 100.0 * (ref_miou - miou(got, val)), "agreement": float((got == reference).mean())}
            for name, got in labels.items() if name != "pytorch fp32"}
    gap, low, high = gap_interval(per_image_confusions(labels[f"openvino int8 {CHOSEN}"], val),
                                  per_image_confusions(labels["openvino int8 nncf default"], val), len(val.classes))
    return {"arch": arch, "pytorch_fp32_miou": ref_miou, "calib_images": len(images), "val_images": len(val),
            "engines": rows, "target_minus_nncf_drop": {"gap": gap, "ci95": [low, high]}}


def print_table(results: list[dict]) -> None:
    names = list(results[0]["engines"])
    print("\n| arch | PyTorch FP32 mIoU | " + " | ".join(names) + f" | {CHOSEN} drop - NNCF drop (95% interval) |")
    print("|---|---:|" + "---:|" * (len(names) + 1))
    for r in results:
        cells = [f"{r['engines'][n]['drop']:.2f} / {r['engines'][n]['agreement']:.4f}" for n in names]
        g = r["target_minus_nncf_drop"]
        cells.append(f"{g['gap']:+.2f} ({g['ci95'][0]:+.2f}, {g['ci95'][1]:+.2f})")
        print(f"| {r['arch']} | {r['pytorch_fp32_miou']:.4f} | " + " | ".join(cells) + " |")
    chosen, nncf = f"openvino int8 {CHOSEN}", "openvino int8 nncf default"
    ok = [r["arch"] for r in results
          if r["engines"][chosen]["drop"] <= min(0.5, r["engines"][nncf]["drop"])]
    worse = [r["arch"] for r in results if r["target_minus_nncf_drop"]["ci95"][0] > 0]
    print(f"\n(drop vs PyTorch FP32 in mIoU points / label agreement with PyTorch; {CHOSEN} within "
          f"0.5 points and NNCF's drop: {len(ok)} of {len(results)}: {', '.join(ok) or 'none'}; "
          f"NNCF's drop lower beyond the 95% interval: {', '.join(worse) or 'none'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="*", default=list(SEEDS))
    parser.add_argument("--root", type=Path, default=Path("builds/bench"), help="folder of checkpoint folders")
    parser.add_argument("--out", type=Path, default=Path("builds/bench/openvino"), help="INT8 models go here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--val-images", type=int, default=VAL_IMAGES,
                        help="val images judged (128: the issue's protocol; more to resolve small gaps)")
    args = parser.parse_args()
    results = []
    for arch in args.archs:
        results.append(run_arch(arch, args.root, args.out, args.threads, args.val_images))
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print_table(results)


if __name__ == "__main__":
    main()
