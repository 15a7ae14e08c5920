"""Detection building blocks in plain torch, computing exactly what the ONNX operators compute.

Mask R-CNN-style networks (issue 18) need anchors, box coding, non-maximum suppression and
RoIAlign. torchvision has them, but segexport does not depend on torchvision, and an exported
graph must use the standard ``NonMaxSuppression`` and ``RoiAlign`` operators. So each function
here follows the ONNX operator's definition (as ONNX Runtime implements it) and is tested
against a one-node ONNX Runtime session: the PyTorch reference and the exported graph then
compute the same boxes, not merely similar ones.

Boxes are ``(x1, y1, x2, y2)`` in input pixels.
"""

from __future__ import annotations

import math

import numpy as np
import torch

BOX_CLIP = math.log(1000.0 / 16)  # the largest log-scale a box delta may apply (Detectron's)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` boxes -> ``[...]`` areas (0 for empty boxes)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of ``[..., N, 4]`` and ``[..., M, 4]`` boxes: ``[..., N, M]``."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def encode_boxes(boxes: torch.Tensor, anchors: torch.Tensor,
                 weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """The deltas ``(dx, dy, dw, dh)`` that turn ``anchors`` into ``boxes`` (both ``[..., 4]``),
    scaled by ``weights`` (Faster R-CNN's parametrisation; the box head uses 10, 10, 5, 5)."""
    aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    ax, ay = anchors[..., 0] + 0.5 * aw, anchors[..., 1] + 0.5 * ah
    bw, bh = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    bx, by = boxes[..., 0] + 0.5 * bw, boxes[..., 1] + 0.5 * bh
    wx, wy, ww, wh = weights
    return torch.stack([wx * (bx - ax) / aw, wy * (by - ay) / ah, ww * torch.log(bw / aw), wh * torch.log(bh / ah)], -1)


def decode_boxes(deltas: torch.Tensor, anchors: torch.Tensor,
                 weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """The boxes ``deltas`` make of ``anchors`` (the inverse of :func:`encode_boxes`); the size
    deltas are clipped at ``BOX_CLIP`` so that no box grows without bound."""
    aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    ax, ay = anchors[..., 0] + 0.5 * aw, anchors[..., 1] + 0.5 * ah
    wx, wy, ww, wh = weights
    cx = deltas[..., 0] / wx * aw + ax
    cy = deltas[..., 1] / wy * ah + ay
    w = torch.exp((deltas[..., 2] / ww).clamp(max=BOX_CLIP)) * aw
    h = torch.exp((deltas[..., 3] / wh).clamp(max=BOX_CLIP)) * ah
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)


