"""SegNet.

Badrinarayanan, Kendall and Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation", TPAMI 2017 (https://arxiv.org/abs/1511.00561).
``paper`` size reproduces the VGG16 SegNet: the encoder is the 13 convs of VGG16 with batch
norm (torchvision's ``vgg16_bn`` layout and state-dict keys, ``backbone.features.N``, so
ImageNet weights load into it) with 2x2 stride-2 max-pools that keep their argmax indices;
the decoder mirrors it stage by stage: ``MaxUnpool2d(2, 2)`` with the matching encoder
indices, then 3x3 conv-BN-ReLU layers (3, 3, 3, 2, 2 per stage, deepest first), the last of
each stage narrowing to the next-shallower width, and a final 3x3 conv to the classes (the
paper's conv1_1_D, no BN or ReLU, followed only by the softmax loss). Inputs must be
multiples of 32.

``tiny`` keeps the VGG16-BN encoder layout (13 convs, five pools with indices) at widths 24,
32, 48, 64, 64 and a lighter mirrored decoder: after each unpool one conv-BN-ReLU (two at
full resolution), then the classifier. Measured on the built-in data (BENCHMARKS.md): with
the full 13-conv decoder at widths 8..64 the network stayed at "all background" (val mIoU 0.10
after 16 epochs); widening the shallow stages let it fit 16 images but not generalise in the
budget (0.11 after 8 epochs); the shallow decoder reached 0.75 in 16 epochs. A deep plain
decoder behind sparse unpooling is slow to train from scratch, and the paper's SegNet-Basic
(4 encoder and 4 decoder layers) also trades depth for trainability. The recipe trains on 96x96
scenes (128x128 took 5 minutes for 16 epochs; the budget is 4).

The pooling indices are what make SegNet SegNet, and they do not fit the shell's
"backbone features -> classifier" contract. The encoder therefore keeps that contract in
``forward`` (the five pooled features, as any VGG backbone) and offers
:meth:`SegNetEncoder.forward_with_indices`; :class:`SegNet` (a ``SegmentationModel``) calls
that and hands the deepest feature and the indices to the decoder. Pools and unpools stay
real ``nn.MaxPool2d(return_indices=True)`` / ``nn.MaxUnpool2d`` modules: TensorRT supports
neither, and a deployment rewrite replaces them module by module.
"""

from __future__ import annotations

import torch
from torch import nn

from segexport.models.registry import register_model
from segexport.models.shell import SegmentationModel
from segexport.nn.blocks import conv_bn_relu
from segexport.nn.vgg import VGG

PAPER_WIDTHS = (64, 128, 256, 512, 512)
TINY_WIDTHS = (24, 32, 48, 64, 64)
TINY_DECODER_CONVS = (2, 1, 1, 1, 1)  # per decoder stage, shallowest first (paper: the encoder's 2, 2, 3, 3, 3)


class SegNetEncoder(VGG):
    """VGG16-BN whose five max-pools also return their argmax indices.

    ``forward`` keeps the backbone contract (pooled features, reductions 2..32);
    :meth:`forward_with_indices` also returns the indices for the decoder's unpooling.

    Args:
        widths: channels of the five conv stages.
    """

    def __init__(self, widths: tuple[int, int, int, int, int]) -> None:
        super().__init__(widths, batch_norm=True)
        # Pools hold no parameters: swapping them keeps vgg16_bn's ``features.N`` keys.
        for i in self._pool_indices:
            self.features[i] = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.convs_per_stage = _convs_per_stage(self.features, self._pool_indices)

    def forward_with_indices(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The output of each pool and its argmax indices, shallowest first."""
        pooled, indices = [], []
        for i, layer in enumerate(self.features):
            if i in self._pool_indices:
                x, idx = layer(x)
                pooled.append(x)
                indices.append(idx)
            else:
                x = layer(x)
        return pooled, indices

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_with_indices(x)[0]


def _convs_per_stage(features: nn.Sequential, pool_indices: frozenset[int]) -> tuple[int, ...]:
    counts, n = [], 0
    for i, layer in enumerate(features):
        if i in pool_indices:
            counts.append(n)
            n = 0
        elif isinstance(layer, nn.Conv2d):
            n += 1
    return tuple(counts)


class SegNetDecoder(nn.Module):
    """The mirrored decoder: per encoder stage, deepest first, unpool with that stage's
    indices, then conv-BN-ReLU layers; a final 3x3 conv to the classes.

    ``unpools[i]`` and ``stages[i]`` mirror encoder stage ``i`` (0 = shallowest).

    Args:
        widths: channels of the encoder's five stages.
        convs_per_stage: convs in each encoder stage (VGG16: 2, 2, 3, 3, 3).
        num_classes: output classes.
    """

    def __init__(self, widths: tuple[int, ...], convs_per_stage: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.unpools = nn.ModuleList(nn.MaxUnpool2d(2, stride=2) for _ in widths)
        stages = []
        for i, (width, n_convs) in enumerate(zip(widths, convs_per_stage)):
            layers = [conv_bn_relu(width, width) for _ in range(n_convs - 1)]
            if i > 0:  # stage 0's narrowing conv is the classifier ``cls`` below
                layers.append(conv_bn_relu(width, widths[i - 1]))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.cls = nn.Conv2d(widths[0], num_classes, 3, padding=1)
        # He initialisation as in the paper, except the classifier: it feeds no ReLU, and
        # He-sized initial logits slowed the start of training measurably.
        for m in self.stages.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor, indices: list[torch.Tensor]) -> torch.Tensor:
        """Class logits at input size from the deepest pooled feature and every pool's indices."""
        for i in reversed(range(len(self.stages))):
            x = self.stages[i](self.unpools[i](x, indices[i]))
        return self.cls(x)


class SegNet(SegmentationModel):
    """Encoder with pooling indices -> mirrored decoder; logits come out at input size.

    Args:
        backbone: the encoder.
        classifier: the decoder.
    """

    backbone: SegNetEncoder
    classifier: SegNetDecoder

    def __init__(self, backbone: SegNetEncoder, classifier: SegNetDecoder) -> None:
        super().__init__(backbone, classifier, upsample_to_input=False, input_divisor=32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[N, C, H, W]`` for images ``[N, 3, H, W]``."""
        pooled, indices = self.backbone.forward_with_indices(x)
        return self.classifier(pooled[-1], indices)

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Logits and no auxiliary logits (SegNet has no auxiliary head)."""
        return self.forward(x), None


@register_model(
    "segnet",
    summary="SegNet: VGG16-BN encoder, mirrored decoder upsampling with max-pool indices",
    paper="Badrinarayanan et al., SegNet: A Deep Convolutional Encoder-Decoder Architecture, TPAMI 2017",
)
def segnet(*, size: str = "tiny", num_classes: int = 21) -> SegmentationModel:
    """SegNet (https://arxiv.org/abs/1511.00561).

    Args:
        size: "paper" (VGG16-BN widths 64..512) or "tiny" (widths 24..64, one conv per decoder stage).
        num_classes: output classes.
    """
    paper = size == "paper"
    encoder = SegNetEncoder(PAPER_WIDTHS if paper else TINY_WIDTHS)
    convs = encoder.convs_per_stage if paper else TINY_DECODER_CONVS
    decoder = SegNetDecoder(encoder.feature_info.channels, convs, num_classes)
    return SegNet(encoder, decoder)
