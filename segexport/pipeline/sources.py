"""What ``segexport export`` exports: an architecture name or a checkpoint folder, resolved to a model.

- ``ARCH``: the registered architecture; with ``checkpoint`` (a torchvision or segexport
  state-dict file) its weights, otherwise a seeded random initialisation (with a warning).
- ``MODULE:CALLABLE``: a user's network (``segexport.models.foreign``), with ``checkpoint`` (its
  own state-dict file) or seeded random weights.
- ``DIR``: a checkpoint folder written by ``segexport train``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from segexport.checkpoint import WEIGHTS, load_checkpoint
from segexport.data import (
    CITYSCAPES_CLASSES,
    SYNTHETIC_CLASSES,
    VOC_CLASSES,
    Preprocess,
)
from segexport.data.preprocess import recipe_preprocess
from segexport.errors import ConfigError, InputError
from segexport.models import SegmentationModel, build_model, get_entry
from segexport.models.foreign import folder_name, is_module_spec
from segexport.recipe import load_recipe, resolve_recipe

# Class names for a weights file, which records only the number of classes: torchvision's
# segmentation weights predict the 21 VOC classes; 19 outputs are Cityscapes' train ids.
_KNOWN_CLASS_SETS = {len(VOC_CLASSES): VOC_CLASSES, len(CITYSCAPES_CLASSES): CITYSCAPES_CLASSES}


@dataclass
class ExportSource:
    """A model ready to export and what to record about it.

    Attributes:
        model: in eval mode.
        arch: registered architecture name.
        classes: one name per output channel.
        preprocess: normalisation and the default input size.
        source: ``checkpoint:DIR``, ``weights:FILE`` or ``random-init:seed=N``.
        sha256: SHA-256 of the weights file ("" for a random init).
        default_out: the output folder when none is given.
        notes: warnings for the user (e.g. random weights).
    """

    model: SegmentationModel
    arch: str
    classes: tuple[str, ...]
    preprocess: Preprocess
    source: str
    sha256: str
    default_out: Path
    notes: list[str] = field(default_factory=list)


def _looks_like_path(text: str) -> bool:
    return os.sep in text or (os.altsep is not None and os.altsep in text) or text.startswith(".")


def _class_names(model: SegmentationModel) -> tuple[str, ...]:
    """Names for the model's outputs, counted by running it once on a small input."""
    side = 2 * model.input_divisor
    with torch.no_grad():
        count = int(model(torch.zeros(1, 3, side, side)).shape[1])
    return _KNOWN_CLASS_SETS.get(count, tuple(f"class_{i}" for i in range(count)))


def _from_checkpoint_dir(root: Path, size: str | None, checkpoint: Path | None) -> ExportSource:
    given = [name for name, value in (("--size", size), ("--checkpoint", checkpoint)) if value is not None]
    if given:
        raise ConfigError(
            f"{' and '.join(given)} apply to an architecture name, not to the checkpoint folder "
            f"{root}; drop {' and '.join(given)}"
        )
    from segexport.hashing import file_sha256

    model, config = load_checkpoint(root)
    return ExportSource(
        model=model, arch=config.arch, classes=tuple(config.classes), preprocess=config.preprocess,
        source=f"checkpoint:{root}", sha256=file_sha256(root / WEIGHTS), default_out=root.parent / "export",
    )


def _from_arch(arch: str, size: str | None, checkpoint: Path | None, seed: int,
               overrides: dict[str, Any] | None = None) -> ExportSource:
    recipe = resolve_recipe(load_recipe(arch), **(overrides or {}))
    preprocess = recipe_preprocess(recipe)
    out = Path("builds") / folder_name(arch) / "export"
    if checkpoint is not None and is_module_spec(arch):
        from segexport.hashing import file_sha256
        from segexport.weights import load_foreign_weights

        with torch.random.fork_rng():
            model = build_model(arch, **recipe.model_args(len(SYNTHETIC_CLASSES)))
        load_foreign_weights(model, checkpoint)
        return ExportSource(
            model=model, arch=arch, classes=_class_names(model), preprocess=preprocess,
            source=f"weights:{checkpoint}", sha256=file_sha256(checkpoint), default_out=out,
        )
    if checkpoint is not None:
        from segexport.hashing import file_sha256
        from segexport.weights import model_from_weights_file

        model = model_from_weights_file(arch, checkpoint, size=size or "paper")
        return ExportSource(
            model=model, arch=arch, classes=_class_names(model), preprocess=preprocess,
            source=f"weights:{checkpoint}", sha256=file_sha256(checkpoint), default_out=out,
        )
    args = recipe.model_args(len(SYNTHETIC_CLASSES))
    with torch.random.fork_rng():  # seeded init without resetting the caller's generator
        torch.manual_seed(seed)
        model = build_model(arch, **{**args, "size": size or recipe.size}).eval()
    note = (
        f"no --checkpoint: exporting {arch} with random weights (seed {seed}); "
        "its parity numbers say little about a trained model"
    )
    return ExportSource(
        model=model, arch=arch, classes=SYNTHETIC_CLASSES, preprocess=preprocess,
        source=f"random-init:seed={seed}", sha256="", default_out=out, notes=[note],
    )


def resolve_source(
    source: str, *, size: str | None = None, checkpoint: str | Path | None = None, seed: int = 0,
    overrides: dict[str, Any] | None = None,
) -> ExportSource:
    """Turn ``ARCH`` or ``CHECKPOINT_DIR`` into a model and its provenance.

    Args:
        source: a registered architecture name, a user's network (``MODULE:CALLABLE``) or a
            checkpoint folder.
        size: ``tiny`` or ``paper`` for an architecture name (default: its recipe's size,
            ``paper`` with ``checkpoint``).
        checkpoint: a state-dict file (torchvision or segexport) for an architecture name.
        seed: the random initialisation's seed when there is no checkpoint.
        overrides: recipe values for an architecture name or a user's network (``model_kwargs``,
            ``mean``, ``std``, ``input_divisor``).

    Raises:
        InputError: a missing folder or file.
        UnknownNameError: neither a folder nor a registered architecture.
        ConfigError: ``size``/``checkpoint`` given with a checkpoint folder.
        CheckpointError: weights that do not load.
    """
    path = Path(source)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if path.is_dir():
        if overrides:
            raise ConfigError(f"{', '.join(f'--{k.replace(chr(95), chr(45))}' for k in overrides)} apply to an "
                              f"architecture or --model, not to the checkpoint folder {path} (it records them)")
        return _from_checkpoint_dir(path, size, ckpt)
    if path.exists():
        raise InputError(f"{path}: a file, not a checkpoint folder; pass the folder, or ARCH --checkpoint {path}")
    if _looks_like_path(source) and not is_module_spec(source):
        raise InputError(f"{source}: checkpoint folder not found; pass an existing folder or an architecture name")
    get_entry(source)  # an unknown name fails here, with the nearest names
    if ckpt is not None and not ckpt.is_file():
        raise InputError(f"{ckpt}: checkpoint file not found")
    return _from_arch(source, size, ckpt, seed, overrides)
