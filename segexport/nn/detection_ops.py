"""Non-maximum suppression and RoIAlign as PyTorch custom operators with static output shapes.

Instance networks must export to standard ONNX (``NonMaxSuppression``, ``RoiAlign``) and keep
fixed output shapes. Two operators make that possible:

- ``segexport::nms_keep`` returns a 0/1 mask over the candidates (``[N, M]``, the scores'
  shape) instead of a variable list of indices, so the graph stays static. Its ONNX form is
  ``NonMaxSuppression`` followed by a ``ScatterND`` of ones into zeros
  (:mod:`segexport.export.detection_onnx`).
- ``segexport::roi_align`` is ONNX's ``RoiAlign`` (half-pixel, average, fixed sampling).

Their eager kernels are :func:`segexport.nn.detection.nms` and
:func:`segexport.nn.detection.roi_align`, each tested against a one-node ONNX Runtime session,
so the PyTorch reference and the exported graph select the same boxes.

The operators carry no gradient. Training calls :func:`segexport.nn.detection.roi_align`
directly (the same arithmetic, differentiable); suppression is never differentiated.
"""

from __future__ import annotations

import torch

from segexport.nn import detection


@torch.library.custom_op("segexport::nms_keep", mutates_args=())
def nms_keep(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, score_threshold: float,
             max_out: int) -> torch.Tensor:
    """Greedy NMS of each image's boxes, as ONNX ``NonMaxSuppression`` with one class.

    Args:
        boxes: ``[N, M, 4]`` ``(x1, y1, x2, y2)``.
        scores: ``[N, M]``.
        iou_threshold: a box whose IoU with a kept one is greater than this is dropped.
        score_threshold: only boxes scoring strictly more than this are considered.
        max_out: at most this many boxes kept per image.

    Returns:
        ``[N, M]`` float32: 1 where the box is kept, else 0.
    """
    keep = torch.zeros(scores.shape, dtype=torch.float32)
    for i in range(boxes.shape[0]):
        candidates = torch.nonzero(scores[i] > score_threshold).flatten()
        kept = detection.nms(boxes[i, candidates].float(), scores[i, candidates].float(), iou_threshold, max_out)
        keep[i, candidates[kept]] = 1.0
    return keep


@nms_keep.register_fake
def _nms_keep_shape(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, score_threshold: float,
                    max_out: int) -> torch.Tensor:
    return scores.new_empty(scores.shape, dtype=torch.float32)


@torch.library.custom_op("segexport::roi_align", mutates_args=())
def roi_align(features: torch.Tensor, rois: torch.Tensor, batch_index: torch.Tensor, output_height: int,
              output_width: int, spatial_scale: float, sampling_ratio: int) -> torch.Tensor:
    """ONNX ``RoiAlign`` (see :func:`segexport.nn.detection.roi_align`): ``[K, C, oh, ow]``."""
    return detection.roi_align(features, rois, batch_index, (output_height, output_width), spatial_scale,
                               sampling_ratio)


@roi_align.register_fake
def _roi_align_shape(features: torch.Tensor, rois: torch.Tensor, batch_index: torch.Tensor, output_height: int,
                     output_width: int, spatial_scale: float, sampling_ratio: int) -> torch.Tensor:
    return features.new_empty((rois.shape[0], features.shape[1], output_height, output_width))
