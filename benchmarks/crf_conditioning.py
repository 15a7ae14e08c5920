"""How well conditioned the ConvCRF is, by iterations: why ``--crf conv`` runs 3 of them.

For a trained checkpoint (default: the tiny deeplabv1 of ``benchmarks/crf_gain.py``), on the
same float32 logits of its val images: the PyTorch ConvCRF's float32 result against float64,
how far a 1e-7 relative change of the logits moves it, the CRF alone exported to ONNX and run
on ONNX Runtime against PyTorch, and val mIoU.

    python benchmarks/crf_conditioning.py --checkpoint builds/bench/deeplabv1
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from segexport.checkpoint import load_checkpoint
from segexport.data import load_arrays, normalize_batch, open_dataset
from segexport.postprocess import ConvCRF, crf_params, score_labels
from segexport.recipe import load_recipe
from segexport.runners.onnxruntime_runner import open_session


def batched(fn, *tensors: torch.Tensor, batch: int = 4) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([fn(*(t[i : i + batch] for t in tensors)).numpy() for i in range(0, len(tensors[0]), batch)])


def onnx_crf(crf: ConvCRF, logits: torch.Tensor, x: torch.Tensor) -> np.ndarray:
    """The CRF alone (logits and images in) exported and run on ONNX Runtime."""
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "crf.onnx"
        torch.onnx.export(crf, (logits[:1], x[:1]), str(path), input_names=["logits", "images"], opset_version=18,
                          dynamo=False, dynamic_axes={"logits": {0: "n"}, "images": {0: "n"}})
        session = open_session(path)
    return np.concatenate([session.run(None, {"logits": logits[i : i + 4].numpy(), "images": x[i : i + 4].numpy()})[0]
                           for i in range(0, len(x), 4)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("builds/bench/crf/deeplabv1"))
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--iterations", type=int, nargs="+", default=[1, 2, 3, 5, 10])
    args = parser.parse_args()
    model, config = load_checkpoint(args.checkpoint)
    model.eval()
    recipe = load_recipe(config.arch)
    source = open_dataset(recipe.data, "val", size=config.preprocess.size, seed=recipe.seed, length=args.images)
    images, masks = load_arrays(source, config.preprocess)
    x = normalize_batch(torch.from_numpy(images), config.preprocess)
    logits = torch.from_numpy(batched(model, x))
    noisy = logits * (1 + 1e-7 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(0)))
    classes = len(config.classes)
    base = score_labels(masks, logits.argmax(1).numpy(), classes)["miou"]
    print(f"{config.arch}, {len(x)} val images, torch {torch.__version__}; val mIoU without CRF {base:.4f}")
    print("| iterations | float32 vs float64 | moved by 1e-7 change | ONNX Runtime vs PyTorch (CRF alone) | val mIoU |")
    print("|---:|---:|---:|---:|---:|")
    for n in args.iterations:
        params = dataclasses.replace(crf_params(recipe), iterations=n)
        crf = ConvCRF(params, mean=config.preprocess.mean, std=config.preprocess.std).eval()
        single = batched(crf, logits, x)
        double = batched(copy.deepcopy(crf).double(), logits.double(), x.double())
        moved = np.abs(batched(crf, noisy, x) - single).max()
        ort = np.abs(onnx_crf(crf, logits, x) - single).max()
        miou = score_labels(masks, single.argmax(1), classes)["miou"]
        print(f"| {n} | {np.abs(single - double).max():.1e} | {moved:.1e} | {ort:.1e} | {miou:.4f} |", flush=True)


if __name__ == "__main__":
    main()
