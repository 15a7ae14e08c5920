"""The detection blocks compute what ONNX Runtime's NonMaxSuppression and RoiAlign compute."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from segexport.nn.detection import (
    box_iou,
    decode_boxes,
    encode_boxes,
    grid_anchors,
    nms,
    roi_align,
)


def _session(node: onnx.NodeProto, inputs: list, outputs: list, inits=(), opset: int = 16) -> ort.InferenceSession:
    graph = h.make_graph([node], "g", inputs, outputs, list(inits))
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _random_boxes(gen: torch.Generator, n: int, side: float = 64.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * side
    wh = torch.rand(n, 2, generator=gen) * side / 2 + 1
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_keeps_what_onnx_runtime_keeps(threshold):
    gen = torch.Generator().manual_seed(int(threshold * 10))
    boxes = _random_boxes(gen, 200)
    scores = torch.rand(200, generator=gen)
    scores[10:20] = scores[0]  # ties: the lower index goes first
    session = _session(
        h.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou"], ["selected"]),
        [h.make_tensor_value_info("boxes", T.FLOAT, [1, 200, 4]), h.make_tensor_value_info("scores", T.FLOAT, [1, 1, 200])],
        [h.make_tensor_value_info("selected", T.INT64, [None, 3])],
        [numpy_helper.from_array(np.array([50], np.int64), "max"),
         numpy_helper.from_array(np.array([threshold], np.float32), "iou")])
    selected = session.run(None, {"boxes": boxes[None].numpy(), "scores": scores[None, None].numpy()})[0]
    ours = nms(boxes, scores, threshold, 50)
    assert ours.tolist() == selected[:, 2].tolist()
    assert 0 < len(ours) <= 50


def test_nms_of_nothing_is_empty():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5, 10).tolist() == []


@pytest.mark.parametrize(("sampling_ratio", "scale"), [(2, 0.25), (1, 0.125), (3, 1.0)])
def test_roi_align_is_onnx_runtimes(sampling_ratio, scale):
    gen = torch.Generator().manual_seed(sampling_ratio)
    features = torch.randn(2, 3, 16, 20, generator=gen)
    side = 16 / scale
    rois = _random_boxes(gen, 24, side)
    rois[0] = torch.tensor([-10.0, -10.0, side * 1.3, side * 1.3])  # beyond every border
    rois[1] = torch.tensor([5.0, 5.0, 5.2, 5.1])  # smaller than a pixel
    batch = torch.randint(0, 2, (24,), generator=gen)
    session = _session(
        h.make_node("RoiAlign", ["x", "rois", "batch"], ["y"], mode="avg", output_height=7, output_width=5,
                    sampling_ratio=sampling_ratio, spatial_scale=scale, coordinate_transformation_mode="half_pixel"),
        [h.make_tensor_value_info("x", T.FLOAT, [2, 3, 16, 20]), h.make_tensor_value_info("rois", T.FLOAT, [24, 4]),
         h.make_tensor_value_info("batch", T.INT64, [24])],
        [h.make_tensor_value_info("y", T.FLOAT, [24, 3, 7, 5])])
    expected = session.run(None, {"x": features.numpy(), "rois": rois.numpy(), "batch": batch.numpy()})[0]
    ours = roi_align(features, rois, batch, (7, 5), scale, sampling_ratio)
    assert ours.shape == (24, 3, 7, 5)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-6)  # 2.4e-7 measured: summation order


def test_roi_align_refuses_adaptive_sampling():
    with pytest.raises(ValueError, match="fixed sampling_ratio"):
        roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4), torch.zeros(1), (2, 2), 1.0, 0)


def test_box_coding_round_trips_and_iou():
    gen = torch.Generator().manual_seed(0)
    anchors, boxes = _random_boxes(gen, 50), _random_boxes(gen, 50)
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        back = decode_boxes(encode_boxes(boxes, anchors, weights), anchors, weights)
        torch.testing.assert_close(back, boxes, rtol=0, atol=1e-4)
    big = decode_boxes(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert (big[0, 2:] - big[0, :2] <= 10 * 1000 / 16 + 1e-3).all()  # clipped growth
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 3, 0.0, 1.0]]))


def test_grid_anchors_cover_the_map_in_torchvisions_order():
    anchors = grid_anchors(2, 3, 16, (32.0,), (0.5, 1.0, 2.0))
    assert anchors.shape == (2 * 3 * 3, 4)
    cell = anchors[:3]
    assert cell[1].tolist() == [-16.0, -16.0, 16.0, 16.0]  # ratio 1, centred on pixel (0, 0)
    assert (cell[0, 3] - cell[0, 1]) < (cell[0, 2] - cell[0, 0])  # ratio 0.5: wider than tall
    assert anchors[3:6].sub(cell).tolist() == [[16.0, 0.0, 16.0, 0.0]] * 3  # the next cell, one stride right
    assert anchors[9:12].sub(cell).tolist() == [[0.0, 16.0, 0.0, 16.0]] * 3  # the next row
