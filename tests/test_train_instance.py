"""Instance labels follow their images to the input size."""

import numpy as np

from segexport.data import Preprocess
from segexport.data.instances import Instances
from segexport.train_instance import resized_instances


def _two_objects() -> Instances:
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 8:40, 16:48] = True
    masks[1, 60:61, 0:1] = True  # one pixel: vanishes at half size
    return Instances.from_masks([3, 5], masks)


def test_resize_halves_masks_and_boxes_and_drops_vanished_objects():
    got = resized_instances(_two_objects(), Preprocess(size=(32, 32)))
    assert got.masks.shape[1:] == (32, 32) and got.classes.tolist() == [3]
    np.testing.assert_allclose(got.boxes[0], [8, 4, 24, 20], atol=1)


def test_pad_keeps_every_pixel():
    got = resized_instances(_two_objects(), Preprocess(size=(96, 96), resize="pad"))
    assert got.masks.shape == (2, 96, 96) and got.classes.tolist() == [3, 5]
    assert got.masks.sum(axis=(1, 2)).tolist() == [32 * 32, 1]
