"""Host dense CRF speed: one 512x512 image, 21 classes, 10 mean-field iterations.

The image is a built-in synthetic scene rendered at 512x512; the logits are its mask as a
21-class one-hot plus Gaussian noise (what the CRF costs does not depend on the weights of a
network). Each parameter set (the published DeepLab v1 and v2 values, and the tuned values of
the deeplabv1 recipe) is timed end to end (lattice construction included) after one warm-up;
the median of ``--runs`` runs is reported. The target is at most 2 s.

    python benchmarks/crf_speed.py                  # torch's default threads
    python benchmarks/crf_speed.py --threads 1 --runs 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from segexport.data import Preprocess, load_arrays, open_dataset
from segexport.postprocess import (
    DEEPLAB_V1,
    DEEPLAB_V2,
    CrfParams,
    crf_params,
    dense_crf,
)
from segexport.recipe import load_recipe

TARGET_SECONDS = 2.0


def inputs(side: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(logits (1, classes, side, side) float32, image (1, side, side, 3) uint8)."""
    pre = Preprocess(size=(side, side))
    images, masks = load_arrays(open_dataset("synthetic", "val", size=(side, side), seed=seed, length=1), pre)
    onehot = np.eye(classes, dtype=np.float32)[np.minimum(masks, classes - 1)].transpose(0, 3, 1, 2)
    noise = np.random.default_rng(seed).normal(0.0, 1.0, onehot.shape).astype(np.float32)
    return 2.0 * onehot + noise, images


def time_crf(logits: np.ndarray, images: np.ndarray, params: CrfParams, runs: int) -> list[float]:
    dense_crf(logits, images, params)  # warm-up: allocator, oneDNN kernels
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        dense_crf(logits, images, params)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=512, help="image height and width")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's setting)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logits, images = inputs(args.side, args.classes, seed=0)
    presets = {"deeplabv1 paper": DEEPLAB_V1, "deeplabv2 paper": DEEPLAB_V2,
               "deeplabv1 recipe": crf_params(load_recipe("deeplabv1"))}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.side}x{args.side}, "
          f"{args.classes} classes, {args.iterations} iterations, median of {args.runs}")
    print("| parameters | w1, theta_alpha, theta_beta, w2, theta_gamma | median (s) | min (s) | max (s) | <= 2 s |")
    print("|---|---|---:|---:|---:|---|")
    rows = []
    for name, preset in presets.items():
        params = CrfParams(**{**preset.to_dict(), "iterations": args.iterations})
        times = time_crf(logits, images, params, args.runs)
        median = statistics.median(times)
        rows.append({"parameters": name, "crf": params.to_dict(), "median_s": median, "min_s": min(times),
                     "max_s": max(times), "threads": torch.get_num_threads(), "side": args.side,
                     "classes": args.classes})
        p = params
        print(f"| {name} | {p.appearance_weight:g}, {p.appearance_xy:g}, {p.appearance_rgb:g}, "
              f"{p.smoothness_weight:g}, {p.smoothness_xy:g} | {median:.3f} | {min(times):.3f} | "
              f"{max(times):.3f} | {'yes' if median <= TARGET_SECONDS else 'NO'} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
