"""A segmentation network written without segexport, as a team's own training code would have it.

segexport takes it by import path, ``my_unet:build``: run from this folder or put it on
``PYTHONPATH``. Its forward returns ``{"out": logits, "aux": logits}`` as torchvision's
segmentation models do (segexport trains the auxiliary head and exports only ``out``), its
decoder upsamples with learned ``ConvTranspose2d`` layers and its pools return indices for a
SegNet-style unpooling in the last stage, all of which segexport rewrites for TensorRT.

    PYTHONPATH=examples segexport train --recipe examples/my_unet.toml
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class MyUNet(nn.Module):
    def __init__(self, num_classes: int = 8, width: int = 16) -> None:
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = conv_bn_relu(3, w), conv_bn_relu(w, 2 * w), conv_bn_relu(2 * w, 4 * w)
        self.up3 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = conv_bn_relu(4 * w, 2 * w)
        self.dec1 = conv_bn_relu(2 * w, w)
        self.head = nn.Conv2d(w, num_classes, 1)
        self.aux_head = nn.Conv2d(4 * w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        a = self.enc1(x)
        pooled, indices = F.max_pool2d(a, 2, 2, return_indices=True)
        b = self.enc2(pooled)
        c = self.enc3(F.max_pool2d(b, 2))
        d = self.dec2(torch.cat([self.up3(c), b], 1))
        e = F.max_unpool2d(self.dec1(d), indices, 2, 2, output_size=a.shape[-2:])
        aux = F.interpolate(self.aux_head(c), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"out": self.head(e), "aux": aux}


def build(num_classes: int = 8, width: int = 16) -> MyUNet:
    """The network; segexport passes ``num_classes`` (the data set's class count)."""
    return MyUNet(num_classes, width)


class _Logits(nn.Module):
    """The ``out`` entry alone: what an ONNX export script of a dict-output network wraps it in."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


if __name__ == "__main__":
    # `python examples/my_unet.py OUT.onnx [STATE_DICT.pth]`: a plain torch.onnx.export, as a training
    # repository would write it (no segexport metadata), for `segexport build OUT.onnx`.
    import sys
    from pathlib import Path

    torch.manual_seed(0)
    net = build(width=8)
    if len(sys.argv) > 2:
        net.load_state_dict(torch.load(sys.argv[2], weights_only=True))
    Path(sys.argv[1]).parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(_Logits(net).eval(), (torch.randn(1, 3, 96, 96),), sys.argv[1], input_names=["image"],
                      output_names=["logits"], dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}})
    print(f"wrote {sys.argv[1]}")
