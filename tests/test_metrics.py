import math

import numpy as np
import pytest

from segexport.metrics import confusion_matrix, metrics_from_confusion


def test_confusion_counts_hand_case():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    cm = confusion_matrix(target, pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]


def test_metrics_hand_computed():
    # class 0: tp 1, fn 1, fp 0 -> 1/2; class 1: tp 2, fp 1 -> 2/3; class 2: 1/1
    cm = np.array([[1, 1, 0], [0, 2, 0], [0, 0, 1]])
    m = metrics_from_confusion(cm)
    assert m.per_class_iou == pytest.approx((0.5, 2 / 3, 1.0))
    assert m.miou == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert m.pixel_acc == pytest.approx(4 / 5)


def test_absent_class_left_out_of_mean():
    target = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 1])
    m = metrics_from_confusion(confusion_matrix(target, pred, 4))
    assert math.isnan(m.per_class_iou[2]) and math.isnan(m.per_class_iou[3])
    assert m.miou == pytest.approx((1 / 2 + 2 / 3) / 2)
    d = m.to_dict(("a", "b", "c", "d"))
    assert d["per_class_iou"]["c"] is None


def test_class_only_in_prediction_counts_as_zero():
    m = metrics_from_confusion(confusion_matrix(np.array([0, 0]), np.array([0, 1]), 2))
    assert m.per_class_iou == pytest.approx((0.5, 0.0))
    assert m.miou == pytest.approx(0.25)


def test_confusion_adds_across_batches():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 5, size=(4, 8, 8))
    p = rng.integers(0, 5, size=(4, 8, 8))
    whole = confusion_matrix(t, p, 5)
    parts = sum(confusion_matrix(t[i], p[i], 5) for i in range(4))
    assert (whole == parts).all()
    assert whole.sum() == t.size


def test_perfect_prediction():
    t = np.arange(6).reshape(2, 3) % 3
    m = metrics_from_confusion(confusion_matrix(t, t, 3))
    assert m.miou == 1.0 and m.pixel_acc == 1.0
