"""Segmentation metrics from a confusion matrix.

The confusion matrix is the one accumulator: it is exact (integer counts), it adds across
batches, shards and processes, and every figure below is derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = 255


def confusion_matrix(
    target: torch.Tensor | np.ndarray,
    prediction: torch.Tensor | np.ndarray,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Count (target, prediction) pairs.

    Args:
        target: ground-truth class indices, any shape; ``ignore_index`` pixels are skipped.
        prediction: predicted class indices, same shape.
        num_classes: number of classes ``C``.
        ignore_index: label value excluded from every count.

    Returns:
        ``int64`` array ``[C, C]``; row = ground truth, column = prediction.
    """
    t = torch.as_tensor(target).reshape(-1).long()
    p = torch.as_tensor(prediction).reshape(-1).long()
    if t.shape != p.shape:
        raise ValueError(f"target has {t.numel()} pixels but prediction has {p.numel()}")
    keep = t != ignore_index
    t, p = t[keep], p[keep]
    if t.numel() and (int(t.max()) >= num_classes or int(t.min()) < 0):
        raise ValueError(f"target values outside [0, {num_classes}) besides ignore {ignore_index}")
    counts = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).numpy().astype(np.int64)


@dataclass(frozen=True)
class SegMetrics:
    """Figures derived from one confusion matrix. IoU of a class absent from both ground
    truth and prediction is NaN and left out of the mean."""

    miou: float
    pixel_acc: float
    per_class_iou: tuple[float, ...]

    def to_dict(self, class_names: tuple[str, ...] | None = None) -> dict:
        names = class_names or tuple(str(i) for i in range(len(self.per_class_iou)))
        return {
            "miou": self.miou,
            "pixel_acc": self.pixel_acc,
            "per_class_iou": {
                n: (None if np.isnan(v) else v) for n, v in zip(names, self.per_class_iou)
            },
        }


def metrics_from_confusion(cm: np.ndarray) -> SegMetrics:
    """mIoU, pixel accuracy and per-class IoU of a confusion matrix.

    Returns:
        ``SegMetrics``; with no counted pixel at all, mIoU and accuracy are NaN.
    """
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    total = cm.sum()
    present = ~np.isnan(iou)
    miou = float(iou[present].mean()) if present.any() else float("nan")
    acc = float(tp.sum() / total) if total > 0 else float("nan")
    return SegMetrics(miou=miou, pixel_acc=acc, per_class_iou=tuple(float(v) for v in iou))
