"""What the dense CRF buys DeepLab v1 and v2: val mIoU and boundary (trimap) mIoU with and
without the host CRF and the exported ConvCRF.

For each architecture: a tiny model trained with its recipe (or the checkpoint folder given
with ``--checkpoint ARCH=DIR``), its logits on the recipe's val split from the torch runner,
then (1) no CRF, (2) the host dense CRF with the recipe's parameters (timed per image), (3) the
model exported with ``--crf conv`` and run on ONNX Runtime, at the ConvCRF's default iterations
and at the host CRF's (with the export's max logit error against PyTorch and the CRF's own
float32-vs-float64 error). Trimap mIoU counts pixels within
``--band`` pixels of a true boundary. ``--tune`` grid-searches the host CRF's parameters on the
calib split instead (never on val) and prints the best settings.

    python benchmarks/crf_gain.py                                  # trains into builds/bench/crf/ARCH
    python benchmarks/crf_gain.py --checkpoint deeplabv1=builds/bench/deeplabv1 --checkpoint deeplabv2=builds/bench/deeplabv2
    python benchmarks/crf_gain.py --tune --checkpoint deeplabv1=builds/bench/deeplabv1
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segexport.checkpoint import load_checkpoint
from segexport.data import load_arrays, normalize_batch, open_dataset
from segexport.pipeline.export_stage import export_model
from segexport.postprocess import (
    DEFAULT_BAND,
    CrfParams,
    crf_params,
    dense_crf,
    label_agreement,
    score_labels,
)
from segexport.postprocess.conv_crf import DEFAULT_ITERATIONS
from segexport.recipe import load_recipe
from segexport.runners import open_runner

ARCHS = ("deeplabv1", "deeplabv2")
TUNE_GRID = {  # w1, theta_alpha, theta_beta, theta_gamma (w2 = 3 and 10 iterations, as in the papers)
    "appearance_weight": (4.0, 5.0, 6.0),
    "appearance_xy": (10.0, 15.0, 20.0, 30.0),
    "appearance_rgb": (10.0, 15.0, 20.0, 30.0),
    "smoothness_xy": (1.0, 3.0),
}


def checkpoint_for(arch: str, given: dict[str, Path], root: Path) -> Path:
    """The given checkpoint folder, or one trained now with the arch's recipe."""
    if arch in given:
        return given[arch]
    from segexport.train_run import train_checkpoint

    out = root / arch
    if not (out / "model.json").is_file():
        train_checkpoint(load_recipe(arch), out, progress=False)
    return out


def split_arrays(checkpoint: Path, split: str, count: int | None) -> tuple[Any, np.ndarray, np.ndarray]:
    _, config = load_checkpoint(checkpoint)
    recipe = load_recipe(config.arch)
    source = open_dataset(recipe.data, split, size=config.preprocess.size, seed=recipe.seed, length=count)
    images, masks = load_arrays(source, config.preprocess)
    return config, images, masks


def logits_of(artifact: Path, images: np.ndarray, preprocess: Any, batch: int = 8) -> np.ndarray:
    with open_runner(artifact) as runner:
        chunks = []
        for i in range(0, len(images), batch):
            x = normalize_batch(torch.from_numpy(images[i : i + batch]), preprocess).numpy()
            chunks.append(runner.run(x))
    return np.concatenate(chunks)


def host_crf(logits: np.ndarray, images: np.ndarray, params: CrfParams) -> tuple[np.ndarray, float]:
    """Refined logits and the median CRF milliseconds per image."""
    out, times = np.empty_like(logits), []
    for i in range(len(logits)):
        start = time.perf_counter()
        out[i] = dense_crf(logits[i : i + 1], images[i : i + 1], params)[0]
        times.append(1000.0 * (time.perf_counter() - start))
    return out, float(np.median(times))


