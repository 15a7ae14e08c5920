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

from segexport.checkpoint import ModelConfig
from segexport.errors import InputError
from segexport.instance_metrics import AP_KEYS
from segexport.instance_outputs import outputs_in_batches
from segexport.precision.evaluate import EVAL_BATCH, Prediction, ValData
from segexport.runners import Runner
from segexport.train_instance import paint_and_score
from segexport.verify.parity import Inputs, RowPredictions

ROW_KEYS = (*AP_KEYS, "ap_drop_pts")
JUDGED_BY = ("instance network: each variant is judged by its AP drop, the larger of its mask AP and box AP "
             "drops against the reference (COCOeval AP@[.5:.95], in points); mIoU and agreement are those of "
             "the semantic map its detections paint")


def load_instance_inputs(spec: str, config: ModelConfig, size: tuple[int, int], *, count: int | None,
                         seed: int) -> Inputs:
    """The val images (normalised once), their semantic maps and their objects, for every row
    (the precision stage's loader, :func:`~segexport.precision.instance_judge.load_instance_val`).

    Raises:
        InputError: an empty split, data without instance labels, or classes that are not the model's.
    """
    import dataclasses

    from segexport.precision.instance_judge import load_instance_val

    preprocess = dataclasses.replace(config.preprocess, size=size)
    found = load_instance_val(spec, preprocess, count=count, seed=seed, classes=tuple(config.classes), option="--data",
                              count_option="--images")
    val = ValData(found.pixels, found.masks, preprocess, found.classes, spec)
    return Inputs(found.images, val, range(len(val)), found.images, truth=found.truth)


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
    classes = len(inputs.val.classes) if inputs.val is not None else 0
    maps, ap = paint_and_score(outputs, inputs.truth or [], inputs.size, classes)
    painted = Prediction(maps, None)
    return RowPredictions(painted, painted), {key: float(ap[key]) for key in AP_KEYS}


def ap_drop(row: dict[str, Any], reference: dict[str, Any]) -> float | None:
    """The row's AP drop in points: the larger of its mask AP and box AP drops (None unmeasured)."""
    if row.get("mask_ap") is None or reference.get("mask_ap") is None:
        return None
    return 100.0 * max(reference["mask_ap"] - row["mask_ap"], reference["box_ap"] - row["box_ap"])
