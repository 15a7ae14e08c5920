"""Matching an exported instance network's detections with PyTorch's."""

import numpy as np

from segexport.export.verify_instances import match_detections


def _outputs(boxes, scores, classes, slots: int = 4) -> list[np.ndarray]:
    """Padded outputs of one image with the given detections."""
    k = len(boxes)
    b = np.zeros((1, slots, 4), np.float32)
    s = np.zeros((1, slots), np.float32)
    c = np.zeros((1, slots), np.int32)
    b[0, :k], s[0, :k], c[0, :k] = boxes, scores, classes
    masks = np.zeros((1, slots, 28, 28), np.float32)
    return [b, s, c, masks, np.array([k], np.int32)]


REFERENCE = _outputs([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [1, 2])


def test_the_same_detections_in_another_order_match():
    found = match_detections(REFERENCE, _outputs([[20, 20, 40, 40], [0, 0, 10, 10]], [0.8, 0.9], [2, 1]))
    assert found["matched"] == found["reference"] == found["candidate"] == 2
    assert found["min_box_iou"] == 1.0 and found["max_score_error"] == 0.0


def test_a_moved_box_a_changed_score_or_class_does_not_match():
    moved = match_detections(REFERENCE, _outputs([[0, 0, 10, 10.2], [20, 20, 40, 40]], [0.9, 0.8], [1, 2]))
    scored = match_detections(REFERENCE, _outputs([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8002], [1, 2]))
    relabelled = match_detections(REFERENCE, _outputs([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [1, 3]))
    assert moved["matched"] == scored["matched"] == relabelled["matched"] == 1


def test_an_extra_detection_is_counted():
    found = match_detections(REFERENCE, _outputs([[0, 0, 10, 10], [20, 20, 40, 40], [5, 5, 9, 9]],
                                                 [0.9, 0.8, 0.1], [1, 2, 1]))
    assert found["matched"] == found["reference"] == 2 and found["candidate"] == 3
