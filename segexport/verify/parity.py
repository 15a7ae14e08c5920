"""Accuracy and parity of one runner on the cached val inputs, against the PyTorch reference.

Predictions reuse ``precision.evaluate`` (``Prediction``, ``logit_error``) and scores come from
one confusion matrix (``segexport.metrics``), as in ``segexport quantize``; only the producer
differs: here any :class:`~segexport.runners.Runner`, there an ONNX session. Scores are kept as
integer counts until the end, so under ``torchrun`` each process counts its shard and the sums
give the single-process figures exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from segexport.distributed import all_reduce_confusion
from segexport.metrics import confusion_matrix, metrics_from_confusion
from segexport.precision.evaluate import EVAL_BATCH, Prediction, ValData
from segexport.precision.targets import TARGETS
from segexport.runners import Runner

LOGIT_IMAGES = 16  # logits are kept for this many images: the logit error is measured on them


@dataclass
class Inputs:
    """The one set of arrays every runner gets.

    Attributes:
        images: normalised float32 ``[n, 3, H, W]`` images this process predicts and scores: every
            val image in a single process, its shard under ``torchrun`` (random images without data).
        val: the val data they came from (images, masks, classes), None for random inputs.
        shard: the indices of ``images`` in ``val`` (``range(len(images))`` in a single process).
        lead: what this process also keeps logits of, draws and times: ``images`` itself in a
            single process and on rank 0 (the first shard block when rank 0's shard is empty);
            None on the other ranks, which only score.
        truth: an instance network's labelled objects of each val image (``val.masks`` are then
            the semantic maps they paint); None for a semantic network.
    """

    images: np.ndarray
    val: ValData | None
    shard: range
    lead: np.ndarray | None
    truth: list[Any] | None = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])


@dataclass
class RowPredictions:
    """One runner's predictions on :class:`Inputs`.

    Attributes:
        scored: labels of ``Inputs.images`` (the ones counted), without logits except where
            they are also the lead images.
        shown: labels of ``Inputs.lead`` and logits of its first ``LOGIT_IMAGES`` (the logit
            error and the parity picture); None where there is no lead.
    """

    scored: Prediction
    shown: Prediction | None


def predict_runner(runner: Runner, images: np.ndarray, *, keep_logits: int = LOGIT_IMAGES) -> Prediction:
    """Labels of every image, logits of the first ``keep_logits``, in batches the runner accepts."""
    batch = runner.fixed_batch or EVAL_BATCH
    labels = np.empty((len(images), *images.shape[2:]), dtype=np.uint8)
    kept: list[np.ndarray] = []
    for start in range(0, len(images), batch):
        logits = runner.run(images[start : start + batch])
        labels[start : start + len(logits)] = logits.argmax(1)
        if start < keep_logits:
            kept.append(logits[: keep_logits - start])
    return Prediction(labels, np.concatenate(kept) if kept else None)


def predict_inputs(runner: Runner, inputs: Inputs) -> RowPredictions:
    """Predict the scored images and, when they differ from them, the lead images too."""
    own_lead = inputs.lead is inputs.images
    scored = predict_runner(runner, inputs.images, keep_logits=LOGIT_IMAGES if own_lead else 0)
    if inputs.lead is None or own_lead:
        return RowPredictions(scored, scored if own_lead else None)
    return RowPredictions(scored, predict_runner(runner, inputs.lead))


def count_width(classes: int) -> int:
    """Length of :func:`accuracy_counts`' vector for ``classes`` classes."""
    return classes * classes + 2


def accuracy_counts(pred: Prediction, val: ValData, shard: range, reference: Prediction | None) -> np.ndarray:
    """Exact int64 counts of one runner on this process's images, which add up across processes.

    Args:
        pred: labels of the images ``shard`` of ``val``.
        val: the val data (masks and classes).
        shard: which images ``pred`` covers.
        reference: the reference's labels on the same images (None for the reference row).

    Returns:
        The confusion matrix (row-major, ``C * C``), then the pixels whose argmax equals the
        reference's and the pixels compared (both 0 without a reference).
    """
    cm = confusion_matrix(val.masks[shard.start : shard.stop], pred.labels, len(val.classes))
    equal = total = 0
    if reference is not None:
        equal, total = int(np.count_nonzero(pred.labels == reference.labels)), int(pred.labels.size)
    return np.concatenate([cm.reshape(-1), np.asarray([equal, total], dtype=np.int64)])


