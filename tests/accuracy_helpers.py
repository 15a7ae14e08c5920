"""Data on which a broken budget is sure, whatever weights this CPU trained.

A budget is broken only by a positive mIoU drop. On data labelled with ground truth a trained
model's INT8 or FP16 variant may score better than the model itself (it did on an AMD EPYC),
so no budget >= 0 is sure to break there. On scenes labelled with the model's own FP32
predictions the model scores mIoU 1: no variant can gain, and every pixel a variant changes is
a drop. Tests measure that drop first and ask for a budget below it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def scenes_labelled_by(checkpoint: Path, root: Path, count: int = 8) -> Path:
    """A ``folder:`` data set at ``root``: ``count`` synthetic val scenes (seed 0) whose masks are
    ``checkpoint``'s FP32 PyTorch predictions, and its classes.txt. Returns ``root``."""
    from segexport.checkpoint import load_checkpoint
    from segexport.data import load_arrays, open_dataset
    from segexport.data.preprocess import normalize_batch

    model, config = load_checkpoint(checkpoint)
    source = open_dataset("synthetic", "val", size=config.preprocess.size, seed=0, length=count)
    images, _ = load_arrays(source, config.preprocess)
    with torch.no_grad():
        labels = model(normalize_batch(torch.from_numpy(images), config.preprocess)).argmax(1).numpy()
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i, (image, mask) in enumerate(zip(images, labels.astype(np.uint8))):
        Image.fromarray(image).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:03d}.png")
    (root / "classes.txt").write_text("\n".join(config.classes) + "\n")
    return root
