"""Accuracy of a model variant on validation data, on the backend that runs it (ONNX Runtime by default).

Every variant (FP32 reference, INT8, FP16, each sensitivity candidate) runs the same
normalised val images; mIoU comes from one confusion matrix per variant. Logits are kept only
for the first ``keep_logits`` images (the sensitivity subset), so memory stays bounded at
large input sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segexport.data import Preprocess, load_arrays, open_dataset
from segexport.errors import InputError
from segexport.metrics import confusion_matrix, metrics_from_confusion

DEFAULT_VAL = "synthetic"
EVAL_BATCH = 4


@dataclass
class ValData:
    """Validation images and masks at the model's input size.

    Attributes:
        images: ``N x H x W x 3`` uint8, resized as the model's preprocessing says.
        masks: ``N x H x W`` uint8 class indices (255 = ignore).
        preprocess: the model's preprocessing.
        classes: the data set's class names.
        source: the ``--val`` spec.
    """

    images: np.ndarray
    masks: np.ndarray
    preprocess: Preprocess
    classes: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.images)

    def normalised(self, start: int, stop: int) -> np.ndarray:
        """Images ``start:stop`` as normalised ``float32 [n, 3, H, W]``."""
        import torch

        from segexport.data import normalize_batch

        return normalize_batch(torch.from_numpy(self.images[start:stop]), self.preprocess).numpy()


@dataclass
class Prediction:
    """A variant's labels on every val image, and logits on the first few (None without logits)."""

    labels: np.ndarray
    logits: np.ndarray | None


def load_val(spec: str, preprocess: Preprocess, *, count: int | None, seed: int, num_classes: int | None,
             option: str = "--val") -> ValData:
    """The ``val`` split of ``spec`` (first ``count`` samples) at the model's input size.

    Args:
        option: the command-line option that gave ``spec``, named in errors (``--data`` for verify).
            The option of ``count`` named in errors follows: ``--images`` for ``--data``, else
            ``--val-images``.

    Raises:
        InputError: the data set's classes differ in number from the model's outputs, or a sample is unreadable.
        ConfigError, UnknownNameError: a malformed spec or count.
    """
    count_option = "--images" if option == "--data" else "--val-images"
    source = open_dataset(spec, "val", size=preprocess.size, seed=seed, length=count, length_option=count_option)
    if num_classes is not None and len(source.classes) != num_classes:
        raise InputError(f"{option} {spec} has {len(source.classes)} classes but the model predicts {num_classes}; "
                         f"pass {option} data with the model's classes")
    images, masks = load_arrays(source, preprocess)
    return ValData(images, masks, preprocess, tuple(source.classes), spec)


def _labels_and_logits(outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """(labels, logits) from a run's outputs: ``logits`` (or a 4-D float output) and/or ``labels``."""
    logits = outputs.get("logits")
    if logits is None:
        logits = next((v for v in outputs.values() if v.ndim == 4 and v.dtype.kind == "f"), None)
    if logits is not None:
        return logits.argmax(1).astype(np.uint8), logits
    labels = outputs.get("labels", next(iter(outputs.values())))
    return labels.astype(np.uint8), None


def predict(path: str | Path, val: ValData, *, keep_logits: int = 0, limit: int | None = None,
            backend: str = "onnxruntime") -> Prediction:
    """Run ``path`` on ``backend`` on the first ``limit`` (default all) val images.

    Raises:
        InputError: the backend cannot load the file.
        MissingDependencyError: the backend is not installed.
    """
    if backend != "onnxruntime":
        return _predict_with_runner(path, val, keep_logits=keep_logits, limit=limit, backend=backend)
    from segexport.runners.onnxruntime_runner import open_session, run_onnx

    # ONNX Runtime directly (its runner's session), so label-only graphs are judged too.
    session = open_session(path)
    dim = session.get_inputs()[0].shape[0]
    batch = dim if isinstance(dim, int) and dim > 0 else EVAL_BATCH

    def outputs(x: np.ndarray) -> dict[str, np.ndarray]:
        return run_onnx(session, _as_tensor(x), batch)

    return _collect(outputs, val, batch, keep_logits, limit)


def _predict_with_runner(path: str | Path, val: ValData, *, keep_logits: int, limit: int | None,
                         backend: str) -> Prediction:
    from segexport.runners import open_runner

    with open_runner(path, backend=backend) as runner:
        return _collect(lambda x: {"logits": runner.run(x)}, val, runner.fixed_batch or EVAL_BATCH, keep_logits, limit)


def _collect(outputs: Any, val: ValData, batch: int, keep_logits: int, limit: int | None) -> Prediction:
    total = len(val) if limit is None else min(limit, len(val))
    labels = np.empty((total, *val.preprocess.size), dtype=np.uint8)
    kept: list[np.ndarray] = []
    for start in range(0, total, batch):
        stop = min(start + batch, total)
        got, logits = _labels_and_logits(outputs(val.normalised(start, stop)))
        labels[start:stop] = got
        if logits is not None and start < keep_logits:
            kept.append(logits[: keep_logits - start].astype(np.float32))
    return Prediction(labels, np.concatenate(kept) if kept else None)


def _as_tensor(x: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(x)


def score(labels: np.ndarray, val: ValData) -> dict[str, Any]:
    """mIoU, pixel accuracy and per-class IoU of ``labels`` against the first len(labels) masks."""
    cm = confusion_matrix(val.masks[: len(labels)], labels, len(val.classes))
    return metrics_from_confusion(cm).to_dict(val.classes)


def disagreement(a: Prediction, b: Prediction, count: int) -> float:
    """Fraction of pixels of the first ``count`` images whose argmax differs."""
    return float((a.labels[:count] != b.labels[:count]).mean())


def logit_error(variant: Prediction, reference: Prediction) -> dict[str, float | None]:
    """Max and mean |logit difference| over the kept images (None without logits)."""
    if variant.logits is None or reference.logits is None:
        return {"max_logit_error": None, "mean_logit_error": None}
    diff = np.abs(variant.logits.astype(np.float64) - reference.logits[: len(variant.logits)])
    return {"max_logit_error": float(diff.max()), "mean_logit_error": float(diff.mean())}
