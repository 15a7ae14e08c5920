"""The shared shell of every architecture: backbone -> classifier -> logits at input size.

Attribute names follow torchvision's segmentation models (``backbone``, ``classifier``,
``aux_classifier``) so their state dicts line up key for key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segexport.errors import ConfigError
from segexport.nn.backbone import Backbone


class SegmentationModel(nn.Module):
    """Backbone features -> classifier -> (bilinear resize to input size).

    Args:
        backbone: a :class:`Backbone` returning one feature map per stage.
        classifier: module taking the feature list and returning class logits.
        aux_classifier: optional module taking the feature list, used only in training
            (``forward_train``); it never runs in ``forward`` and is never exported.
        upsample_to_input: resize logits bilinearly to the input size (False for heads that
            upsample themselves, e.g. FCN's transposed convolutions).
        input_divisor: input height and width must be multiples of this.

    A network that needs each side larger than one ``input_divisor`` (a valid convolution on a
    downsampled map, as DeconvNet's fc6) says so with a ``min_input_side`` attribute.
    """

    def __init__(
        self,
        backbone: Backbone,
        classifier: nn.Module,
        *,
        aux_classifier: nn.Module | None = None,
        upsample_to_input: bool = True,
        input_divisor: int = 32,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier
        self.upsample_to_input = upsample_to_input
        self.input_divisor = input_divisor

    def _resize(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not self.upsample_to_input:
            return logits
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[N, C, H, W]`` for images ``[N, 3, H, W]``."""
        return self._resize(self.classifier(self.backbone(x)), x)

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and auxiliary logits (None without an auxiliary head), both at input size."""
        feats = self.backbone(x)
        out = self._resize(self.classifier(feats), x)
        if self.aux_classifier is None:
            return out, None
        return out, self._resize(self.aux_classifier(feats), x)


def nearest_valid_sizes(value: int, divisor: int) -> tuple[int, int]:
    """The multiples of ``divisor`` just below and above ``value`` (the lower one at least ``divisor``)."""
    below = max(divisor, (value // divisor) * divisor)
    above = -(-value // divisor) * divisor
    return below, max(above, divisor)


def check_input_size(model: SegmentationModel, height: int, width: int) -> None:
    """Raise a ConfigError naming the nearest valid sizes when ``height x width`` does not fit.

    Raises:
        ConfigError: a side that is not a positive multiple of ``model.input_divisor``, or one
            below the model's ``min_input_side`` (default: one ``input_divisor``).
    """
    if hasattr(model, "check_size"):  # a user's network: tried at that size (models.foreign)
        model.check_size(height, width)
        return
    d = model.input_divisor
    bad = [(n, v) for n, v in (("height", height), ("width", width)) if v <= 0 or v % d]
    if not bad:
        low = getattr(model, "min_input_side", d)
        if min(height, width) < low:
            raise ConfigError(f"input size {height}x{width} is too small for this model: each side must be at least "
                              f"{low}; use {max(height, low)}x{max(width, low)}")
        return
    hb, ha = nearest_valid_sizes(height, d)
    wb, wa = nearest_valid_sizes(width, d)
    options = sorted({(hb, wb), (ha, wa)})
    sizes = " or ".join(f"{h}x{w}" for h, w in options)
    raise ConfigError(
        f"input size {height}x{width} is not a multiple of {d} for this model; use {sizes}"
    )


def choose_backbone(
    arch: str, size: str, backbone: str | None, paper: tuple[str, ...], tiny: tuple[str, ...]
) -> str:
    """The backbone for ``size``: ``backbone`` if it belongs to that size, else its first choice.

    Raises:
        ConfigError: ``backbone`` belongs to the other size or to no size of ``arch``.
    """
    allowed = paper if size == "paper" else tiny
    name = backbone or allowed[0]
    if name not in allowed:
        raise ConfigError(f"{arch} at size {size} takes backbone {', '.join(allowed)}, not {name!r}")
    return name
