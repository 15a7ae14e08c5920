"""Training augmentation: horizontal flip, then rescale and crop (or pad) back to the input size.

The jitter is drawn apart from its application, so that distributed processes can draw a whole
global batch and apply their own slice of it (see :mod:`segexport.train`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from segexport.data.source import IGNORE_INDEX


@dataclass(frozen=True)
class Jitter:
    """One sample's augmentation: horizontal flip, then rescale by ``scale`` and crop at ``(top, left)``."""

    flip: bool
    scale: float
    top: int
    left: int


def _scaled(side: int, scale: float) -> int:
    return max(1, round(side * scale))


def draw_jitter(count: int, size: tuple[int, int], scales: tuple[float, float], gen: torch.Generator) -> list[Jitter]:
    """Draw the augmentation of ``count`` samples of ``size`` (H, W) from ``gen``, sample by sample,
    with scales uniform in ``scales`` (the recipe's ``scale_min``, ``scale_max``).

    Distributed processes each draw the whole global batch from identically seeded generators,
    so sample ``i`` of a step gets the same jitter at any number of processes.
    """
    h, w = size
    out = []
    for _ in range(count):
        flip = float(torch.rand((), generator=gen)) < 0.5
        scale = scales[0] + (scales[1] - scales[0]) * float(torch.rand((), generator=gen))
        # the rescaled image is padded up to at least h x w before the crop
        top = int(torch.randint(0, max(_scaled(h, scale), h) - h + 1, (1,), generator=gen))
        left = int(torch.randint(0, max(_scaled(w, scale), w) - w + 1, (1,), generator=gen))
        out.append(Jitter(flip, scale, top, left))
    return out


def scale_crop(
    image: torch.Tensor, mask: torch.Tensor, scale: float, top: int, left: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescale one normalised image ``[C,H,W]`` and its mask ``[H,W]``, then crop (or pad
    with the mean colour and ignore) back to ``H x W`` at ``(top, left)``."""
    h, w = mask.shape
    nh, nw = _scaled(h, scale), _scaled(w, scale)
    img = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    msk = F.interpolate(mask[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
    ph, pw = max(0, h - nh), max(0, w - nw)
    if ph or pw:
        img = F.pad(img, (0, pw, 0, ph), value=0.0)  # 0 = mean colour after normalisation
        msk = F.pad(msk, (0, pw, 0, ph), value=IGNORE_INDEX)
    return img[:, top : top + h, left : left + w], msk[top : top + h, left : left + w]


def augment(
    images: torch.Tensor, masks: torch.Tensor, jitter: Sequence[Jitter]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip and scale-crop a normalised batch as ``jitter`` (one per sample, see :func:`draw_jitter`) says."""
    out_i, out_m = [], []
    for img, msk, j in zip(images, masks.long(), jitter):
        if j.flip:
            img, msk = img.flip(-1), msk.flip(-1)
        img, msk = scale_crop(img, msk, j.scale, j.top, j.left)
        out_i.append(img)
        out_m.append(msk)
    return torch.stack(out_i), torch.stack(out_m)
