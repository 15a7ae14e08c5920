"""Preprocessing, defined once and recorded with the model.

Two steps: geometry (``resize`` or ``pad`` to a fixed size, done on uint8 so that cached
arrays stay small) and normalisation (``/255``, minus mean, over std, channels first). The
normalisation exists twice, in numpy for single images (``Preprocess.image``) and in torch
for batches (``normalize_batch``); both run the same float32 operations in the same order,
so they agree bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from segexport.data.source import IGNORE_INDEX, SegmentationSource
from segexport.errors import ConfigError, InputError
from segexport.progress import progress_bar

if TYPE_CHECKING:
    import torch

RESIZE_MODES = ("resize", "pad")


def _numbers(value: Any, count: int, what: str, *, positive: bool = False) -> tuple[float, ...]:
    """``value`` as a tuple of ``count`` finite floats, or a ConfigError naming ``what``."""
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != count or not all(math.isfinite(v) and (v > 0 or not positive) for v in numbers):
        kind = "positive numbers" if positive else "numbers"
        raise ConfigError(f"{what} must be {count} {kind}, got {value!r}")
    return numbers


def _size(value: Any) -> tuple[int, int]:
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ConfigError(f"size must be (height, width), two positive integers, got {value!r}")
    return int(value[0]), int(value[1])


@dataclass(frozen=True)
class Preprocess:
    """How images and masks become network inputs and targets.

    Attributes:
        size: (height, width) of every network input.
        mean, std: per RGB channel, in [0, 1] units (applied after dividing by 255).
        resize: ``resize`` scales images bilinearly and masks by nearest neighbour to
            ``size``; ``pad`` pads bottom and right to ``size`` (images with the mean colour,
            masks with 255) and refuses images larger than ``size``.

    Raises:
        ConfigError: on construction, for a malformed value.
    """

    size: tuple[int, int]
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resize: str = "resize"

    def __post_init__(self) -> None:
        # Frozen, so normalise through object.__setattr__: lists from JSON become tuples.
        object.__setattr__(self, "size", _size(self.size))
        object.__setattr__(self, "mean", _numbers(self.mean, 3, "mean"))
        object.__setattr__(self, "std", _numbers(self.std, 3, "std", positive=True))
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")

    @property
    def pad_colour(self) -> tuple[int, int, int]:
        """The mean colour as uint8 RGB: what ``pad`` fills images with."""
        r, g, b = (int(np.clip(round(m * 255.0), 0, 255)) for m in self.mean)
        return r, g, b

    def _check_fits(self, height: int, width: int) -> None:
        if self.resize == "pad" and (height > self.size[0] or width > self.size[1]):
            raise InputError(
                f"image of {height}x{width} is larger than the pad size {self.size[0]}x{self.size[1]}; "
                "use resize='resize' or a size at least as large as every image"
            )

    def resize_image(self, img: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> ``size`` x3 uint8 (bilinear resize, or pad with the mean colour).

        Raises:
            InputError: not HxWx3 uint8, or larger than ``size`` under ``pad``.
        """
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise InputError(f"image must be HxWx3 uint8 RGB, got {img.dtype} of shape {img.shape}")
        height, width = self.size
        if img.shape[:2] == (height, width):
            return img
        self._check_fits(*img.shape[:2])
        if self.resize == "resize":
            return np.asarray(Image.fromarray(img).resize((width, height), Image.Resampling.BILINEAR))
        out = np.empty((height, width, 3), dtype=np.uint8)
        out[...] = self.pad_colour
        out[: img.shape[0], : img.shape[1]] = img
        return out

    def resize_mask(self, m: np.ndarray) -> np.ndarray:
        """HxW uint8 -> ``size`` uint8 (nearest-neighbour resize, or pad with 255).

        Raises:
            InputError: not HxW uint8, or larger than ``size`` under ``pad``.
        """
        if m.dtype != np.uint8 or m.ndim != 2:
            raise InputError(f"mask must be HxW uint8 class indices, got {m.dtype} of shape {m.shape}")
        height, width = self.size
        if m.shape == (height, width):
            return m
        self._check_fits(*m.shape)
        if self.resize == "resize":
            return np.asarray(Image.fromarray(m).resize((width, height), Image.Resampling.NEAREST))
        out = np.full((height, width), IGNORE_INDEX, dtype=np.uint8)
        out[: m.shape[0], : m.shape[1]] = m
        return out

    def image(self, img: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB -> 3 x ``size`` float32, resized and normalised."""
        x = self.resize_image(img).astype(np.float32) / np.float32(255.0)
        x = (x - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def mask(self, m: np.ndarray) -> np.ndarray:
        """HxW uint8 class indices -> ``size`` int64 (255 stays ignore)."""
        return self.resize_mask(m).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for model.json and ONNX metadata."""
        d = asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocess:
        """Inverse of ``to_dict``.

        Raises:
            ConfigError: unknown keys, a missing ``size``, or malformed values.
        """
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"unknown preprocess keys {unknown}; the keys are {', '.join(known)}")
        if "size" not in d:
            raise ConfigError("preprocess needs a size: [height, width]")
        return cls(**d)