def grid_anchors(height: int, width: int, stride: int, sizes: tuple[float, ...],
                 ratios: tuple[float, ...] = (0.5, 1.0, 2.0), device: torch.device | str | None = None) -> torch.Tensor:
    """Anchors of one feature map ``height x width`` at ``stride``: ``[height * width * A, 4]``,
    A = len(sizes) * len(ratios), ordered by cell (row-major), then size-major within a cell.
    An anchor of size s and ratio r (height / width) has area s^2 and is centred on its cell's
    top-left input pixel, as torchvision's AnchorGenerator places them."""
    cell = []
    for size in sizes:
        for ratio in ratios:
            h = size * math.sqrt(ratio)
            w = size / math.sqrt(ratio)
            cell.append([-w / 2, -h / 2, w / 2, h / 2])
    base = torch.tensor(cell, dtype=torch.float32, device=device).round()  # torchvision rounds the cell anchors
    ys = torch.arange(height, dtype=torch.float32, device=device) * stride
    xs = torch.arange(width, dtype=torch.float32, device=device) * stride
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([gx, gy, gx, gy], -1).reshape(-1, 1, 4)
    return (shifts + base[None]).reshape(-1, 4)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_out: int) -> torch.Tensor:
    """Greedy non-maximum suppression of one image's ``[N, 4]`` boxes, as ONNX's
    ``NonMaxSuppression`` for one class: take the best remaining box, drop every box whose IoU
    with it is greater than ``iou_threshold``, repeat. The kept indices, best first, at most
    ``max_out`` (an int64 ``[K]``; ties in score keep the lower index first)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order], boxes[order]).detach().numpy()  # the greedy loop runs in numpy: far less overhead per box
    alive = np.ones(len(order), dtype=bool)
    kept: list[int] = []
    for i in range(len(order)):
        if len(kept) == max_out:
            break
        if alive[i]:
            kept.append(i)
            alive &= iou[i] <= iou_threshold
    return order[torch.tensor(kept, dtype=torch.long)] if kept else torch.zeros(0, dtype=torch.long)


def roi_align(features: torch.Tensor, rois: torch.Tensor, batch_index: torch.Tensor, output_size: tuple[int, int],
              spatial_scale: float, sampling_ratio: int) -> torch.Tensor:
    """ONNX ``RoiAlign`` (opset 16, ``mode="avg"``, ``coordinate_transformation_mode="half_pixel"``)
    with a fixed ``sampling_ratio`` > 0: ``[K, C, oh, ow]`` features of ``rois`` ``[K, 4]`` (input
    pixels) on the maps ``features[batch_index]`` ``[B, C, H, W]``.

    Each output bin averages ``sampling_ratio^2`` bilinear samples. A sample more than one pixel
    outside the map is 0; one within a pixel of the border reads the border, as ONNX Runtime's
    kernel (and Detectron2's aligned RoIAlign) does.
    """
    if sampling_ratio <= 0:
        raise ValueError("roi_align needs a fixed sampling_ratio > 0 (adaptive sampling has data-dependent shapes)")
    b, c, height, width = features.shape
    oh, ow = output_size
    k = rois.shape[0]
    scaled = rois * spatial_scale - 0.5
    x1, y1 = scaled[:, 0], scaled[:, 1]
    bin_w = (scaled[:, 2] - x1) / ow
    bin_h = (scaled[:, 3] - y1) / oh
    # start + bin * size + (sample + 0.5) * size / ratio, in ONNX Runtime's order of operations
    steps = torch.arange(sampling_ratio, dtype=features.dtype) + 0.5
    ys = (y1[:, None, None] + torch.arange(oh, dtype=features.dtype)[None, :, None] * bin_h[:, None, None]
          + steps[None, None] * bin_h[:, None, None] / sampling_ratio)  # [K, oh, s]
    xs = (x1[:, None, None] + torch.arange(ow, dtype=features.dtype)[None, :, None] * bin_w[:, None, None]
          + steps[None, None] * bin_w[:, None, None] / sampling_ratio)  # [K, ow, s]
    ys = ys.reshape(k, -1, 1).expand(k, oh * sampling_ratio, ow * sampling_ratio)
    xs = xs.reshape(k, 1, -1).expand(k, oh * sampling_ratio, ow * sampling_ratio)
    outside = (ys < -1.0) | (ys > height) | (xs < -1.0) | (xs > width)
    y, x = ys.clamp(min=0), xs.clamp(min=0)
    y_low, x_low = y.floor().clamp(max=height - 1), x.floor().clamp(max=width - 1)
    y = torch.where(y_low >= height - 1, y_low, y)
    x = torch.where(x_low >= width - 1, x_low, x)
    y_high, x_high = (y_low + 1).clamp(max=height - 1), (x_low + 1).clamp(max=width - 1)
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    flat = features.permute(0, 2, 3, 1).reshape(b * height * width, c)
    base = batch_index.long()[:, None, None] * (height * width)

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return flat[(base + yy.long() * width + xx.long()).reshape(-1)].reshape(*yy.shape, c)

    value = ((hy * hx)[..., None] * at(y_low, x_low) + (hy * lx)[..., None] * at(y_low, x_high)
             + (ly * hx)[..., None] * at(y_high, x_low) + (ly * lx)[..., None] * at(y_high, x_high))
    value = value.masked_fill(outside[..., None], 0.0)
    value = value.reshape(k, oh, sampling_ratio, ow, sampling_ratio, c).mean(dim=(2, 4))
    return value.permute(0, 3, 1, 2).contiguous()

