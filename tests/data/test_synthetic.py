"""The built-in synthetic data set: determinism, split independence, class coverage."""

from __future__ import annotations

import numpy as np
import pytest

from segexport.data import (
    DEFAULT_SPLIT_SIZES,
    SYNTHETIC_CLASSES,
    SyntheticDataset,
    render_scene,
)
from segexport.errors import ConfigError


def _same(a, b) -> bool:
    return np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.name == b.name


def test_sample_format() -> None:
    ds = SyntheticDataset("val", 3, size=(64, 96))
    sample = ds[2]
    assert len(ds) == 3
    assert sample.image.shape == (64, 96, 3) and sample.image.dtype == np.uint8
    assert sample.mask is not None and sample.mask.shape == (64, 96) and sample.mask.dtype == np.uint8
    assert sample.mask.max() < len(SYNTHETIC_CLASSES)
    assert sample.name == "val_000002"
    assert ds.classes == SYNTHETIC_CLASSES and ds.name == "synthetic/val"


def test_classes_and_split_sizes_are_constants() -> None:
    assert len(SYNTHETIC_CLASSES) >= 8 and SYNTHETIC_CLASSES[0] == "background"
    assert len(set(SYNTHETIC_CLASSES)) == len(SYNTHETIC_CLASSES)
    assert set(DEFAULT_SPLIT_SIZES) == {"train", "val", "calib"}


def test_same_seed_gives_identical_data() -> None:
    first, second = SyntheticDataset("train", 6, seed=3), SyntheticDataset("train", 6, seed=3)
    assert all(_same(first[i], second[i]) for i in range(6))


def test_different_seeds_differ() -> None:
    first, second = SyntheticDataset("train", 4, seed=0), SyntheticDataset("train", 4, seed=1)
    assert not any(np.array_equal(first[i].image, second[i].image) for i in range(4))


def test_item_independent_of_length_and_access_order() -> None:
    short, long = SyntheticDataset("train", 10), SyntheticDataset("train", 100)
    backwards = [short[i] for i in reversed(range(10))][::-1]
    assert all(_same(backwards[i], long[i]) for i in range(10))
    assert _same(short[-1], short[9])


def test_splits_never_share_images() -> None:
    splits = [SyntheticDataset(split, 5) for split in ("train", "val", "calib")]
    images = [s[i].image.tobytes() for s in splits for i in range(5)]
    assert len(set(images)) == len(images)


def test_render_scene_depends_only_on_the_generator() -> None:
    a = render_scene(np.random.default_rng(7), 40, 56)
    b = render_scene(np.random.default_rng(7), 40, 56)
    assert a[0].shape == (40, 56, 3) and a[1].shape == (40, 56)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def _class_statistics(count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images containing each class, pixels per class, mean RGB per class."""
    ds = SyntheticDataset("train", count, seed=11)
    classes = len(SYNTHETIC_CLASSES)
    images_with, pixels, colour_sums = np.zeros(classes), np.zeros(classes), np.zeros((classes, 3))
    for i in range(count):
        sample = ds[i]
        labels = sample.mask.ravel()
        counts = np.bincount(labels, minlength=classes)
        images_with += counts > 0
        pixels += counts
        for channel in range(3):
            colour_sums[:, channel] += np.bincount(labels, sample.image[..., channel].ravel(), classes)
    return images_with, pixels, colour_sums / pixels[:, None]


def test_every_class_appears_and_colour_says_nothing_about_class() -> None:
    images_with, pixels, mean_colour = _class_statistics(100)
    assert images_with[0] == 100
    assert images_with[1:].min() >= 15, images_with
    assert (pixels[1:] / pixels.sum()).min() >= 0.01, pixels / pixels.sum()
    # Every class draws its fill from the same distribution: no shape has a tell-tale colour.
    shapes = mean_colour[1:]
    assert np.abs(shapes - shapes.mean(axis=0)).max() < 30, mean_colour
    # The background is darker only by the shadows falling on it (brightness, not hue).
    shift = shapes.mean(axis=0) - mean_colour[0]
    assert shift.max() - shift.min() < 12, mean_colour


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "test", "length": 4}, "unknown split"),
        ({"split": "train", "length": -1}, "length"),
        ({"split": "train", "length": 4, "size": (8, 64)}, "height"),
        ({"split": "train", "length": 4, "size": (64,)}, "size"),
        ({"split": "train", "length": 4, "seed": -2}, "seed"),
    ],
)
def test_bad_options_raise_config_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SyntheticDataset(**kwargs)


def test_index_out_of_range() -> None:
    ds = SyntheticDataset("val", 2)
    with pytest.raises(IndexError):
        ds[2]
    assert len(list(ds)) == 2