def gain_rows(arch: str, checkpoint: Path, count: int | None, band: int) -> list[dict[str, Any]]:
    config, images, masks = split_arrays(checkpoint, "val", count)
    classes, params = len(config.classes), crf_params(load_recipe(arch))
    logits = logits_of(checkpoint, images, config.preprocess)
    host, host_ms = host_crf(logits, images, params)
    base = score_labels(masks, logits.argmax(1), classes, band)
    rows = [{"arch": arch, "variant": "pytorch", **base}]
    rows.append({"arch": arch, "variant": "pytorch+crf (host)", **score_labels(masks, host.argmax(1), classes, band),
                 "crf_ms": host_ms, "agreement_vs_host": 1.0})
    for iterations in sorted({DEFAULT_ITERATIONS, params.iterations}):
        with tempfile.TemporaryDirectory() as tmp:
            exported = export_model(str(checkpoint), out=tmp, crf="conv", crf_iterations=iterations, images=8)
            conv = logits_of(exported.onnx_path, images, config.preprocess)
        report = exported.summary["crf_vs_host"]
        rows.append({"arch": arch, "variant": f"onnx --crf conv ({report['window']}x{report['window']}, dilation "
                     f"{report['dilation']}, {iterations} iterations)",
                     **score_labels(masks, conv.argmax(1), classes, band), "crf_ms": None,
                     "agreement_vs_host": label_agreement(conv, host),
                     "max_error_vs_pytorch": exported.summary["max_logit_error"],
                     "float32_error": report["float32_error"]})
    for row in rows:
        row.update(images=len(images), miou_gain_pts=100 * (row["miou"] - base["miou"]),
                   trimap_gain_pts=100 * (row["trimap_miou"] - base["trimap_miou"]), crf=params.to_dict())
    return rows


def tune(arch: str, checkpoint: Path, count: int, band: int) -> list[tuple[float, float, CrfParams]]:
    """(mIoU gain, trimap gain, params) of every grid point on the calib split, best first."""
    config, images, masks = split_arrays(checkpoint, "calib", count)
    classes = len(config.classes)
    logits = logits_of(checkpoint, images, config.preprocess)
    base = score_labels(masks, logits.argmax(1), classes, band)
    results = []
    for values in itertools.product(*TUNE_GRID.values()):
        params = CrfParams(**dict(zip(TUNE_GRID, values)))
        got = score_labels(masks, dense_crf(logits, images, params).argmax(1), classes, band)
        results.append((100 * (got["miou"] - base["miou"]), 100 * (got["trimap_miou"] - base["trimap_miou"]), params))
    return sorted(results, key=lambda r: -r[0])


def print_rows(rows: list[dict[str, Any]], band: int) -> None:
    print(f"| arch | variant | val mIoU | trimap mIoU ({band} px) | mIoU gain (pts) | trimap gain (pts) | "
          "host CRF ms/image | label agreement with host CRF | max |ONNX - PyTorch| | PyTorch float32 vs float64 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ms = "-" if r.get("crf_ms") is None else f"{r['crf_ms']:.0f}"
        agree = "-" if r.get("agreement_vs_host") is None else f"{r['agreement_vs_host']:.4f}"
        err, floor = (("-" if r.get(k) is None else f"{r[k]:.1e}") for k in ("max_error_vs_pytorch", "float32_error"))
        print(f"| {r['arch']} | {r['variant']} | {r['miou']:.4f} | {r['trimap_miou']:.4f} | "
              f"{r['miou_gain_pts']:+.2f} | {r['trimap_gain_pts']:+.2f} | {ms} | {agree} | {err} | {floor} |", flush=True)


def parse_checkpoints(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        arch, sep, path = item.partition("=")
        if not sep or arch not in ARCHS:
            raise SystemExit(f"--checkpoint takes ARCH=DIR with ARCH in {', '.join(ARCHS)}, got {item!r}")
        out[arch] = Path(path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="*", default=list(ARCHS), help="deeplabv1 and/or deeplabv2")
    parser.add_argument("--checkpoint", action="append", default=[], help="ARCH=DIR: use this checkpoint folder")
    parser.add_argument("--root", type=Path, default=Path("builds/bench/crf"), help="where to train missing checkpoints")
    parser.add_argument("--images", type=int, help="val images (default: the recipe's val split)")
    parser.add_argument("--band", type=int, default=DEFAULT_BAND, help="trimap half-width in pixels")
    parser.add_argument("--tune", action="store_true", help="grid-search the host CRF on the calib split")
    parser.add_argument("--tune-images", type=int, default=48)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    given = parse_checkpoints(args.checkpoint)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows: list[dict[str, Any]] = []
    for arch in args.archs:
        checkpoint = checkpoint_for(arch, given, args.root)
        if args.tune:
            for miou, trimap, p in tune(arch, checkpoint, args.tune_images, args.band)[:5]:
                print(f"{arch}: mIoU {miou:+.2f} pts, trimap {trimap:+.2f} pts: {p}", flush=True)
            continue
        rows += gain_rows(arch, checkpoint, args.images, args.band)
    if rows:
        print_rows(rows, args.band)
    if args.json and rows:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
