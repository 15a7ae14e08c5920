"""Tiny data-set folders written into tmp_path: VOC, Cityscapes and a plain folder layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

HEIGHT, WIDTH = 24, 32


def random_image(seed: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def label_mask(seed: int, num_classes: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Blocks of class indices with a 255 border, like VOC boundaries."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, num_classes, (height // 8 + 1, width // 8 + 1), dtype=np.uint8)
    mask = np.repeat(np.repeat(blocks, 8, 0), 8, 1)[:height, :width].copy()
    mask[0, :] = 255
    return mask


def save_palette_png(mask: np.ndarray, path: Path) -> None:
    image = Image.fromarray(mask, mode="L")
    palette = np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8)
    image.putpalette(palette.tobytes())  # an L image with a palette becomes mode P
    assert image.mode == "P"
    image.save(path)


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """VOCdevkit/VOC2012 with train (3 ids) and val (2 ids); returns the VOCdevkit folder."""
    base = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True)
    splits = {"train": ["2007_000001", "2007_000002", "2007_000003"], "val": ["2008_000001", "2008_000002"]}
    for split_index, (split, ids) in enumerate(splits.items()):
        (base / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for i, image_id in enumerate(ids):
            seed = 10 * split_index + i
            Image.fromarray(random_image(seed)).save(base / "JPEGImages" / f"{image_id}.jpg")
            save_palette_png(label_mask(seed, 21), base / "SegmentationClass" / f"{image_id}.png")
    return tmp_path / "VOCdevkit"


@pytest.fixture
def cityscapes_root(tmp_path: Path) -> Path:
    """leftImg8bit/ and gtFine/ with train (2 cities, 3 images) and val (1 image)."""
    root = tmp_path / "cityscapes"
    layout = {"train": {"aachen": 2, "bochum": 1}, "val": {"frankfurt": 1}}
    for split, cities in layout.items():
        for city, count in cities.items():
            (root / "leftImg8bit" / split / city).mkdir(parents=True)
            (root / "gtFine" / split / city).mkdir(parents=True)
            for i in range(count):
                stem = f"{city}_000000_{i:06d}"
                image_path = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
                Image.fromarray(random_image(i)).save(image_path)
                mask_path = root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png"
                Image.fromarray(label_mask(i, 19)).save(mask_path)
                # The other gtFine files sit beside it and must be ignored.
                Image.fromarray(label_mask(i, 34)).save(mask_path.with_name(f"{stem}_gtFine_labelIds.png"))
    return root


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    """images/ (png, jpg, grey, RGBA) and masks/ with 4 classes, plus classes.txt."""
    root = tmp_path / "folder"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(random_image(1)).save(root / "images" / "a.png")
    Image.fromarray(random_image(2)).save(root / "images" / "b.jpg")
    Image.fromarray(random_image(3)[..., 0]).save(root / "images" / "c.png")  # greyscale
    rgba = np.concatenate([random_image(4), np.full((HEIGHT, WIDTH, 1), 200, np.uint8)], axis=2)
    Image.fromarray(rgba).save(root / "images" / "d.png")
    for i, stem in enumerate("abcd"):
        Image.fromarray(label_mask(i, 4)).save(root / "masks" / f"{stem}.png")
    (root / "classes.txt").write_text("sky\nroad\ncar\nperson\n")
    return root


class DataFiles:
    """The helpers above, handed to tests as the ``files`` fixture (conftest is not importable
    by name: ``tests/`` is on sys.path and has a conftest of its own)."""

    height = HEIGHT
    width = WIDTH
    random_image = staticmethod(random_image)
    label_mask = staticmethod(label_mask)
    save_palette_png = staticmethod(save_palette_png)


@pytest.fixture
def files() -> type[DataFiles]:
    return DataFiles
