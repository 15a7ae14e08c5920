"""Judging an instance network's FP16 or INT8 model: COCO AP on val images against the FP32 graph.

A semantic variant is judged by its mIoU drop; an instance variant by its AP drop, the larger of
the mask AP and box AP drops (AP@[.5:.95], in points), with the rendered map's mIoU reported
beside. Its geometry (:mod:`segexport.precision.instance_graph`) is always kept FP32, so there
is no sensitivity pass: the feature part is all that is left to trade.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segexport.data import Preprocess, normalize_batch, open_dataset
from segexport.data.instances import Instances
from segexport.errors import InputError
from segexport.instance_outputs import outputs_in_batches
from segexport.train_instance import evaluate_instances, load_instance_set

BATCH = 8
DEFAULT_VAL_IMAGES = 64
REFERENCE_LABEL = "FP32 ONNX model on ONNX Runtime (CPU provider)"


@dataclass(frozen=True)
class InstanceVal:
    """Val images (normalised, and as ``pixels``: uint8 ``[N, H, W, 3]``), their semantic maps
    and objects, and the classes."""

    source: str
    images: np.ndarray
    masks: np.ndarray
    truth: list[Instances]
    classes: tuple[str, ...]
    pixels: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


def load_instance_val(spec: str, preprocess: Preprocess, *, count: int | None, seed: int,
                      classes: tuple[str, ...], option: str = "--val",
                      count_option: str = "--val-images") -> InstanceVal:
    """The val split of ``spec`` at the model's input size (``count`` images, default
    ``DEFAULT_VAL_IMAGES``); ``option`` and ``count_option`` are the flags errors name.

    Raises:
        InputError: an empty split, a sample without instance labels, or classes that are not the model's.
    """
    import torch

    source = open_dataset(spec, "val", size=preprocess.size, seed=seed, length=count or DEFAULT_VAL_IMAGES,
                          length_option=count_option)
    if len(source.classes) != len(classes):
        raise InputError(f"{option} {spec} has {len(source.classes)} classes but the model predicts {len(classes)}; "
                         f"pass {option} with the model's data")
    if len(source) == 0:
        raise InputError(f"{spec}: the val split is empty; pass {option} with val images")
    images, masks, truth = load_instance_set(source, preprocess)
    x = normalize_batch(torch.from_numpy(images), preprocess).numpy()
    return InstanceVal(spec, x, masks, truth, tuple(classes), images)


def instance_metrics(path: str | Path, val: InstanceVal, backend: str = "onnxruntime") -> dict[str, Any]:
    """AP (mask, box) and rendered-map mIoU of the graph at ``path`` on ``val``, run by ``backend``."""
    from segexport.runners import open_runner

    with open_runner(path, backend=backend) as runner:
        outputs = outputs_in_batches(runner.run_outputs, val.images, runner.fixed_batch or BATCH)
    return evaluate_instances(outputs, val.masks, val.truth, val.classes)


def measure_instances(path: str | Path, val: InstanceVal, reference: dict[str, Any], label: str,
                      backend: str = "onnxruntime") -> dict[str, Any]:
    """The variant's AP against the FP32 reference's: ``drop_points`` is the larger AP drop."""
    found = instance_metrics(path, val, backend)
    keys = ("mask_ap", "mask_ap50", "box_ap", "box_ap50", "miou")
    drops = {k: 100.0 * (reference[k] - found[k]) for k in ("mask_ap", "box_ap")}
    return {
        "val": val.source, "images": len(val), "metric": "AP",
        "reference": {"label": REFERENCE_LABEL, **{k: reference[k] for k in keys}},
        "variant": {"label": label, **{k: found[k] for k in keys}},
        "drop_points": max(drops.values()), "drops": drops,
    }
