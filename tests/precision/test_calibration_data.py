"""Calibration images: folders of any images, data set specs, seeded samples, skips and errors; the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segexport.data import Preprocess
from segexport.errors import InputError
from segexport.precision.calibration_data import (
    is_dataset_spec,
    load_calibration_images,
)
from segexport.precision.manifest import MANIFEST_PATH, synthetic_manifest

PRE = Preprocess(size=(32, 48), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
REPO = Path(__file__).resolve().parents[2]


def _image_folder(root: Path) -> Path:
    """Six images of several sizes and modes (one in a subfolder), one corrupt png and a text file."""
    rng = np.random.default_rng(0)
    root.mkdir()
    (root / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (100, 30, 3), dtype=np.uint8)).save(root / "b.jpg")
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(root / "grey.png")
    Image.fromarray(rng.integers(0, 256, (33, 17, 4), dtype=np.uint8)).save(root / "alpha.png")
    Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(root / "sub" / "c.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "d.bmp")
    (root / "broken.png").write_bytes(b"not a png")
    (root / "notes.txt").write_text("calibration notes")
    return root


def test_folder_images_of_any_size_and_mode_are_preprocessed_like_the_model(tmp_path):
    folder = _image_folder(tmp_path / "calib")
    calib = load_calibration_images(str(folder), PRE, count=10, seed=0)
    assert len(calib) == 6 and calib.images.shape == (6, 32, 48, 3) and calib.images.dtype == np.uint8
    assert calib.candidates == 7 and len(calib.skipped) == 1 and "broken.png" in calib.skipped[0]
    batch = np.concatenate(list(calib.batches(4)))
    assert batch.shape == (6, 3, 32, 48) and batch.dtype == np.float32
    from segexport.data.imagefiles import read_rgb

    first = calib.names[0]
    np.testing.assert_array_equal(batch[0], PRE.image(read_rgb(Path(first))))
    note = calib.shortfall_note()
    assert note is not None and "6 usable images of 10" in note and "1 unreadable skipped" in note
    report = calib.report()
    assert report["used"] == 6 and report["requested"] == 10 and report["skipped"] == 1 and report["seed"] == 0


def test_sample_is_seeded(tmp_path):
    folder = _image_folder(tmp_path / "calib")
    a = load_calibration_images(str(folder), PRE, count=3, seed=0)
    b = load_calibration_images(str(folder), PRE, count=3, seed=0)
    c = load_calibration_images(str(folder), PRE, count=3, seed=1)
    assert a.names == b.names and len(a) == 3 and a.shortfall_note() is None
    np.testing.assert_array_equal(a.images, b.images)
    assert a.names != c.names


def test_synthetic_spec_renders_the_calib_split():
    calib = load_calibration_images("synthetic", PRE, count=5, seed=0)
    assert len(calib) == 5 and calib.candidates == 5 and calib.names[0] == "calib_000000"
    other = load_calibration_images("synthetic", PRE, count=5, seed=1)
    assert not np.array_equal(calib.images, other.images)


@pytest.mark.parametrize("text, expected", [("synthetic", True), ("voc:/data/VOC", True), ("folder:x", True),
                                            ("cityscapes:c", True), ("my_images", False), ("/data/calib", False)])
def test_dataset_spec_or_folder(text, expected):
    assert is_dataset_spec(text) is expected


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        load_calibration_images(str(tmp_path / "empty"), PRE)


def test_folder_without_images_is_an_error(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    (folder / "b.csv").write_text("y")
    with pytest.raises(InputError, match="none of its 2 files is an image"):
        load_calibration_images(str(folder), PRE)


def test_folder_of_unreadable_images_is_an_error(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"junk")
    with pytest.raises(InputError, match="none of its 1 image files could be read"):
        load_calibration_images(str(folder), PRE)


def test_missing_source_is_an_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_calibration_images(str(tmp_path / "nowhere"), PRE)


def test_manifest_matches_the_generator():
    """calibration/synthetic.json is what the generator renders; if not, run
    `python -m segexport.precision.manifest` and review the change."""
    committed = json.loads((REPO / MANIFEST_PATH).read_text())
    assert synthetic_manifest() == committed
    assert committed["count"] == 256 and abs(sum(committed["class_pixel_frequency"].values()) - 1.0) < 1e-5
