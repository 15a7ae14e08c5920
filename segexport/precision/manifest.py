"""The manifest of the built-in calibration set (``calibration/synthetic.json``).

The set is not stored: it is rendered on demand, bit for bit, from the generator and seed
recorded here. The manifest says what it contains (how many images, their size, how often
each class covers a pixel) and carries a SHA-256 over the rendered images and masks, so a
change of the generator shows up as a changed manifest. Regenerate it with::

    python -m segexport.precision.manifest            # writes calibration/synthetic.json
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from segexport.data import DEFAULT_SPLIT_SIZES, SYNTHETIC_CLASSES, open_dataset
from segexport.data.synthetic import SPLIT_IDS
from segexport.fsutil import write_json

MANIFEST_PATH = Path("calibration") / "synthetic.json"
MANIFEST_SIZE = (128, 128)  # the recipes' input size; the set renders at any model's size


def synthetic_manifest(*, count: int | None = None, size: tuple[int, int] = MANIFEST_SIZE, seed: int = 0) -> dict[str, Any]:
    """Describe the ``synthetic`` calib split: provenance, class pixel frequencies, content hash.

    Args:
        count: images (default: the split's default size, 256).
        size: (height, width) they are rendered at.
        seed: the data seed (``--seed``; 0 is what ``--calib synthetic`` uses by default).
    """
    count = DEFAULT_SPLIT_SIZES["calib"] if count is None else count
    source = open_dataset("synthetic", "calib", size=size, seed=seed, length=count)
    pixels = np.zeros(len(SYNTHETIC_CLASSES), dtype=np.int64)
    present = np.zeros(len(SYNTHETIC_CLASSES), dtype=np.int64)
    digest = hashlib.sha256()
    for i in range(count):
        sample = source[i]
        counts = np.bincount(sample.mask.ravel(), minlength=len(SYNTHETIC_CLASSES))
        pixels += counts
        present += counts > 0
        digest.update(sample.image.tobytes())
        digest.update(sample.mask.tobytes())
    total = int(pixels.sum())
    return {
        "name": "synthetic",
        "spec": "synthetic",
        "generator": "segexport.data.synthetic.SyntheticDataset",
        "rendering": f"image i is render_scene(numpy.random.default_rng([seed, {SPLIT_IDS['calib']}, i]), height, width)",
        "split": "calib",
        "seed": seed,
        "count": count,
        "size": list(size),
        "classes": list(SYNTHETIC_CLASSES),
        "class_pixel_frequency": {c: round(int(n) / total, 6) for c, n in zip(SYNTHETIC_CLASSES, pixels, strict=True)},
        "class_image_frequency": {c: round(int(n) / count, 6) for c, n in zip(SYNTHETIC_CLASSES, present, strict=True)},
        "sha256": digest.hexdigest(),
        "disjoint_from": ["train", "val"],
    }


def write_synthetic_manifest(path: str | Path = MANIFEST_PATH, **options: Any) -> dict[str, Any]:
    """Compute :func:`synthetic_manifest` and write it to ``path`` (atomically); return it."""
    manifest = synthetic_manifest(**options)
    write_json(path, manifest)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the manifest of the built-in calibration set.")
    parser.add_argument("--out", type=Path, default=MANIFEST_PATH)
    args = parser.parse_args()
    manifest = write_synthetic_manifest(args.out)
    height, width = manifest["size"]
    print(f"{args.out}: {manifest['count']} images at {height}x{width}, sha256 {manifest['sha256'][:12]}")


if __name__ == "__main__":
    main()
