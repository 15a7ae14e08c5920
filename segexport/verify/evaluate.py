"""Evaluate a checkpoint on a validation split, exactly as training's last evaluation did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from segexport.checkpoint import load_checkpoint
from segexport.data import load_arrays, open_dataset
from segexport.errors import InputError
from segexport.train import evaluate_model
from segexport.verify.metrics import metrics_from_confusion


def evaluate_checkpoint(
    path: str | Path, *, data: str | None = None, images: int | None = None, progress: bool = True
) -> dict[str, Any]:
    """mIoU, pixel accuracy and per-class IoU of a checkpoint folder on a val split.

    Args:
        path: checkpoint folder written by ``segexport train``.
        data: data spec; default: the one the checkpoint was trained on (same seed and size).
        images: evaluate the first N val images (default: the recorded val size).

    Raises:
        InputError: the data set's classes do not match the checkpoint's.
    """
    model, config = load_checkpoint(path)
    recipe = config.training.get("recipe", {})
    spec = data or recipe.get("data", "synthetic")
    seed = int(recipe.get("seed", 0))
    length = images or (config.training.get("val_images") if data is None else None)
    source = open_dataset(spec, "val", size=config.preprocess.size, seed=seed, length=length)
    if len(source.classes) != len(config.classes):
        raise InputError(
            f"data set {spec} has {len(source.classes)} classes but the checkpoint predicts "
            f"{len(config.classes)}; evaluate on data with the same classes"
        )
    arrays = load_arrays(source, config.preprocess, progress=progress)
    with torch.inference_mode():
        cm = evaluate_model(model, arrays[0], arrays[1], config.preprocess, len(config.classes))
    result = metrics_from_confusion(cm).to_dict(config.classes)
    result.update({"data": spec, "images": len(arrays[0]), "checkpoint": str(path)})
    return result
