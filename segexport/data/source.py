"""What every data set looks like to the rest of segexport: a sized, indexable source of samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from segexport.errors import ConfigError

if TYPE_CHECKING:
    from segexport.data.instances import Instances

IGNORE_INDEX = 255
"""Mask value for pixels that count for nothing (boundaries, void, padding)."""


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; samples compare by identity
class Sample:
    """One image with its mask.

    Attributes:
        image: HxWx3 uint8 RGB.
        mask: HxW uint8 class indices, ``IGNORE_INDEX`` where unlabelled; ``None`` when the
            source has no labels.
        name: identifies the sample within its source (a file stem, or ``train_000012``).
        instances: the image's objects (:class:`segexport.data.instances.Instances`) where the
            source has instance labels (``synthetic``, ``coco:PATH``), else ``None``.
    """

    image: np.ndarray
    mask: np.ndarray | None
    name: str
    instances: Instances | None = None


@runtime_checkable
class SegmentationSource(Protocol):
    """A data set split: ``len(source)`` samples, ``source[i]`` reads (or renders) sample ``i``.

    ``classes`` names the class of each mask index; ``name`` says which data set and split
    this is, for messages and reports (e.g. ``synthetic/val``).
    """

    classes: tuple[str, ...]
    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


def check_index(index: int, length: int) -> int:
    """Return ``index`` as a non-negative position, Python style (negative counts from the end).

    Raises:
        IndexError: outside ``[-length, length)``; lets ``for sample in source`` stop.
    """
    position = index + length if index < 0 else index
    if not 0 <= position < length:
        raise IndexError(f"index {index} out of range for {length} samples")
    return position


class FirstItems:
    """The first ``length`` samples of another source (a view; nothing is read up front)."""

    def __init__(self, source: SegmentationSource, length: int) -> None:
        """Raises:
        ConfigError: ``length`` is negative or more than the source has.
        """
        if length < 0 or length > len(source):
            raise ConfigError(
                f"length {length} is not available from {source.name}, which has "
                f"{len(source)} samples; ask for at most {len(source)}"
            )
        self._source = source
        self._length = length
        self.classes = source.classes
        self.name = source.name

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Sample:
        return self._source[check_index(index, self._length)]
