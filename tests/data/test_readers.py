"""Readers for local data sets, on tiny fixture folders (see conftest.py), good and bad."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segexport.data import (
    CITYSCAPES_CLASSES,
    VOC_CLASSES,
    CityscapesDataset,
    FolderDataset,
    Sample,
    VOCDataset,
)
from segexport.errors import InputError


def _check_sample(sample: Sample, num_classes: int, files) -> None:
    """RGB uint8 image and uint8 mask of the fixture size, mask values valid."""
    assert sample.image.dtype == np.uint8 and sample.image.shape == (files.height, files.width, 3)
    assert sample.mask.dtype == np.uint8 and sample.mask.shape == (files.height, files.width)
    values = set(np.unique(sample.mask).tolist())
    assert values <= set(range(num_classes)) | {255}


# --- VOC -------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["VOCdevkit", "VOC2012"])
def test_voc_reads_palette_indices(files, voc_root: Path, level: str) -> None:
    root = voc_root if level == "VOCdevkit" else voc_root / "VOC2012"
    ds = VOCDataset(root, "train")
    assert len(ds) == 3 and ds.classes == VOC_CLASSES and len(VOC_CLASSES) == 21
    assert ds.name == "voc/train"
    sample = ds[1]
    _check_sample(sample, 21, files)
    assert sample.name == "2007_000002"
    assert np.array_equal(sample.mask, files.label_mask(1, 21))  # indices, not palette colours
    assert len(VOCDataset(root, "val")) == 2


def test_voc_missing_root_and_subfolder(voc_root: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        VOCDataset(tmp_path / "nowhere", "train")
    (voc_root / "VOC2012" / "SegmentationClass").rename(voc_root / "VOC2012" / "Masks")
    with pytest.raises(InputError, match="SegmentationClass.*palette"):
        VOCDataset(voc_root, "train")


def test_voc_unknown_split_lists_the_known_ones(voc_root: Path) -> None:
    with pytest.raises(InputError, match=r"test\.txt: no such split list; the splits here are train, val"):
        VOCDataset(voc_root, "test")


def test_voc_listed_file_missing(voc_root: Path) -> None:
    (voc_root / "VOC2012" / "JPEGImages" / "2007_000003.jpg").unlink()
    with pytest.raises(InputError, match="2007_000003 listed"):
        VOCDataset(voc_root, "train")


def test_voc_mask_out_of_range_names_file_and_values(files, voc_root: Path) -> None:
    mask = files.label_mask(0, 21)
    mask[5, 5], mask[6, 6] = 30, 21
    files.save_palette_png(mask, voc_root / "VOC2012" / "SegmentationClass" / "2007_000001.png")
    ds = VOCDataset(voc_root, "train")
    expected = r"2007_000001\.png: mask values \[21, 30\] outside the 21 classes \(0-20\) and ignore 255"
    with pytest.raises(InputError, match=expected):
        ds[0]
    _check_sample(ds[1], 21, files)  # the others still read


# --- Cityscapes ------------------------------------------------------------------------------


def test_cityscapes_reads_train_ids(files, cityscapes_root: Path) -> None:
    ds = CityscapesDataset(cityscapes_root, "train")
    assert len(ds) == 3 and ds.classes == CITYSCAPES_CLASSES and len(CITYSCAPES_CLASSES) == 19
    names = ["aachen_000000_000000", "aachen_000000_000001", "bochum_000000_000000"]
    assert [ds[i].name for i in range(3)] == names
    _check_sample(ds[2], 19, files)
    assert np.array_equal(ds[2].mask, files.label_mask(0, 19))
    assert len(CityscapesDataset(cityscapes_root, "val")) == 1


def test_cityscapes_missing_split_and_labels(cityscapes_root: Path) -> None:
    with pytest.raises(InputError, match="leftImg8bit/test: does not exist"):
        CityscapesDataset(cityscapes_root, "test")
    (cityscapes_root / "gtFine/train/aachen/aachen_000000_000001_gtFine_labelTrainIds.png").unlink()
    with pytest.raises(InputError, match="aachen_000000_000001.*cityscapesscripts"):
        CityscapesDataset(cityscapes_root, "train")


# --- Folder ----------------------------------------------------------------------------------


def test_folder_reads_and_converts_to_rgb(files, folder_root: Path) -> None:
    ds = FolderDataset(folder_root)
    assert len(ds) == 4 and ds.classes == ("sky", "road", "car", "person") and ds.name == "folder"
    samples = [ds[i] for i in range(4)]
    assert [s.name for s in samples] == ["a", "b", "c", "d"]
    for s in samples:
        _check_sample(s, 4, files)
    assert np.array_equal(samples[0].image, files.random_image(1))  # png: lossless
    grey = samples[2].image
    assert np.array_equal(grey[..., 0], files.random_image(3)[..., 0])
    assert np.array_equal(grey[..., 0], grey[..., 2])
    assert np.array_equal(samples[3].image, files.random_image(4))  # RGBA: alpha dropped


def test_folder_without_classes_txt_counts_mask_values(files, folder_root: Path) -> None:
    (folder_root / "classes.txt").unlink()
    mask = np.zeros((files.height, files.width), np.uint8)
    mask[0, 0] = 6
    Image.fromarray(mask).save(folder_root / "masks" / "a.png")
    assert FolderDataset(folder_root).classes == tuple(f"class_{i}" for i in range(7))


def test_folder_split_subfolders_and_fallbacks(folder_root: Path, tmp_path: Path) -> None:
    assert len(FolderDataset(folder_root, "val")) == 4  # a flat folder serves every split
    split_root = tmp_path / "split"
    split_root.mkdir()
    folder_root.rename(split_root / "train")
    (split_root / "train" / "classes.txt").rename(split_root / "classes.txt")
    ds = FolderDataset(split_root, "calib")  # no calib/: calibrate on train/
    assert len(ds) == 4 and ds.classes[0] == "sky" and ds.name == "folder/calib"
    with pytest.raises(InputError, match="neither val/images/ nor images/"):
        FolderDataset(split_root, "val")


def test_folder_images_without_masks_and_masks_without_images(files, folder_root: Path) -> None:
    (folder_root / "masks" / "b.png").unlink()
    (folder_root / "masks" / "c.png").unlink()
    with pytest.raises(InputError, match="no masks for b, c"):
        FolderDataset(folder_root)
    for stem in "bc":
        Image.fromarray(files.label_mask(0, 4)).save(folder_root / "masks" / f"{stem}.png")
    Image.fromarray(files.label_mask(0, 4)).save(folder_root / "masks" / "zz.png")
    with pytest.raises(InputError, match="no images for zz"):
        FolderDataset(folder_root)


def test_folder_missing_root_and_masks_folder(folder_root: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing: does not exist; expected a data set folder"):
        FolderDataset(tmp_path / "missing")
    (folder_root / "masks").rename(folder_root / "labels")
    with pytest.raises(InputError, match=r"masks: does not exist; expected one mask PNG per image"):
        FolderDataset(folder_root)


def test_folder_non_image_file_fails_when_read(files, folder_root: Path) -> None:
    (folder_root / "images" / "b.jpg").write_text("this is not a picture")
    ds = FolderDataset(folder_root)  # listing still works
    _check_sample(ds[0], 4, files)
    with pytest.raises(InputError, match=r"b\.jpg: not a readable image \("):
        ds[1]


def test_folder_foreign_file_types_are_refused(folder_root: Path) -> None:
    (folder_root / "images" / "notes.txt").write_text("hello")
    (folder_root / "images" / ".hidden").write_text("skipped")
    with pytest.raises(InputError, match="notes.txt not image files"):
        FolderDataset(folder_root)


def test_folder_mask_values_out_of_range(files, folder_root: Path) -> None:
    mask = files.label_mask(0, 4)
    mask[3, 3], mask[4, 4], mask[5, 5] = 9, 12, 255
    Image.fromarray(mask).save(folder_root / "masks" / "a.png")
    expected = (
        r"masks/a\.png: mask values \[9, 12\] outside the 4 classes \(0-3\) and ignore 255; "
        r"fix the mask or list the classes in classes\.txt"
    )
    with pytest.raises(InputError, match=expected):
        FolderDataset(folder_root)[0]


def test_folder_mask_problems(files, folder_root: Path) -> None:
    Image.fromarray(files.label_mask(0, 4, files.height + 1)).save(folder_root / "masks" / "a.png")
    colours = np.stack([files.label_mask(1, 4), files.label_mask(2, 4), files.label_mask(3, 4)], axis=2)
    Image.fromarray(colours).save(folder_root / "masks" / "b.png")
    ds = FolderDataset(folder_root)
    with pytest.raises(InputError, match="mask is 25x32 but its image .* is 24x32"):
        ds[0]
    with pytest.raises(InputError, match="b.png: mask is a RGB image with colours"):
        ds[1]


def test_folder_bad_classes_txt(folder_root: Path) -> None:
    (folder_root / "classes.txt").write_text("sky\nroad\nsky\n")
    with pytest.raises(InputError, match="classes.txt: repeats sky"):
        FolderDataset(folder_root)
