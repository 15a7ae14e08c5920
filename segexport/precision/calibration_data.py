"""Calibration images: a folder of image files or a data set split, sampled with a seed and
preprocessed exactly as the model expects (resize to its input size, then mean/std).

``--calib`` takes a data set spec (``synthetic``, ``voc:PATH``, ``cityscapes:PATH``,
``folder:PATH``; real data sets calibrate on their train split, see ``open_dataset``) or a
plain folder of images (searched recursively; jpg, png, bmp, tif; grey, palette and RGBA
converted to RGB). Unreadable files are skipped and counted, never fatal unless none is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segexport.data import Preprocess, open_dataset
from segexport.data.imagefiles import IMAGE_EXTENSIONS, read_rgb
from segexport.data.spec import KNOWN_KINDS, describe_spec
from segexport.errors import ConfigError, InputError

DEFAULT_CALIB = "synthetic"
DEFAULT_CALIB_IMAGES = 256
_SHOWN_SKIPS = 5


@dataclass
class CalibrationImages:
    """Calibration images at the model's input size, uint8 until a batch is asked for.

    Attributes:
        images: ``N x H x W x 3`` uint8, resized (or padded) as the model's preprocessing says.
        preprocess: the model's preprocessing (normalisation happens in :meth:`batches`).
        source: the ``--calib`` value.
        requested: how many images were asked for.
        candidates: how many files or samples the source offered.
        seed: the sampling seed.
        names: file paths or sample names, in sampled order.
        skipped: ``"name: reason"`` for each unreadable file or sample that was passed over.
    """

    images: np.ndarray
    preprocess: Preprocess
    source: str
    requested: int
    candidates: int
    seed: int
    names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, batch: int) -> Iterator[np.ndarray]:
        """Normalised ``float32 [n, 3, H, W]`` batches of at most ``batch`` images, in order."""
        import torch

        from segexport.data import normalize_batch

        for start in range(0, len(self.images), batch):
            chunk = torch.from_numpy(self.images[start : start + batch])
            yield normalize_batch(chunk, self.preprocess).numpy()

    def report(self) -> dict[str, Any]:
        """What the summary records about the calibration set."""
        return {
            "source": self.source, "requested": self.requested, "used": len(self), "candidates": self.candidates,
            "seed": self.seed, "skipped": len(self.skipped), "skipped_examples": self.skipped[:_SHOWN_SKIPS],
            "input_size": list(self.preprocess.size),
        }

    def shortfall_note(self) -> str | None:
        """A one-line warning when fewer usable images than asked were found, else None."""
        if len(self) >= self.requested:
            return None
        unreadable = f", {len(self.skipped)} unreadable skipped" if self.skipped else ""
        return (f"calibration: {len(self)} usable images of {self.requested} asked from {self.source} "
                f"({self.candidates} found{unreadable}); 256-1024 representative images calibrate best")


def is_dataset_spec(text: str) -> bool:
    """True when ``text`` names a data set (``synthetic`` or ``KIND:PATH``) rather than a folder."""
    kind = text.partition(":")[0]
    return kind == "synthetic" or any(k.startswith(f"{kind}:") for k in KNOWN_KINDS)


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden files skipped), sorted.

    Raises:
        InputError: an empty folder, or one with no file of an image extension.
    """
    visible = (p for p in folder.rglob("*") if not any(part.startswith(".") for part in p.relative_to(folder).parts))
    files = sorted(p for p in visible if p.is_file())
    if not files:
        raise InputError(f"{folder}: calibration folder is empty; put 256-1024 representative images there")
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not images:
        raise InputError(
            f"{folder}: none of its {len(files)} files is an image ({', '.join(IMAGE_EXTENSIONS)}); "
            "pass a folder of images or a data set spec (synthetic, voc:PATH, ...)"
        )
    return images


def _sample(read: Any, count: int, order: np.ndarray, preprocess: Preprocess) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Read items in ``order`` until ``count`` are usable; ``read(i) -> (name, rgb)`` may raise InputError."""
    images: list[np.ndarray] = []
    names: list[str] = []
    skipped: list[str] = []
    for index in order:
        if len(images) == count:
            break
        try:
            name, rgb = read(int(index))
            images.append(preprocess.resize_image(rgb))
        except InputError as exc:
            skipped.append(str(exc).splitlines()[0])
            continue
        names.append(name)
    return images, names, skipped


def _from_folder(folder: Path, count: int, seed: int, preprocess: Preprocess) -> CalibrationImages:
    files = _image_files(folder)
    order = np.random.default_rng(seed).permutation(len(files))
    images, names, skipped = _sample(lambda i: (str(files[i]), read_rgb(files[i])), count, order, preprocess)
    if not images:
        raise InputError(f"{folder}: none of its {len(files)} image files could be read (e.g. {skipped[0]})")
    return CalibrationImages(np.stack(images), preprocess, str(folder), count, len(files), seed, names, skipped)


def _from_dataset(spec: str, count: int, seed: int, preprocess: Preprocess) -> CalibrationImages:
    describe_spec(spec)  # a malformed spec fails here, with the known kinds
    if spec == "synthetic":
        # The seed selects the rendered images; there is nothing to sample from.
        source = open_dataset(spec, "calib", size=preprocess.size, seed=seed, length=count)
        order = np.arange(len(source))
    else:
        source = open_dataset(spec, "calib", size=preprocess.size, seed=seed)
        order = np.random.default_rng(seed).permutation(len(source))

    def read(i: int) -> tuple[str, np.ndarray]:
        sample = source[i]
        return sample.name, sample.image

    images, names, skipped = _sample(read, count, order, preprocess)
    if not images:
        raise InputError(f"{spec}: no calibration sample could be read (e.g. {skipped[0]})")
    return CalibrationImages(np.stack(images), preprocess, spec, count, len(source), seed, names, skipped)


def load_calibration_images(
    source: str, preprocess: Preprocess, *, count: int = DEFAULT_CALIB_IMAGES, seed: int = 0
) -> CalibrationImages:
    """Sample ``count`` calibration images from ``source``, preprocessed by ``preprocess``.

    Args:
        source: a data set spec (``synthetic``, ``voc:PATH``, ...) or a folder of images.
        preprocess: the model's preprocessing (its size is the model's input size).
        count: images to use; fewer usable ones is a shortfall (see ``shortfall_note``).
        seed: selects the sample (a permutation of the files or samples; synthetic's images).

    Raises:
        ConfigError: ``count`` below 1.
        InputError: a missing source, an empty folder or one without images, nothing readable.
        UnknownNameError: an unknown data set kind.
    """
    if count < 1:
        raise ConfigError(f"--calib-images must be at least 1, got {count}")
    if is_dataset_spec(source):
        return _from_dataset(source, count, seed, preprocess)
    folder = Path(source)
    if not folder.is_dir():
        state = "is a file" if folder.exists() else "does not exist"
        raise InputError(f"--calib {source}: {state}; pass a folder of images or a data set spec ({', '.join(KNOWN_KINDS)})")
    return _from_folder(folder, count, seed, preprocess)
