"""Scoring the CRF: ``+crf`` rows for a verify report, boundary quality, agreement of the two CRFs.

Boundary quality is the trimap mIoU the DeepLab papers report (Kohli et al., 2009): mIoU over
the pixels within ``band`` pixels (Chebyshev distance) of a ground-truth boundary, where a
boundary pixel is one whose right or lower neighbour has another label (ignored pixels never
form a boundary and never count). A CRF that snaps labels to image edges raises it more than
it raises the plain mIoU.

Every figure comes from confusion matrices (:func:`segexport.metrics.confusion_matrix`):
the trimap one is the plain one with the pixels outside the band set to ignore.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from segexport.data import IGNORE_INDEX, Preprocess, normalize_batch
from segexport.errors import InputError
from segexport.metrics import confusion_matrix, metrics_from_confusion
from segexport.postprocess.dense_crf import dense_crf
from segexport.postprocess.params import CrfParams
from segexport.progress import progress_bar

DEFAULT_BAND = 3  # trimap half-width in pixels, at the model's input size
EVAL_BATCH = 4


class LogitsRunner(Protocol):
    """What ``crf_rows`` needs of a runner (:class:`segexport.runners.Runner` has it)."""

    def run(self, images: np.ndarray) -> np.ndarray:
        """float32 normalised NCHW images -> float32 NCHW logits at input size."""


def boundary_band(masks: np.ndarray, band: int = DEFAULT_BAND) -> np.ndarray:
    """Pixels within ``band`` pixels of a label boundary of ``masks`` (N, H, W): bool (N, H, W)."""
    m = torch.from_numpy(np.asarray(masks)).long()
    edge = torch.zeros(m.shape, dtype=torch.bool)
    known = m != IGNORE_INDEX
    across = (m[:, :, 1:] != m[:, :, :-1]) & known[:, :, 1:] & known[:, :, :-1]  # left-right pairs
    edge[:, :, 1:] |= across
    edge[:, :, :-1] |= across
    down = (m[:, 1:, :] != m[:, :-1, :]) & known[:, 1:, :] & known[:, :-1, :]  # top-bottom pairs
    edge[:, 1:, :] |= down
    edge[:, :-1, :] |= down
    if band > 0:
        edge = F.max_pool2d(edge.float().unsqueeze(1), 2 * band + 1, stride=1, padding=band).squeeze(1) > 0
    return edge.numpy()


def _confusions(masks: np.ndarray, labels: np.ndarray, band: np.ndarray, num_classes: int) -> np.ndarray:
    """(2, C, C): the confusion matrix over all pixels and over the boundary band."""
    return np.stack([confusion_matrix(masks, labels, num_classes),
                     confusion_matrix(np.where(band, masks, IGNORE_INDEX), labels, num_classes)])


def _figures(pair: np.ndarray) -> dict[str, float]:
    full, band = metrics_from_confusion(pair[0]), metrics_from_confusion(pair[1])
    return {"miou": full.miou, "pixel_acc": full.pixel_acc, "trimap_miou": band.miou}


def score_labels(masks: np.ndarray, labels: np.ndarray, num_classes: int, band: int = DEFAULT_BAND) -> dict[str, float]:
    """``miou``, ``pixel_acc`` and ``trimap_miou`` (within ``band`` pixels of a boundary) of
    ``labels`` against ``masks``, both ``(N, H, W)``."""
    return _figures(_confusions(masks, labels, boundary_band(masks, band), num_classes))


class CrfTally:
    """Counts for one ``+crf`` row, added batch by batch; shards add up exactly.

    ``counts`` (int64 ``(4, C, C)``: without CRF all pixels / band, with CRF all pixels / band),
    ``changed`` and ``pixels`` are sums, ``times`` a list: to combine processes (torchrun),
    sum the first three and concatenate the times, then call :meth:`row`.

    Args:
        num_classes: the model's classes.
        params: the host CRF's parameters.
        band: trimap half-width in pixels.
    """

    def __init__(self, num_classes: int, params: CrfParams, band: int = DEFAULT_BAND) -> None:
        self.num_classes, self.params, self.band = num_classes, params, band
        self.counts = np.zeros((4, num_classes, num_classes), dtype=np.int64)
        self.changed = 0
        self.pixels = 0
        self.times: list[float] = []

    def add(self, logits: np.ndarray, images: np.ndarray, masks: np.ndarray) -> None:
        """Refine ``logits`` (N, C, H, W) of uint8 ``images`` (N, H, W, 3) one image at a time
        (each timed) and count both labellings against ``masks`` (N, H, W)."""
        zone = boundary_band(masks, self.band)
        for i in range(len(logits)):
            start = time.perf_counter()
            refined = dense_crf(logits[i : i + 1], images[i : i + 1], self.params)
            self.times.append(time.perf_counter() - start)
            before, after = logits[i].argmax(0), refined[0].argmax(0)
            self.changed += int((before != after).sum())
            self.pixels += before.size
            self.counts[:2] += _confusions(masks[i], before, zone[i], self.num_classes)
            self.counts[2:] += _confusions(masks[i], after, zone[i], self.num_classes)

    def row(self, name: str) -> dict[str, Any]:
        """The ``NAME+crf`` row (keys: see :func:`crf_row`)."""
        base, crf = _figures(self.counts[:2]), _figures(self.counts[2:])
        ms = sorted(1000.0 * t for t in self.times)
        return {
            "variant": f"{name}+crf", "base": name, "images": len(self.times),
            **crf, **{f"base_{k}": v for k, v in base.items()},
            "miou_gain_pts": 100.0 * (crf["miou"] - base["miou"]),
            "trimap_gain_pts": 100.0 * (crf["trimap_miou"] - base["trimap_miou"]),
            "changed_pixels": self.changed / max(self.pixels, 1),
            "crf_ms_per_image": statistics.median(ms) if ms else None,
            "crf_ms_p90": ms[min(len(ms) - 1, int(0.9 * len(ms)))] if ms else None,
            "trimap_band_px": self.band, "crf": self.params.to_dict(),
        }


def _check_val(images: np.ndarray, masks: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise InputError(f"images must be uint8 (N, H, W, 3), got {images.dtype} of shape {images.shape}")
    if masks.shape != images.shape[:3]:
        raise InputError(f"masks must be (N, H, W) = {images.shape[:3]}, got {masks.shape}")


def crf_row(
    name: str, runner: LogitsRunner, images: np.ndarray, masks: np.ndarray, preprocess: Preprocess,
    num_classes: int, params: CrfParams, *, band: int = DEFAULT_BAND, batch_size: int = EVAL_BATCH,
    progress: bool = False,
) -> dict[str, Any]:
    """The ``NAME+crf`` row: ``runner``'s logits on the val images refined by the host CRF.

    Args:
        name: the variant's name in the report (e.g. "onnx", "trt-int8").
        runner: anything with ``run(normalised NCHW float32) -> logits NCHW``.
        images, masks: uint8 ``(N, H, W, 3)`` val images at the model's input size and their
            ``(N, H, W)`` labels (255 = ignore).
        preprocess: the model's normalisation (applied here, as every runner expects).
        num_classes: the model's classes.
        params: the CRF's parameters (:func:`segexport.postprocess.crf_params` of the recipe).
        band: trimap half-width in pixels.
        batch_size: images per ``runner.run`` call (a fixed-batch runner gets its size).
        progress: show a progress bar (on a terminal).

    Returns:
        ``variant`` ("NAME+crf"), ``base`` (NAME), ``images``, ``miou``, ``pixel_acc``,
        ``trimap_miou`` with the CRF, ``base_miou``/``base_pixel_acc``/``base_trimap_miou``
        without, ``miou_gain_pts`` and ``trimap_gain_pts`` (points), ``changed_pixels``
        (fraction of labels the CRF changed), ``crf_ms_per_image`` (median host CRF time of
        one image, engine time excluded) and ``crf_ms_p90``, ``trimap_band_px`` and ``crf``
        (the parameters).

    Raises:
        InputError: images and masks that do not fit together.
    """
    _check_val(images, masks)
    tally = CrfTally(num_classes, params, band)
    batch = getattr(runner, "fixed_batch", None) or batch_size
    with progress_bar(progress) as bar:
        task = bar.add_task(f"{name}+crf", total=len(images), info="")
        for start in range(0, len(images), batch):
            stop = min(start + batch, len(images))
            tally.add(_run(runner, images[start:stop], preprocess, batch), images[start:stop], masks[start:stop])
            bar.advance(task, stop - start)
    return tally.row(name)


def _run(runner: LogitsRunner, images: np.ndarray, preprocess: Preprocess, batch: int) -> np.ndarray:
    """Logits of uint8 images; a short last chunk is padded to ``batch`` for fixed-batch runners."""
    x = normalize_batch(torch.from_numpy(np.ascontiguousarray(images)), preprocess).numpy()
    real = len(x)
    if getattr(runner, "fixed_batch", None) and real < batch:
        x = np.concatenate([x, np.repeat(x[-1:], batch - real, axis=0)])
    return np.asarray(runner.run(x), dtype=np.float32)[:real]


def crf_rows(
    runners: Mapping[str, LogitsRunner], images: np.ndarray, masks: np.ndarray, preprocess: Preprocess,
    num_classes: int, params: CrfParams, **options: Any,
) -> list[dict[str, Any]]:
    """:func:`crf_row` for every ``name -> runner`` (in the mapping's order); options as there."""
    return [crf_row(name, runner, images, masks, preprocess, num_classes, params, **options)
            for name, runner in runners.items()]


def label_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels whose argmax over axis 1 agrees between two ``(N, C, H, W)`` logit arrays."""
    return float((np.asarray(a).argmax(1) == np.asarray(b).argmax(1)).mean())
