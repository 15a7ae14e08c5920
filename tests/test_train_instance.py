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


def test_training_is_the_same_when_another_process_loads_the_cpu():
    """Without torch's deterministic algorithms the accumulating backward of RoIAlign came out different."""
    import subprocess
    import sys

    import torch

    from segexport.data import Preprocess, open_dataset
    from segexport.models import build_model
    from segexport.train import TrainConfig
    from segexport.train_instance import train_from_sources

    preprocess = Preprocess(size=(64, 64))
    train = open_dataset("synthetic", "train", size=(64, 64), seed=0, length=96)
    val = open_dataset("synthetic", "val", size=(64, 64), seed=0, length=4)
    weights = []
    for loaded in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "import numpy as np\na = np.ones((900, 900))\nwhile True: a @ a"]) \
            if loaded else None
        try:
            torch.manual_seed(0)
            model = build_model("maskrcnn", size="tiny", num_classes=8)
            train_from_sources(model, train, val, preprocess, TrainConfig(epochs=1, batch_size=8, lr=0.002, bf16=False),
                               progress=False)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not torch.are_deterministic_algorithms_enabled()  # the caller's setting is back

