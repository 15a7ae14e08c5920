"""Data set specs: the one-string names recipes and the CLI use for data.

``synthetic`` is the built-in data set; ``voc:PATH``, ``cityscapes:PATH``, ``folder:PATH`` and
``coco:PATH`` (COCO-format instances) read local folders.
"""

from __future__ import annotations

from collections.abc import Callable

from segexport.data.coco import CocoDataset
from segexport.data.readers import CityscapesDataset, FolderDataset, VOCDataset
from segexport.data.source import FirstItems, SegmentationSource
from segexport.data.synthetic import DEFAULT_SPLIT_SIZES, SyntheticDataset
from segexport.errors import ConfigError, UnknownNameError

_READERS: dict[str, Callable[[str, str], SegmentationSource]] = {
    "voc": VOCDataset,
    "cityscapes": CityscapesDataset,
    "folder": FolderDataset,
    "coco": CocoDataset,
}
KNOWN_KINDS = ("synthetic", *(f"{kind}:PATH" for kind in _READERS))


def _parse_spec(spec: str) -> tuple[str, str]:
    """``(kind, path)``, path ``""`` for ``synthetic``; errors as in ``describe_spec``."""
    kind, sep, path = spec.partition(":")
    if kind == "synthetic":
        if sep:
            raise ConfigError(f"data set {spec!r}: synthetic takes no path; write just 'synthetic'")
        return kind, ""
    if kind not in _READERS:
        raise UnknownNameError(f"unknown data set {spec!r}; the known kinds are {', '.join(KNOWN_KINDS)}")
    if not path:
        raise ConfigError(f"data set {spec!r} needs a folder: write {kind}:PATH")
    return kind, path


def describe_spec(spec: str) -> dict[str, str | None]:
    """Split a spec into ``{"kind": ..., "path": ...}`` (path ``None`` for ``synthetic``).

    Raises:
        UnknownNameError: an unknown kind, listing the known ones.
        ConfigError: ``synthetic`` with a path, or a folder kind without one.
    """
    kind, path = _parse_spec(spec)
    return {"kind": kind, "path": path or None}


def open_dataset(
    spec: str,
    split: str,
    *,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    length: int | None = None,
    length_option: str | None = None,
) -> SegmentationSource:
    """Open one split of the data set named by ``spec``.

    Args:
        spec: ``synthetic``, ``voc:PATH``, ``cityscapes:PATH``, ``folder:PATH`` or ``coco:PATH``.
        split: ``train``, ``val`` or ``calib``; real data sets calibrate on ``train``
            (a folder data set uses its own ``calib/`` when it has one).
        size: image size of ``synthetic`` (real data keep their size; ``Preprocess`` resizes).
        seed: selects the ``synthetic`` images.
        length: number of samples; ``synthetic`` defaults to ``DEFAULT_SPLIT_SIZES[split]``,
            real data sets to all, and otherwise take their first ``length`` samples.
        length_option: the command-line option that sets ``length`` (e.g. ``--images``),
            named with the split's actual size when the split is shorter.

    Raises:
        UnknownNameError: an unknown kind.
        ConfigError: a malformed spec, split or length.
        InputError: a real data set's folder is missing or malformed.
    """
    kind, path = _parse_spec(spec)
    if kind == "synthetic":
        if split not in DEFAULT_SPLIT_SIZES:
            raise ConfigError(f"unknown split {split!r}; use one of {', '.join(DEFAULT_SPLIT_SIZES)}")
        count = DEFAULT_SPLIT_SIZES[split] if length is None else length
        return SyntheticDataset(split, count, size=size, seed=seed)
    if split == "calib" and kind != "folder":
        split = "train"
    source = _READERS[kind](path, split)
    if length is not None and length > len(source) and length_option is not None:
        raise ConfigError(f"{spec}: its {split} split has {len(source)} images, fewer than the {length} asked for; "
                          f"pass {length_option} {len(source)} or fewer (or more data)")
    return source if length is None else FirstItems(source, length)
