"""The ONNX forms of segexport's detection operators (:mod:`segexport.nn.detection_ops`).

Handed to torch's dynamo exporter as its ``custom_translation_table``: every node written is a
standard ONNX operator, so TensorRT's ONNX parser reads the graph without plugins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from onnxscript import opset18 as op

import segexport.nn.detection_ops  # noqa: F401  (registers the operators the table names)


def nms_keep(boxes: Any, scores: Any, iou_threshold: float, score_threshold: float, max_out: int) -> Any:
    """``NonMaxSuppression`` on one class, then its ``[K, 3]`` selection scattered as ones into a
    zero ``[N, M]`` map: the static-shape keep mask."""
    selected = op.NonMaxSuppression(
        boxes, op.Unsqueeze(scores, op.Constant(value_ints=[1])), op.Constant(value_ints=[max_out]),
        op.Constant(value_floats=[iou_threshold]), op.Constant(value_floats=[score_threshold]),
        center_point_box=0)
    image_and_box = op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)  # drop the class column
    ones = op.Expand(op.Constant(value_float=1.0), op.Shape(selected, start=0, end=1))
    zeros = op.ConstantOfShape(op.Shape(scores))
    return op.ScatterND(zeros, image_and_box, ones)


def roi_align(features: Any, rois: Any, batch_index: Any, output_height: int, output_width: int,
              spatial_scale: float, sampling_ratio: int) -> Any:
    """``RoiAlign``, half-pixel coordinates, average mode, the sampling ratio always written."""
    return op.RoiAlign(features, rois, batch_index, coordinate_transformation_mode="half_pixel", mode="avg",
                       output_height=output_height, output_width=output_width, sampling_ratio=sampling_ratio,
                       spatial_scale=spatial_scale)


def translation_table() -> dict[Any, Callable[..., Any]]:
    """``torch.onnx.export``'s ``custom_translation_table`` for segexport's operators."""
    return {torch.ops.segexport.nms_keep.default: nms_keep, torch.ops.segexport.roi_align.default: roi_align}
