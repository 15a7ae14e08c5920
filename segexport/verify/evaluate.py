"""Evaluate a checkpoint on a validation split, exactly as training's last evaluation did.

Under ``torchrun`` every process evaluates its shard of the val images (aligned to the
evaluation batch) on its own device, and the confusion matrices are summed, so the metrics
are those of a single process on the same device, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segexport.checkpoint import load_checkpoint, read_config
from segexport.data import load_arrays, open_dataset
from segexport.distributed import (
    all_reduce_confusion,
    current_context,
    is_main_process,
    shard_source,
)
from segexport.errors import ConfigError, InputError
from segexport.metrics import metrics_from_confusion
from segexport.models import get_entry
from segexport.train import EVAL_BATCH, evaluate_model


@dataclass(frozen=True)
class Evaluation:
    """A checkpoint's confusion matrix on a val split (summed over all processes) and what it covers."""

    confusion: np.ndarray  # int64 [C, C]; row = ground truth, column = prediction
    classes: tuple[str, ...]
    data: str
    images: int


def _val_source(config: Any, data: str | None, images: int | None) -> tuple[Any, str]:
    """The val split a checkpoint is evaluated on, checked against its classes."""
    recipe = config.training.get("recipe", {})
    spec = data or recipe.get("data", "synthetic")
    seed = int(recipe.get("seed", 0))
    length = images or (config.training.get("val_images") if data is None else None)
    source = open_dataset(spec, "val", size=config.preprocess.size, seed=seed, length=length, length_option="--images")
    if len(source.classes) != len(config.classes):
        raise InputError(
            f"data set {spec} has {len(source.classes)} classes but the checkpoint predicts "
            f"{len(config.classes)}; evaluate on data with the same classes"
        )
    return source, spec


def _evaluate_instances(path: str | Path, *, data: str | None, images: int | None, progress: bool) -> dict[str, Any]:
    """An instance checkpoint's COCO mask/box AP and rendered-map mIoU, as training's last evaluation."""
    from segexport.train_instance import (
        evaluate_instances,
        load_instance_set,
        predict_instances,
    )

    if current_context() is not None:
        raise ConfigError("instance checkpoints evaluate in one process; run `segexport evaluate` without torchrun")
    model, config = load_checkpoint(path)
    source, spec = _val_source(config, data, images)
    val = load_instance_set(source, config.preprocess, progress=progress)
    result = evaluate_instances(predict_instances(model, val[0], config.preprocess), val[1], val[2],
                                tuple(config.classes))
    result.update({"data": spec, "images": len(source), "checkpoint": str(path)})
    return result


def evaluate_confusion(
    path: str | Path, *, data: str | None = None, images: int | None = None, progress: bool = True
) -> Evaluation:
    """The confusion matrix of a checkpoint folder on a val split (see :func:`evaluate_checkpoint`).

    Raises:
        InputError: the data set's classes do not match the checkpoint's.
    """
    model, config = load_checkpoint(path)
    source, spec = _val_source(config, data, images)
    ctx = current_context()
    if ctx is not None:
        model.to(ctx.device)
    arrays = load_arrays(shard_source(source, block=EVAL_BATCH), config.preprocess,
                         progress=progress and is_main_process())
    with torch.inference_mode():
        cm = evaluate_model(model, arrays[0], arrays[1], config.preprocess, len(config.classes))
    return Evaluation(all_reduce_confusion(cm), tuple(config.classes), spec, len(source))


def evaluate_checkpoint(
    path: str | Path, *, data: str | None = None, images: int | None = None, progress: bool = True
) -> dict[str, Any]:
    """mIoU, pixel accuracy and per-class IoU of a checkpoint folder on a val split.

    Args:
        path: checkpoint folder written by ``segexport train``.
        data: data spec; default: the one the checkpoint was trained on (same seed and size).
        images: evaluate the first N val images (default: the recorded val size).
        progress: show a progress bar (rank 0 only in a distributed run).

    Returns:
        ``miou``, ``pixel_acc``, ``per_class_iou``, ``data``, ``images`` (all of them, every
        process's shard together) and ``checkpoint``; the same on every process.

    Raises:
        InputError: the data set's classes do not match the checkpoint's.
    """
    if get_entry(read_config(path).arch).task == "instance":
        return _evaluate_instances(path, data=data, images=images, progress=progress)
    ev = evaluate_confusion(path, data=data, images=images, progress=progress)
    result = metrics_from_confusion(ev.confusion).to_dict(ev.classes)
    result.update({"data": ev.data, "images": ev.images, "checkpoint": str(path)})
    return result