def load_arrays(
    source: SegmentationSource, preprocess: Preprocess, *, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Read a whole source at ``preprocess.size``, not normalised (uint8 keeps memory small).

    Args:
        source: samples to read; a sample without a mask gets a mask of 255 (ignore).
        preprocess: its ``size`` and ``resize`` decide the geometry.
        progress: show a progress bar (on a terminal).

    Returns:
        ``(images, masks)``: N x H x W x 3 uint8 and N x H x W uint8.

    Raises:
        InputError: a sample that cannot be read or does not fit, naming the sample.
    """
    count = len(source)
    height, width = preprocess.size
    images = np.empty((count, height, width, 3), dtype=np.uint8)
    masks = np.full((count, height, width), IGNORE_INDEX, dtype=np.uint8)
    with progress_bar(progress) as bar:
        task = bar.add_task(f"load {source.name}", total=count, info="")
        for i in range(count):
            _load_one(source, i, preprocess, images, masks)
            bar.advance(task)
    return images, masks


def _load_one(
    source: SegmentationSource, i: int, preprocess: Preprocess, images: np.ndarray, masks: np.ndarray
) -> None:
    sample = source[i]
    try:
        images[i] = preprocess.resize_image(sample.image)
        if sample.mask is not None:
            masks[i] = preprocess.resize_mask(sample.mask)
    except InputError as exc:
        raise InputError(f"{source.name}, sample {sample.name}: {exc}") from exc


def normalize_batch(images_uint8_nhwc: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float32 normalised, on the input's device.

    The same float32 operations as ``Preprocess.image``, so results match it exactly.

    Raises:
        InputError: the tensor is not N x H x W x 3 uint8.
    """
    import torch  # lazily: the data package itself does not need torch

    x = images_uint8_nhwc
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[3] != 3:
        raise InputError(f"images must be NxHxWx3 uint8, got {x.dtype} of shape {tuple(x.shape)}")
    mean = torch.tensor(preprocess.mean, dtype=torch.float32, device=x.device)
    std = torch.tensor(preprocess.std, dtype=torch.float32, device=x.device)
    y = x.to(torch.float32) / torch.tensor(255.0, dtype=torch.float32, device=x.device)
    y = (y - mean) / std
    return y.permute(0, 3, 1, 2).contiguous()


def recipe_preprocess(recipe: Any) -> Preprocess:
    """The :class:`Preprocess` a recipe (``segexport.recipe.Recipe``) asks for: its input size,
    and its ``mean``/``std`` where it sets them (ImageNet's otherwise)."""
    given = {k: v for k, v in (("mean", recipe.mean), ("std", recipe.std)) if v is not None}
    return Preprocess(size=tuple(recipe.input_size), **given)
