"""Data set specs: one string names a data set; open_dataset opens a split of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segexport.data import (
    DEFAULT_SPLIT_SIZES,
    KNOWN_KINDS,
    SegmentationSource,
    describe_spec,
    open_dataset,
)
from segexport.errors import ConfigError, UnknownNameError


def test_synthetic_defaults_and_options() -> None:
    for split, size in DEFAULT_SPLIT_SIZES.items():
        assert len(open_dataset("synthetic", split)) == size
    ds = open_dataset("synthetic", "val", size=(48, 64), seed=5, length=3)
    assert isinstance(ds, SegmentationSource) and len(ds) == 3
    assert ds[0].image.shape == (48, 64, 3)
    again = open_dataset("synthetic", "val", size=(48, 64), seed=5, length=3)
    assert np.array_equal(ds[2].image, again[2].image)


def test_real_data_sets_open_and_calib_means_train(
    voc_root: Path, cityscapes_root: Path, folder_root: Path
) -> None:
    assert open_dataset(f"voc:{voc_root}", "val").name == "voc/val"
    assert open_dataset(f"voc:{voc_root}", "calib").name == "voc/train"
    assert len(open_dataset(f"cityscapes:{cityscapes_root}", "calib")) == 3
    assert len(open_dataset(f"folder:{folder_root}", "val")) == 4


def test_length_takes_the_first_items(voc_root: Path) -> None:
    full = open_dataset(f"voc:{voc_root}", "train")
    head = open_dataset(f"voc:{voc_root}", "train", length=2)
    assert len(head) == 2 and head.classes == full.classes and head.name == full.name
    assert [head[i].name for i in range(2)] == [full[i].name for i in range(2)]
    assert head[-1].name == full[1].name
    with pytest.raises(IndexError):
        head[2]
    with pytest.raises(ConfigError, match="length 4 is not available from voc/train, which has 3"):
        open_dataset(f"voc:{voc_root}", "train", length=4)


def test_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="unknown data set 'ade:/data'.*synthetic, voc:PATH"):
        open_dataset("ade:/data", "train")
    assert KNOWN_KINDS == ("synthetic", "voc:PATH", "cityscapes:PATH", "folder:PATH", "coco:PATH")


@pytest.mark.parametrize(("spec", "message"), [("voc:", "needs a folder"), ("synthetic:x", "takes no path")])
def test_malformed_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        describe_spec(spec)


def test_unknown_synthetic_split() -> None:
    with pytest.raises(ConfigError, match="unknown split 'test'"):
        open_dataset("synthetic", "test")


def test_describe_spec() -> None:
    assert describe_spec("synthetic") == {"kind": "synthetic", "path": None}
    assert describe_spec("folder:/data/my set") == {"kind": "folder", "path": "/data/my set"}
    assert describe_spec("voc:C:/VOC") == {"kind": "voc", "path": "C:/VOC"}
