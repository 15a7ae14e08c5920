"""Segmentation networks written the way users write them, not registered with segexport.

Each ``make_*`` callable builds one style found in the wild; tests name them as
``foreign_nets:make_*`` (``tests/`` is on ``sys.path`` under pytest, and on ``PYTHONPATH`` for the
CLI subprocesses). All take ``num_classes`` and stay tiny: a few thousand parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Encoder(nn.Module):
    """Three stages at strides 2, 4 and 8."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(_block(3, width), nn.MaxPool2d(2))
        self.layer1 = nn.Sequential(_block(width, 2 * width), nn.MaxPool2d(2))
        self.layer2 = nn.Sequential(_block(2 * width, 4 * width), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.stem(x)
        b = self.layer1(a)
        return [a, b, self.layer2(b)]


class DictAuxNet(nn.Module):
    """torchvision's segmentation layout: ``backbone``, ``classifier``, ``aux_classifier``, and a
    dict output ``{"out", "aux"}`` at input size."""

    def __init__(self, num_classes: int = 8, width: int = 8) -> None:
        super().__init__()
        self.backbone = _Encoder(width)
        self.classifier = nn.Sequential(_block(4 * width, 4 * width), nn.Conv2d(4 * width, num_classes, 1))
        self.aux_classifier = nn.Conv2d(2 * width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _, mid, top = self.backbone(x)
        size = x.shape[-2:]
        return {"out": F.interpolate(self.classifier(top), size=size, mode="bilinear", align_corners=False),
                "aux": F.interpolate(self.aux_classifier(mid), size=size, mode="bilinear", align_corners=False)}


class TupleNet(nn.Module):
    """An auxiliary head returned as the second item of a tuple; logits at stride 4 (segexport
    resizes them)."""

    def __init__(self, num_classes: int = 8, width: int = 8) -> None:
        super().__init__()
        self.encoder = _Encoder(width)
        self.head = nn.Conv2d(2 * width + 4 * width, num_classes, 1)
        self.aux = nn.Conv2d(4 * width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, mid, top = self.encoder(x)
        up = F.interpolate(top, size=mid.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([mid, up], 1)), self.aux(top)


class LearnedUNet(nn.Module):
    """U-Net: learned ``ConvTranspose2d`` on one skip, ``F.interpolate(scale_factor=2)`` on the other."""

    def __init__(self, num_classes: int = 8, width: int = 8) -> None:
        super().__init__()
        self.down1, self.down2 = _block(3, width), _block(width, 2 * width)
        self.bottom = _block(2 * width, 4 * width)
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.dec2 = _block(4 * width, 2 * width)
        self.dec1 = _block(3 * width, width)
        self.out = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.down1(x)
        b = self.down2(F.max_pool2d(a, 2))
        c = self.bottom(F.max_pool2d(b, 2))
        d = self.dec2(torch.cat([self.up2(c), b], 1))
        e = self.dec1(torch.cat([F.interpolate(d, scale_factor=2.0, mode="bilinear", align_corners=False), a], 1))
        return self.out(e)


class FunctionalSegNet(nn.Module):
    """SegNet's encoder/decoder with ``F.max_pool2d(..., return_indices=True)`` and ``F.max_unpool2d``."""

    def __init__(self, num_classes: int = 8, width: int = 8) -> None:
        super().__init__()
        self.enc1, self.enc2 = _block(3, width), _block(width, 2 * width)
        self.dec2, self.dec1 = _block(2 * width, width), _block(width, width)
        self.out = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, i1 = F.max_pool2d(self.enc1(x), 2, 2, return_indices=True)
        b, i2 = F.max_pool2d(self.enc2(a), 2, 2, return_indices=True)
        c = self.dec2(F.max_unpool2d(b, i2, 2, 2, output_size=a.shape[-2:]))
        return self.out(self.dec1(F.max_unpool2d(c, i1, 2, 2)))


class OddBinsPSP(nn.Module):
    """A PSP head whose ``nn.AdaptiveAvgPool2d`` bins (1, 3, 5) do not divide the 8x8 map at 64x64."""

    def __init__(self, num_classes: int = 8, width: int = 8, bins: tuple[int, ...] = (1, 3, 5)) -> None:
        super().__init__()
        self.encoder = _Encoder(width)
        c = 4 * width
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(c, width, 1, bias=False), nn.ReLU()) for b in bins)
        self.fuse = nn.Sequential(_block(c + width * len(bins), c), nn.Conv2d(c, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = self.encoder(x)[-1]
        size = top.shape[-2:]
        pyramid = [F.interpolate(s(top), size=size, mode="bilinear", align_corners=False) for s in self.stages]
        logits = self.fuse(torch.cat([top, *pyramid], 1))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class FeaturesOnlyEncoder(nn.Module):
    """timm's ``features_only=True`` contract: forward returns a list of feature maps, and
    ``feature_info.channels()`` says their widths."""

    class _Info:
        def __init__(self, channels: list[int]) -> None:
            self._channels = channels

        def channels(self) -> list[int]:
            return list(self._channels)

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = _Encoder(width)
        self.feature_info = self._Info([width, 2 * width, 4 * width])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)


class FPNDecoder(nn.Module):
    """A separate decoder over the encoder's list: lateral 1x1 convs, top-down sums."""

    def __init__(self, channels: list[int], num_classes: int, width: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.head = nn.Conv2d(width, num_classes, 3, padding=1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        y = self.lateral[-1](feats[-1])
        for lateral, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            y = lateral(f) + F.interpolate(y, size=f.shape[-2:], mode="nearest")
        return self.head(y)


class EncoderDecoder(nn.Module):
    def __init__(self, num_classes: int = 8, width: int = 8) -> None:
        super().__init__()
        self.encoder = FeaturesOnlyEncoder(width)
        self.decoder = FPNDecoder(self.encoder.feature_info.channels(), num_classes, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.decoder(self.encoder(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)


def make_dict_aux(num_classes: int = 8, width: int = 8) -> nn.Module:
    return DictAuxNet(num_classes, width)


def make_tuple(num_classes: int = 8, width: int = 8) -> nn.Module:
    return TupleNet(num_classes, width)


def make_unet(num_classes: int = 8, width: int = 8) -> nn.Module:
    return LearnedUNet(num_classes, width)


def make_segnet(num_classes: int = 8, width: int = 8) -> nn.Module:
    return FunctionalSegNet(num_classes, width)


def make_psp(num_classes: int = 8, width: int = 8) -> nn.Module:
    return OddBinsPSP(num_classes, width)


def make_encoder_decoder(num_classes: int = 8, width: int = 8) -> nn.Module:
    return EncoderDecoder(num_classes, width)


def make_channels_last(num_classes: int = 8, width: int = 8) -> nn.Module:
    """The dict-output network in ``channels_last`` memory format (weights NHWC-strided)."""
    return DictAuxNet(num_classes, width).to(memory_format=torch.channels_last)


def make_data_parallel(num_classes: int = 8, width: int = 8) -> nn.Module:
    """A plain network whose checkpoints come from DataParallel training (``module.`` keys);
    the test saves its state dict with that prefix and loads it through ``--checkpoint``."""
    return TupleNet(num_classes, width)


STYLES = ("make_dict_aux", "make_tuple", "make_unet", "make_segnet", "make_psp", "make_encoder_decoder",
          "make_channels_last", "make_data_parallel", "make_functional_psp")


class NotAModule:
    """A callable that returns no ``nn.Module``."""


def make_not_a_module() -> object:
    return NotAModule()


def make_three_d(num_classes: int = 8) -> nn.Module:
    """Forward returns ``[N, C, H*W]``: no 4-D logits."""

    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, num_classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).flatten(2)

    return Flat()


ANSWER = 42  # a name that is not callable


class FunctionalPSP(nn.Module):
    """A PSP head calling ``F.adaptive_avg_pool2d`` at bins 1 and 5 and ``F.adaptive_max_pool2d`` at
    bin 3, none of which but 1 divides its 8x8 map (torch cannot export the max one unrewritten)."""

    def __init__(self, num_classes: int = 8, width: int = 8, bins: tuple[int, ...] = (1, 3, 5)) -> None:
        super().__init__()
        self.encoder = _Encoder(width)
        self.bins = bins
        c = 4 * width
        self.reduce = nn.ModuleList(nn.Conv2d(c, width, 1) for _ in bins)
        self.fuse = nn.Conv2d(c + width * len(bins), num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = self.encoder(x)[-1]
        size = top.shape[-2:]
        pools = [F.adaptive_max_pool2d(top, b) if b == 3 else F.adaptive_avg_pool2d(top, b) for b in self.bins]
        pyramid = [F.interpolate(conv(p), size=size, mode="bilinear", align_corners=False)
                   for conv, p in zip(self.reduce, pools)]
        return F.interpolate(self.fuse(torch.cat([top, *pyramid], 1)), size=x.shape[-2:], mode="bilinear",
                             align_corners=False)


def make_functional_psp(num_classes: int = 8, width: int = 8) -> nn.Module:
    return FunctionalPSP(num_classes, width)
