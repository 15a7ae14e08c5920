"""Preprocessing: geometry, normalisation (numpy == torch, bit for bit), round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segexport.data import (
    IGNORE_INDEX,
    Preprocess,
    Sample,
    SyntheticDataset,
    load_arrays,
    normalize_batch,
)
from segexport.errors import ConfigError, InputError


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_dict_round_trip_through_json() -> None:
    pre = Preprocess((64, 48), mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0), resize="pad")
    d = json.loads(json.dumps(pre.to_dict()))
    assert d == {"size": [64, 48], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 1.0], "resize": "pad"}
    assert Preprocess.from_dict(d) == pre
    assert Preprocess.from_dict({"size": [32, 32]}) == Preprocess((32, 32))


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"size": [8, 8], "scale": 2}, r"unknown preprocess keys \['scale'\]"),
        ({"mean": [0, 0, 0]}, "needs a size"),
        ({"size": [0, 8]}, "two positive integers"),
        ({"size": [8, 8], "std": [1, 0, 1]}, "std must be 3 positive numbers"),
        ({"size": [8, 8], "mean": [0.5, 0.5]}, "mean must be 3 numbers"),
        ({"size": [8, 8], "resize": "crop"}, "resize must be one of resize, pad"),
    ],
)
def test_bad_values_raise_config_error(d: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Preprocess.from_dict(d)


def test_resize_mode_image_and_mask() -> None:
    pre = Preprocess((20, 30))
    x = pre.image(_image(40, 50))
    assert x.dtype == np.float32 and x.shape == (3, 20, 30) and x.flags.c_contiguous
    flat = np.full((7, 9, 3), (10, 128, 250), np.uint8)
    expected = np.array([10, 128, 250], np.float32) / np.float32(255)
    expected = (expected - np.float32(pre.mean)) / np.float32(pre.std)
    assert np.array_equal(pre.image(flat)[:, 4, 5], expected)
    mask = np.random.default_rng(1).choice(np.array([0, 3, 255], np.uint8), (10, 15))
    m = pre.mask(mask)
    assert m.dtype == np.int64 and m.shape == (20, 30)
    assert np.array_equal(m, np.repeat(np.repeat(mask, 2, 0), 2, 1))  # nearest: no blended labels


def test_pad_mode() -> None:
    pre = Preprocess((32, 40), resize="pad")
    img, mask = _image(20, 25), np.ones((20, 25), np.uint8)
    padded = pre.resize_image(img)
    assert np.array_equal(padded[:20, :25], img)
    assert (padded[20:] == pre.pad_colour).all() and (padded[:, 25:] == pre.pad_colour).all()
    assert pre.pad_colour == (124, 116, 104)
    m = pre.mask(mask)
    assert (m[:20, :25] == 1).all() and (m[20:] == IGNORE_INDEX).all() and (m[:, 25:] == IGNORE_INDEX).all()
    with pytest.raises(InputError, match="image of 33x10 is larger than the pad size 32x40"):
        pre.image(_image(33, 10))


@pytest.mark.parametrize(
    "pre",
    [
        Preprocess((24, 40)),
        Preprocess((64, 64), resize="pad"),
        Preprocess((24, 40), mean=(0.1, 0.7, 0.3), std=(0.3, 0.11, 0.9)),
    ],
    ids=["resize", "pad", "custom-mean-std"],
)
def test_numpy_image_equals_torch_batch_exactly(pre: Preprocess) -> None:
    raw = [_image(48, 60, seed) for seed in range(3)]
    batch = np.stack([pre.resize_image(img) for img in raw])
    normalised = normalize_batch(torch.from_numpy(batch), pre)
    assert normalised.dtype == torch.float32 and normalised.shape == (3, 3, *pre.size)
    for i, img in enumerate(raw):
        assert np.array_equal(pre.image(img), normalised[i].numpy())


def test_normalize_batch_rejects_wrong_layout() -> None:
    with pytest.raises(InputError, match="NxHxWx3 uint8"):
        normalize_batch(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), Preprocess((8, 8)))


class _Unlabelled:
    classes = ("a", "b")
    name = "unlabelled"

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> Sample:
        return Sample(image=_image(10 + 30 * i, 12, i), mask=None, name=f"img{i}")


def test_load_arrays() -> None:
    source = SyntheticDataset("val", 3, size=(48, 48))
    images, masks = load_arrays(source, Preprocess((32, 32)))
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    assert masks.shape == (3, 32, 32) and masks.dtype == np.uint8
    pre = Preprocess((32, 32))
    assert np.array_equal(images[1], pre.resize_image(source[1].image))
    assert np.array_equal(masks[1], pre.resize_mask(source[1].mask))


def test_load_arrays_without_masks_and_naming_the_failing_sample() -> None:
    images, masks = load_arrays(_Unlabelled(), Preprocess((16, 16)))
    assert images.shape == (2, 16, 16, 3) and (masks == IGNORE_INDEX).all()
    with pytest.raises(InputError, match="unlabelled, sample img1: image of 40x12 is larger"):
        load_arrays(_Unlabelled(), Preprocess((16, 16), resize="pad"))
