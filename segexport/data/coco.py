"""COCO-format instance data from a local folder: ``coco:PATH``.

The layout COCO ships and most tools write::

    PATH/annotations/instances_val2017.json   # a split: instances_<split>*.json
    PATH/val2017/000000000139.jpg             # images: PATH/<json name after 'instances_'>/,
                                              # PATH/images/ or PATH/ itself

Split ``train`` reads ``instances_train*.json``, ``val`` ``instances_val*.json`` (one file
each). Categories become classes 1..K in the order of their ids (0 is background), so a
``coco:PATH`` folder also works as a semantic data set: the mask paints the objects, larger
first, and crowd regions are ``IGNORE_INDEX``. Segmentations may be polygons or RLE (compressed
or not), decoded by pycocotools.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from segexport.data.imagefiles import preview, read_rgb, require_dir
from segexport.data.instances import Instances, semantic_from_instances
from segexport.data.source import Sample, check_index
from segexport.errors import InputError

PathLike = str | Path
IMAGE_FOLDERS = ("images", ".")
MAX_CATEGORIES = 254  # class indices 1..254 in a uint8 mask; 0 is background, 255 ignored  # tried after PATH/<split name from the json>


def _annotation_file(top: Path, split: str) -> Path:
    folder = require_dir(top / "annotations", "the COCO annotations (annotations/instances_<split>.json)")
    found = sorted(folder.glob(f"instances_{split}*.json"))
    if len(found) != 1:
        have = ", ".join(p.name for p in sorted(folder.glob("instances_*.json"))) or "none"
        what = "no" if not found else f"{len(found)}"
        raise InputError(f"{folder}: {what} instances_{split}*.json for the {split} split (found: {have}); "
                         f"keep exactly one file per split")
    return found[0]


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable COCO JSON file ({exc}); re-export the annotations") from exc
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise InputError(f"{path}: no {', '.join(missing)} list(s); a COCO instances file has images, "
                         "annotations and categories")
    return data


def _image_folder(top: Path, annotations: Path, names: list[str]) -> Path:
    candidates = [top / annotations.stem.removeprefix("instances_"), *(top / f for f in IMAGE_FOLDERS)]
    for folder in candidates:
        if names and (folder / names[0]).is_file():
            return folder
    raise InputError(f"{top}: the images of {annotations.name} (e.g. {names[0] if names else '?'}) are in none "
                     f"of {', '.join(str(c) for c in candidates)}; put them in the first")


class CocoDataset:
    """One split of a COCO-format folder: images, their semantic masks and their instances.

    Args:
        root: the folder holding ``annotations/``.
        split: ``train`` or ``val``.

    Raises:
        InputError: a missing folder, annotation file or image, malformed JSON, no categories,
            or an annotation naming an unknown image or category.
    """

    def __init__(self, root: PathLike, split: str) -> None:
        top = require_dir(root, "a COCO folder (annotations/instances_<split>.json and the images)")
        path = _annotation_file(top, split)
        data = _load_json(path)
        categories = sorted(data["categories"], key=lambda c: c["id"])
        if not categories:
            raise InputError(f"{path}: no categories; a COCO instances file names at least one")
        if len(categories) > MAX_CATEGORIES:
            raise InputError(f"{path}: {len(categories)} categories; masks hold at most {MAX_CATEGORIES} classes "
                             "besides background (255 is 'ignore'): merge or drop categories")
        self.classes: tuple[str, ...] = ("background", *(str(c["name"]) for c in categories))
        self.name = f"coco/{split}"
        self._class_of = {c["id"]: i + 1 for i, c in enumerate(categories)}
        self._images = sorted(data["images"], key=lambda im: im["id"])
        if not self._images:
            raise InputError(f"{path}: no images; nothing to read")
        by_id = {im["id"]: im for im in self._images}
        self._annotations: dict[Any, list[dict[str, Any]]] = {im["id"]: [] for im in self._images}
        for ann in data["annotations"]:
            if ann.get("image_id") not in by_id or ann.get("category_id") not in self._class_of:
                raise InputError(f"{path}: annotation {ann.get('id')} names image {ann.get('image_id')} or "
                                 f"category {ann.get('category_id')}, which the file does not list; fix the file")
            self._annotations[ann["image_id"]].append(ann)
        names = [str(im["file_name"]) for im in self._images]
        self._folder = _image_folder(top, path, names)
        missing = [n for n in names if not (self._folder / n).is_file()]
        if missing:
            raise InputError(f"{self._folder}: {preview(missing)} listed in {path.name} but missing; "
                             "restore the images or remove them from the file")
        self._path = path

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> Sample:
        info = self._images[check_index(index, len(self._images))]
        image = read_rgb(self._folder / info["file_name"])
        height, width = image.shape[:2]
        instances = self.instances_of(info, height, width)
        return Sample(image=image, mask=semantic_from_instances(instances, height, width),
                      name=Path(info["file_name"]).stem, instances=instances)

    def instances_of(self, info: dict[str, Any], height: int, width: int) -> Instances:
        """The decoded annotations of image ``info`` (its COCO record), at ``height x width``."""
        anns = self._annotations[info["id"]]
        masks = np.zeros((len(anns), height, width), dtype=bool)
        for i, ann in enumerate(anns):
            masks[i] = _decode(ann.get("segmentation"), height, width, f"{self._path.name}: annotation {ann.get('id')}")
        classes = [self._class_of[a["category_id"]] for a in anns]
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        return Instances.from_masks(classes, masks, crowd)


def _decode(segmentation: Any, height: int, width: int, where: str) -> np.ndarray:
    """A COCO segmentation (polygons, RLE or compressed RLE) as an ``H x W`` bool mask."""
    from pycocotools import mask as mask_utils

    try:
        if isinstance(segmentation, list):  # polygons
            if not segmentation:
                return np.zeros((height, width), dtype=bool)
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        elif isinstance(segmentation, dict):
            rle = dict(segmentation)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
        else:
            raise TypeError(f"a segmentation must be polygons or RLE, not {type(segmentation).__name__}")
        with warnings.catch_warnings():  # pycocotools 2.0.x's numpy-2 copy= notice, not ours to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = mask_utils.decode(rle)
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise InputError(f"{where}: its segmentation cannot be decoded ({exc}); fix or remove it") from exc
    if decoded.shape[:2] != (height, width):
        raise InputError(f"{where}: its RLE is {decoded.shape[0]}x{decoded.shape[1]}, the image "
                         f"{height}x{width}; fix the annotation's size")
    return decoded.astype(bool).reshape(height, width)
