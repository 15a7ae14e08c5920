"""Reading image and mask files, with errors that name the file and the fix."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from segexport.data.source import IGNORE_INDEX
from segexport.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MASK_EXTENSIONS = (".png",)
MAX_CLASSES = IGNORE_INDEX  # masks are uint8 and 255 means ignore
_SHOWN = 5  # how many offending names an error message lists

PathLike = str | os.PathLike[str]


def preview(names: list[str]) -> str:
    """``a, b, c`` or ``a, b, c, ... (12 in all)`` for error messages."""
    shown = ", ".join(names[:_SHOWN])
    return shown if len(names) <= _SHOWN else f"{shown}, ... ({len(names)} in all)"


def require_dir(path: PathLike, expected: str) -> Path:
    """Return ``path`` as a ``Path`` if it is a folder.

    Raises:
        InputError: it is missing or not a folder; the message says what belongs there.
    """
    folder = Path(path)
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise InputError(f"{folder}: {state}; expected {expected} there")
    return folder


def _open(path: Path, what: str) -> Image.Image:
    try:
        with warnings.catch_warnings():  # Pillow only warns up to twice its pixel limit: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{path}: too many pixels to decode safely (more than {Image.MAX_IMAGE_PIXELS}); "
                         f"pass a smaller {what}") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: not a readable {what} ({exc})") from exc
    return image


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (grey, palette, alpha and 16-bit converted).

    Raises:
        InputError: the file is missing or not an image PIL can decode.
    """
    image = _open(path, "image")
    if image.mode.startswith("I"):  # 16-bit greyscale: keep the top 8 bits
        grey = np.asarray(image).astype(np.int64)
        image = Image.fromarray((grey >> 8 if grey.max() > 255 else grey).clip(0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def read_mask_values(path: Path) -> np.ndarray:
    """Read a mask file as an HxW integer array, values unchecked.

    Palette PNGs give their indices (not colours); greyscale and 16-bit PNGs their values.

    Raises:
        InputError: unreadable, or a colour image whose channels differ (a colour-coded mask).
    """
    image = _open(path, "mask")
    if image.mode in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
        return np.asarray(image).astype(np.int64 if image.mode.startswith("I") else np.uint8)
    if image.mode in ("LA", "RGB", "RGBA"):
        channels = np.asarray(image)
        grey = channels[..., 0]
        if image.mode == "LA" or all(np.array_equal(grey, channels[..., c]) for c in (1, 2)):
            return grey.copy()
    raise InputError(
        f"{path}: mask is a {image.mode} image with colours; masks must hold class indices "
        "(a palette or greyscale PNG whose pixel values are 0, 1, 2, ... and 255 for ignore)"
    )


def check_mask_values(values: np.ndarray, num_classes: int, path: Path, fix: str) -> np.ndarray:
    """Return the mask as uint8 after checking every value is a class index or 255.

    Args:
        values: the mask as read.
        num_classes: valid indices are ``0 .. num_classes - 1``.
        path: named in the error.
        fix: the last clause of the error, telling the user what to change.

    Raises:
        InputError: naming the file and the offending values.
    """
    if values.dtype == np.uint8:
        counts = np.bincount(values.ravel(), minlength=256)
        counts[IGNORE_INDEX] = 0
        bad = np.flatnonzero(counts[num_classes:]) + num_classes
    else:
        found = np.unique(values)
        bad = found[((found < 0) | (found >= num_classes)) & (found != IGNORE_INDEX)]
    if bad.size:
        listed = [int(v) for v in bad[:8]] if bad.size <= 8 else [*map(int, bad[:8]), "..."]
        raise InputError(
            f"{path}: mask values {listed} outside the {num_classes} classes "
            f"(0-{num_classes - 1}) and ignore {IGNORE_INDEX}; {fix}"
        )
    return values.astype(np.uint8, copy=False)


def list_files_by_stem(folder: Path, extensions: tuple[str, ...], what: str) -> dict[str, Path]:
    """Map file stem -> path for the files in ``folder`` (hidden files skipped).

    Raises:
        InputError: a file with an extension other than ``extensions`` (so that nothing is
            silently left out), or two files sharing a stem.
    """
    found: dict[str, Path] = {}
    foreign: list[str] = []
    clashes: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.suffix.lower() not in extensions or not path.is_file():
            foreign.append(path.name)
        elif path.stem in found:
            clashes.append(f"{found[path.stem].name}/{path.name}")
        else:
            found[path.stem] = path
    if foreign:
        raise InputError(
            f"{folder}: {preview(foreign)} not {what} files ({', '.join(extensions)}); "
            "move them out of this folder"
        )
    if clashes:
        raise InputError(f"{folder}: several files share a name: {preview(clashes)}; keep one of each")
    return found
