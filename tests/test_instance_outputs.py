"""Host-side handling of an instance network's padded outputs: pasting box-relative masks,
per-image detections and the semantic map they paint."""

import numpy as np

from segexport.instance_metrics import Detections
from segexport.instance_outputs import (
    detections_from_outputs,
    paste_masks,
    render_semantic,
)


def test_a_full_mask_fills_exactly_its_box():
    pasted = paste_masks(np.ones((1, 28, 28), np.float32), np.array([[3.0, 5.0, 11.0, 9.0]]), 16, 16)
    expected = np.zeros((16, 16), bool)
    expected[5:9, 3:11] = True
    assert np.array_equal(pasted[0], expected)


def test_left_half_mask_pastes_the_left_half_of_the_box():
    mask = np.zeros((1, 28, 28), np.float32)
    mask[0, :, :14] = 1.0
    pasted = paste_masks(mask, np.array([[0.0, 0.0, 8.0, 8.0]]), 8, 8)
    assert pasted[0, :, :4].all() and not pasted[0, :, 4:].any()


def test_boxes_outside_or_empty_paste_nothing():
    boxes = np.array([[5.0, 5.0, 5.0, 9.0], [20.0, 20.0, 30.0, 30.0], [-9.0, -9.0, -1.0, -1.0]])
    assert not paste_masks(np.ones((3, 28, 28), np.float32), boxes, 16, 16).any()


def test_detections_take_the_filled_slots_only():
    boxes = np.zeros((2, 3, 4), np.float32)
    boxes[0, 0] = (0, 0, 4, 4)
    boxes[1, :2] = [(0, 0, 2, 2), (4, 4, 8, 8)]
    scores = np.array([[0.9, 0, 0], [0.8, 0.7, 0]], np.float32)
    classes = np.array([[2, 0, 0], [1, 3, 0]], np.int32)
    masks = np.ones((2, 3, 28, 28), np.float32)
    found = detections_from_outputs([boxes, scores, classes, masks, np.array([1, 2], np.int32)], 8, 8)
    assert [len(d) for d in found] == [1, 2]
    assert found[1].classes.tolist() == [1, 3] and found[0].masks.shape == (1, 8, 8)
    assert found[1].masks[1, 4:, 4:].all() and found[1].masks[1].sum() == 16


def test_the_most_confident_detection_paints_on_top():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2] = True
    masks[1, 1:] = True
    det = Detections(classes=np.array([5, 2]), scores=np.array([0.4, 0.9]), boxes=np.zeros((2, 4)), masks=masks)
    painted = render_semantic(det, 4, 4)
    assert painted[0].tolist() == [5] * 4 and (painted[1:] == 2).all()