def summed_counts(pred: Prediction | None, inputs: Inputs, reference: Prediction | None, *, rank: int,
                  world_size: int) -> tuple[np.ndarray, list[int]]:
    """:func:`accuracy_counts` summed over every process, and the ranks that had no prediction.

    Every process calls this for every measured row, failed (``pred`` None) or not, so the
    collectives match; a failed process contributes zeros. In a single process the sum is its own.

    Raises:
        ValueError: ``inputs`` holds no val data.
    """
    if inputs.val is None:
        raise ValueError("counts need val data")
    failed = np.zeros(world_size, dtype=np.int64)
    local = np.zeros(count_width(len(inputs.val.classes)), dtype=np.int64)
    if pred is None:
        failed[rank] = 1
    else:
        local = accuracy_counts(pred, inputs.val, inputs.shard, reference)
    summed = all_reduce_confusion(np.concatenate([failed, local]))
    return summed[world_size:], [int(r) for r in np.flatnonzero(summed[:world_size])]


def accuracy_figures(counts: np.ndarray, classes: tuple[str, ...], reference_miou: float | None,
                     errors: dict[str, float | None] | None) -> dict[str, Any]:
    """mIoU, pixel accuracy, per-class IoU, and (with a reference) drop, agreement and logit error.

    Args:
        counts: :func:`accuracy_counts` of every image (summed over processes).
        classes: the class names.
        reference_miou: the reference's mIoU; None for the reference row itself.
        errors: :func:`~segexport.precision.evaluate.logit_error` against the reference (None
            where this process has no logits).

    Returns:
        ``miou``, ``pixel_acc``, ``per_class_iou`` and, with ``reference_miou``,
        ``miou_drop_pts`` (reference minus variant, x100), ``agreement`` (fraction of pixels whose
        argmax equals the reference's), ``max_abs_logit_error`` and ``mean_abs_logit_error``
        (over the first ``LOGIT_IMAGES`` images).
    """
    n = len(classes)
    figures = metrics_from_confusion(counts[: n * n].reshape(n, n)).to_dict(classes)
    if reference_miou is None:
        return figures
    equal, total = (int(v) for v in counts[n * n :])
    errors = errors or {}
    return {
        **figures,
        "miou_drop_pts": 100.0 * (reference_miou - figures["miou"]),
        # equal / total is the mean of the boolean agreement array, bit for bit.
        "agreement": equal / total,
        "max_abs_logit_error": errors.get("max_logit_error"),
        "mean_abs_logit_error": errors.get("mean_logit_error"),
    }


def judged_drop(row: dict[str, Any]) -> float | None:
    """The drop a row is judged by: its AP drop for an instance network, else its mIoU drop."""
    return row["ap_drop_pts"] if "ap_drop_pts" in row else row.get("miou_drop_pts")


def judge(row: dict[str, Any]) -> bool | None:
    """A measured row's verdict: drop within budget; None when not judged (no budget or no accuracy)."""
    if row.get("error"):
        return False
    drop = judged_drop(row)
    if row.get("skipped") or row.get("budget_pts") is None or drop is None:
        return None
    # A drop equal to the budget passes; 1e-9 absorbs float noise in the x100 of a difference.
    return bool(drop <= row["budget_pts"] + 1e-9)


def most_disagreeing(reference: Prediction, others: list[Prediction], count: int) -> list[int]:
    """Indices of the ``count`` images where the variants disagree most with the reference
    (ties and all-agreeing sets fall back to image order), for the parity picture."""
    total = len(reference.labels)
    if not others:
        return list(range(min(count, total)))
    pixels = np.zeros(total, dtype=np.int64)
    for pred in others:
        pixels += (pred.labels != reference.labels).reshape(total, -1).sum(1)
    order = sorted(range(total), key=lambda i: (-int(pixels[i]), i))
    return order[:count]


def p50_of(row: dict[str, Any]) -> float | None:
    return (row.get("latency_ms") or {}).get("p50")


def int8_pays(variants: list[dict[str, Any]], reference: dict[str, Any] | None = None) -> None:
    """Each timed INT8 row's speed-up over the FP32 row of its backend (the reference row, when it
    is that backend's FP32 run: a build from an ONNX file), and ``int8_slower`` when it is not
    faster on the backend its target deploys to: INT8 that does not pay in speed only costs accuracy."""
    rows = [*variants, *([reference] if reference is not None else [])]
    fp32 = {row["backend"]: p50_of(row) for row in reversed(rows) if row.get("precision") == "fp32"}
    for row in variants:
        base, p50 = fp32.get(row["backend"]), p50_of(row)
        if row["precision"] != "int8" or not base or not p50:
            continue
        row["speedup_vs_fp32"] = base / p50
        target = TARGETS.get(row.get("target") or "")
        # A target's model on a backend it is not made for (tensorrt's Q/DQ on ONNX Runtime) is there
        # for its accuracy; its speed is the engine's, so only the deploying backend is held to paying.
        if target is None or row["backend"] == target.deploy_backend:
            row["int8_slower"] = row["speedup_vs_fp32"] <= 1.0
