"""Real data sets read from local folders (never downloaded).

Every reader lists its files when it is created (so a wrong folder fails at once) and reads
an image and its mask only when that sample is asked for (so a broken file fails when it is
read, naming the file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segexport.data.imagefiles import (
    IMAGE_EXTENSIONS,
    MASK_EXTENSIONS,
    MAX_CLASSES,
    PathLike,
    check_mask_values,
    list_files_by_stem,
    preview,
    read_mask_values,
    read_rgb,
    require_dir,
)
from segexport.data.source import IGNORE_INDEX, Sample, check_index
from segexport.errors import InputError

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip


@dataclass(frozen=True)
class _Pair:
    name: str
    image: Path
    mask: Path


class _PairedFiles:
    """Shared body of the readers: a list of (image file, mask file) read on access."""

    def __init__(self, pairs: list[_Pair], classes: tuple[str, ...], name: str, mask_fix: str) -> None:
        self._pairs = pairs
        self._mask_fix = mask_fix
        self.classes = classes
        self.name = name

    def __len__(self) -> int:
        return len(self._pairs)

    def __getitem__(self, index: int) -> Sample:
        """Read sample ``index``.

        Raises:
            InputError: an unreadable image or mask, a mask whose size differs from its
                image, or mask values that are not class indices.
        """
        pair = self._pairs[check_index(index, len(self._pairs))]
        image = read_rgb(pair.image)
        mask = check_mask_values(read_mask_values(pair.mask), len(self.classes), pair.mask, self._mask_fix)
        if mask.shape != image.shape[:2]:
            raise InputError(
                f"{pair.mask}: mask is {mask.shape[0]}x{mask.shape[1]} but its image {pair.image} "
                f"is {image.shape[0]}x{image.shape[1]}; a mask must match its image pixel for pixel"
            )
        return Sample(image=image, mask=mask, name=pair.name)


def _require_nonempty(pairs: list[_Pair], where: Path, expected: str) -> list[_Pair]:
    if not pairs:
        raise InputError(f"{where}: no samples found; expected {expected}")
    return pairs


class VOCDataset(_PairedFiles):
    """PASCAL VOC 2012 segmentation, from a VOCdevkit layout.

    Args:
        root: the ``VOC2012`` folder, or a ``VOCdevkit`` folder containing it.
        split: a list in ``ImageSets/Segmentation/`` (``train``, ``val``, ``trainval``).

    Raises:
        InputError: a missing folder or split list, or listed files that do not exist.
    """

    def __init__(self, root: PathLike, split: str) -> None:
        base = require_dir(root, "a VOCdevkit or VOC2012 folder")
        if not (base / "JPEGImages").is_dir() and (base / "VOC2012").is_dir():
            base = base / "VOC2012"
        images = require_dir(base / "JPEGImages", "the VOC images (*.jpg)")
        masks = require_dir(base / "SegmentationClass", "the VOC class masks (palette *.png)")
        lists = require_dir(base / "ImageSets" / "Segmentation", "the split lists (train.txt, val.txt)")
        split_file = lists / f"{split}.txt"
        if not split_file.is_file():
            known = ", ".join(sorted(p.stem for p in lists.glob("*.txt"))) or "none"
            raise InputError(f"{split_file}: no such split list; the splits here are {known}")
        ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        pairs = [_Pair(i, images / f"{i}.jpg", masks / f"{i}.png") for i in ids]
        missing = [p.name for p in pairs if not (p.image.is_file() and p.mask.is_file())]
        if missing:
            raise InputError(
                f"{split_file}: {preview(missing)} listed but the .jpg in {images} or the .png in "
                f"{masks} is missing; restore the files or remove them from the list"
            )
        super().__init__(
            _require_nonempty(pairs, split_file, "one image id per line"),
            VOC_CLASSES,
            f"voc/{split}",
            "VOC masks are palette PNGs of indices 0-20 with 255 on boundaries",
        )


class CityscapesDataset(_PairedFiles):
    """Cityscapes fine annotations, as the 19 train-id classes (void = 255).

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``train`` or ``val`` (a sub-folder of both).

    Raises:
        InputError: a missing folder, no images, or images without a ``labelTrainIds`` mask.
    """

    IMAGE_SUFFIX = "_leftImg8bit.png"
    MASK_SUFFIX = "_gtFine_labelTrainIds.png"

    def __init__(self, root: PathLike, split: str) -> None:
        base = require_dir(root, "a Cityscapes folder with leftImg8bit/ and gtFine/")
        images = require_dir(base / "leftImg8bit" / split, f"one folder per city of *{self.IMAGE_SUFFIX}")
        masks = require_dir(base / "gtFine" / split, f"one folder per city of *{self.MASK_SUFFIX}")
        pairs: list[_Pair] = []
        for image in sorted(images.glob(f"*/*{self.IMAGE_SUFFIX}")):
            stem = image.name[: -len(self.IMAGE_SUFFIX)]
            pairs.append(_Pair(stem, image, masks / image.parent.name / f"{stem}{self.MASK_SUFFIX}"))
        missing = [p.name for p in pairs if not p.mask.is_file()]
        if missing:
            raise InputError(
                f"{masks}: no *{self.MASK_SUFFIX} for {preview(missing)}; generate them with "
                "cityscapesscripts (csCreateTrainIdLabelImgs)"
            )
        super().__init__(
            _require_nonempty(pairs, images, f"city folders of *{self.IMAGE_SUFFIX}"),
            CITYSCAPES_CLASSES,
            f"cityscapes/{split}",
            "use the labelTrainIds masks (0-18, 255 for void), not labelIds",
        )


class FolderDataset(_PairedFiles):
    """Any data set laid out as ``images/`` and ``masks/`` with matching file stems.

    Images may be jpg, jpeg, png, bmp or tif; masks are PNGs of class indices (255 = ignore).
    Class names come from ``classes.txt`` (one per line) next to ``images/`` or in ``root``;
    without it there are ``max mask value + 1`` classes named ``class_0``, ``class_1``, ...

    Args:
        root: the folder holding ``images/`` and ``masks/``, or one sub-folder per split
            (``root/train/images``, ...). ``calib`` falls back to ``train``; a folder without
            split sub-folders serves every split.
        split: which split sub-folder to read; ``None`` reads ``root`` itself.

    Raises:
        InputError: missing folders, images without masks or masks without images, files of
            other types in those folders, or a malformed ``classes.txt``.
    """

    def __init__(self, root: PathLike, split: str | None = None) -> None:
        top = require_dir(root, "a data set folder with images/ and masks/")
        base = _folder_split(top, split)
        image_dir = require_dir(base / "images", "the input images")
        mask_dir = require_dir(base / "masks", "one mask PNG per image, named like the image")
        images = list_files_by_stem(image_dir, IMAGE_EXTENSIONS, "image")
        masks = list_files_by_stem(mask_dir, MASK_EXTENSIONS, "mask")
        for have, lack, kind in ((images, masks, "masks"), (masks, images, "images")):
            unmatched = sorted(set(have) - set(lack))
            if unmatched:
                raise InputError(
                    f"{base}: no {kind} for {preview(unmatched)}; every image needs a mask with the "
                    "same file stem in masks/ and every mask an image in images/"
                )
        pairs = [_Pair(stem, images[stem], masks[stem]) for stem in sorted(images)]
        _require_nonempty(pairs, base / "images", "image files with masks of the same stem")
        super().__init__(
            pairs,
            _read_classes(base, top) or _classes_from_masks(pairs),
            "folder" if split is None else f"folder/{split}",
            "fix the mask or list the classes in classes.txt",
        )


def _folder_split(top: Path, split: str | None) -> Path:
    """The folder holding ``images/`` for ``split`` (see ``FolderDataset``)."""
    if split is None:
        return top
    for candidate in (split, "train") if split == "calib" else (split,):
        if (top / candidate / "images").is_dir():
            return top / candidate
    if (top / "images").is_dir():
        return top
    raise InputError(
        f"{top}: neither {split}/images/ nor images/ exists; put the {split} split in "
        f"{top / split / 'images'} and {top / split / 'masks'} (or images/ and masks/ for all splits)"
    )


def _read_classes(base: Path, top: Path) -> tuple[str, ...] | None:
    """Class names from ``classes.txt`` in ``base`` or ``top``, or ``None`` when there is none."""
    path = next((p for p in (base / "classes.txt", top / "classes.txt") if p.is_file()), None)
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable UTF-8 text file ({exc})") from exc
    names = [line.strip() for line in text.splitlines() if line.strip()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    problem = None
    if not names:
        problem = "is empty"
    elif duplicates:
        problem = f"repeats {preview(duplicates)}"
    elif len(names) > MAX_CLASSES:
        problem = f"lists {len(names)} classes, more than the {MAX_CLASSES} a uint8 mask can hold"
    if problem:
        raise InputError(f"{path}: {problem}; list each class name once, one per line, in index order")
    return tuple(names)


def _classes_from_masks(pairs: list[_Pair]) -> tuple[str, ...]:
    """``class_0 .. class_N`` where N is the largest mask value other than 255 (reads every mask)."""
    largest = 0
    for pair in pairs:
        values = read_mask_values(pair.mask)
        values = check_mask_values(values, MAX_CLASSES, pair.mask, "masks hold 8-bit class indices")
        labelled = values[values != IGNORE_INDEX]
        if labelled.size:
            largest = max(largest, int(labelled.max()))
    return tuple(f"class_{i}" for i in range(largest + 1))
