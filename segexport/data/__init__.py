"""Data: the built-in synthetic data set, readers for local data sets, and preprocessing.

Everything is numpy + PIL; only ``normalize_batch`` uses torch, imported when called.
"""

from segexport.data.preprocess import Preprocess, load_arrays, normalize_batch
from segexport.data.readers import (
    CITYSCAPES_CLASSES,
    VOC_CLASSES,
    CityscapesDataset,
    FolderDataset,
    VOCDataset,
)
from segexport.data.source import IGNORE_INDEX, FirstItems, Sample, SegmentationSource
from segexport.data.spec import KNOWN_KINDS, describe_spec, open_dataset
from segexport.data.synthetic import (
    DEFAULT_SPLIT_SIZES,
    SYNTHETIC_CLASSES,
    SyntheticDataset,
    render_scene,
)

__all__ = [
    "CITYSCAPES_CLASSES",
    "DEFAULT_SPLIT_SIZES",
    "IGNORE_INDEX",
    "KNOWN_KINDS",
    "SYNTHETIC_CLASSES",
    "VOC_CLASSES",
    "CityscapesDataset",
    "FirstItems",
    "FolderDataset",
    "Preprocess",
    "Sample",
    "SegmentationSource",
    "SyntheticDataset",
    "VOCDataset",
    "describe_spec",
    "load_arrays",
    "normalize_batch",
    "open_dataset",
    "render_scene",
]
