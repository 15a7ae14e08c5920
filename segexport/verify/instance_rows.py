"""Verification rows of an instance network: COCO AP of each runner's detections, beside mIoU.

Every runner gets the same normalised val images and returns the padded detections
(``Runner.run_outputs``). Each row is scored twice: by COCO mask and box AP (pycocotools'
COCOeval, :mod:`segexport.instance_metrics`), which judge it, and by the semantic map its
detections paint (``instance_outputs.render_semantic``), which flows through the semantic
rows' machinery unchanged: mIoU, agreement with the reference's map and the parity picture.
A variant's AP drop is the larger of its mask AP and box AP drops, in points, as in
``segexport quantize`` (:mod:`segexport.precision.instance_judge`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segexport.checkpoint import ModelConfig
from segexport.errors import InputError
from segexport.instance_metrics import AP_KEYS, instance_ap
from segexport.instance_outputs import (
    detections_from_outputs,
    outputs_in_batches,
    render_semantic,
)
from segexport.precision.evaluate import EVAL_BATCH, Prediction, ValData
from segexport.runners import Runner
from segexport.verify.parity import Inputs, RowPredictions

ROW_KEYS = (*AP_KEYS, "ap_drop_pts")
JUDGED_BY = ("instance network: each variant is judged by its AP drop, the larger of its mask AP and box AP "
             "drops against the reference (COCOeval AP@[.5:.95], in points); mIoU and agreement are those of "
             "the semantic map its detections paint")


def load_instance_inputs(spec: str, config: ModelConfig, size: tuple[int, int], *, count: int | None,
                         seed: int) -> Inputs:
    """The val images (normalised once), their semantic maps and their objects, for every row.

    Raises:
        InputError: an empty split, data without instance labels, or classes that are not the model's.
    """
    import dataclasses

    from segexport.data import open_dataset
    from segexport.train_instance import load_instance_set

    preprocess = dataclasses.replace(config.preprocess, size=size)
    source = open_dataset(spec, "val", size=size, seed=seed, length=count, length_option="--images")
    if len(source.classes) != len(config.classes):
        raise InputError(f"--data {spec} has {len(source.classes)} classes but the model predicts "
                         f"{len(config.classes)}; pass --data with the model's classes")
    if len(source) == 0:
        raise InputError(f"{spec}: the val split is empty; pass --data with val images")
    images, masks, truth = load_instance_set(source, preprocess)
    val = ValData(images, masks, preprocess, tuple(source.classes), spec)
    x = val.normalised(0, len(val))
    return Inputs(x, val, range(len(val)), x, truth=truth)


def predict_instances(runner: Runner, inputs: Inputs) -> tuple[RowPredictions, dict[str, float]]:
    """One runner's detections on every image: the painted maps (as a prediction without logits)
    and the COCO AP figures.

    Raises:
        InputError: the runner's artifact is not an instance network.
        CheckFailed: the backend fails to run it.
    """
    if runner.task != "instance":
        raise InputError(f"{runner.artifact}: not an instance network's model (its outputs are logits); "
                         "rebuild the variant")
    try:
        outputs = outputs_in_batches(runner.run_outputs, inputs.images, runner.fixed_batch or EVAL_BATCH)
    except KeyError as exc:
        raise InputError(f"{runner.artifact}: output {exc} missing; re-export the model") from exc
    height, width = inputs.size
    found = detections_from_outputs(outputs, height, width)
    painted = Prediction(np.stack([render_semantic(d, height, width) for d in found]), None)
    classes = len(inputs.val.classes) if inputs.val is not None else 0
    ap = instance_ap(inputs.truth or [], found, [(height, width)] * len(found), classes)
    return RowPredictions(painted, painted), {key: float(ap[key]) for key in AP_KEYS}


def ap_drop(row: dict[str, Any], reference: dict[str, Any]) -> float | None:
    """The row's AP drop in points: the larger of its mask AP and box AP drops (None unmeasured)."""
    if row.get("mask_ap") is None or reference.get("mask_ap") is None:
        return None
    return 100.0 * max(reference["mask_ap"] - row["mask_ap"], reference["box_ap"] - row["box_ap"])
