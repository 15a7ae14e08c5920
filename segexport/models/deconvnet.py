"""DeconvNet.

Noh, Hong and Han, "Learning Deconvolution Network for Semantic Segmentation", ICCV 2015
(https://arxiv.org/abs/1505.04366). ``paper`` size: the VGG16 encoder with batch norm after every
convolution (torchvision's ``vgg16_bn`` keys, so ImageNet weights load through
``--backbone-checkpoint``) and max-pools that keep their switches; fc6 as a 7x7 *valid*
convolution (4096 channels) that turns the 7x7 pool5 map of a 224x224 input into 1x1, fc7 as a
1x1 convolution; then the mirrored deconvolution network: a 7x7 transposed convolution back to
7x7 (deconv-fc6), and per encoder stage, deepest first, unpooling with that stage's switches and
3x3 stride-1 transposed convolutions with batch norm and ReLU (3, 3, 3, 2, 2 of them), a 1x1
classifier at the end. Whole-image inference: the paper's instance-wise proposals are a test-time
ensemble, not the network. About 250M parameters.

``tiny`` keeps the graph at widths 16..64 (SegNet tiny's, the first stage 16 wide instead of 24:
at 24 its three 24-channel full-resolution 3x3 layers took 58% of the forward convolution time),
128-channel fc layers, fc6 2x2 (valid, as the paper's: a 64x64 input's 2x2 pool5 map becomes
1x1) and one 3x3 layer per decoder stage, He-initialised, as plain convolutions (a stride-1
transposed convolution is a convolution with a flipped kernel, and PyTorch's CPU backward of
the transposed form is slower), and a 3x3
classifier, as SegNet tiny's. Trained from scratch (the paper starts from ImageNet VGG16), the
decoder behind the fc6/fc7 bottleneck learned nothing: val mIoU 0.13 ("all background") after
18 epochs, with transposed or plain layers, one or two at full resolution. Tiny therefore adds
deconv-fc6's output to pool5 as a residual branch (its last batch norm starts at zero, the ReLU
after the sum), so training starts from SegNet's unpooling path and learns what the fc layers
add: 0.54 after 18 epochs at 96x96 with the branch, against 0.42 when it was added with its
ReLU and unit gain (BENCHMARKS.md). Inputs must be multiples of 32 and at least 32 x fc6's
kernel on each side (224 for the paper size, 64 for tiny).

Pools and unpools are ``nn.MaxPool2d(return_indices=True)`` / ``nn.MaxUnpool2d`` modules (the
encoder is SegNet's), so the ``unpool_for_tensorrt`` rewrite replaces them exactly, ties
included; the stride-1 transposed convolutions stay (TensorRT runs them, and
``deconv_to_resize`` only targets upsampling ones).
"""

from __future__ import annotations

import torch
from torch import nn

from segexport.models.registry import register_model
from segexport.models.segnet import PAPER_WIDTHS, SegNet, SegNetEncoder
from segexport.models.segnet import TINY_WIDTHS as SEGNET_TINY_WIDTHS
from segexport.models.shell import SegmentationModel

PAPER_DECODER_CONVS = (2, 2, 3, 3, 3)  # per stage, shallowest first, as the encoder's
TINY_DECODER_CONVS = (1, 1, 1, 1, 1)  # one per stage; SegNet tiny's 3x3 classifier is the second at full size
TINY_WIDTHS = (16, *SEGNET_TINY_WIDTHS[1:])  # SegNet tiny's, the first stage 16 wide: an epoch takes about 20% less


def deconv_bn_relu(cin: int, cout: int, kernel: int = 3, *, transposed: bool = True) -> nn.Sequential:
    """A stride-1 transposed convolution (same size out for kernel 3), batch norm, ReLU; with
    ``transposed=False`` the plain convolution it equals up to a flipped kernel."""
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    layer = conv(cin, cout, kernel, padding=kernel // 2, bias=False)
    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    return nn.Sequential(layer, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DeconvNetDecoder(nn.Module):
    """fc6 (valid) -> fc7 -> deconv-fc6 -> per stage: unpool with the switches, deconvolutions.

    Args:
        widths: channels of the encoder's five stages.
        convs_per_stage: transposed convolutions per decoder stage, shallowest first.
        num_classes: output classes.
        fc_channels: fc6/fc7 width (4096 in the paper).
        fc6_kernel: fc6's kernel and deconv-fc6's (7 in the paper: the pool5 map of 224x224).
        fc_skip: add pool5 to deconv-fc6's output (tiny only: from scratch, the decoder behind the
            fc bottleneck learned nothing, see the module docstring).
        cls_kernel: the classifier's kernel (1 in the paper; tiny: 3, as SegNet tiny's).
        transposed: the decoder's 3x3 layers as stride-1 transposed convolutions (the paper's) or
            as the plain convolutions they equal up to a flipped kernel (tiny: PyTorch's CPU
            backward of transposed convolutions made training 2x slower).
    """

    def __init__(self, widths: tuple[int, ...], convs_per_stage: tuple[int, ...], num_classes: int, *,
                 fc_channels: int, fc6_kernel: int, transposed: bool = True, fc_skip: bool = False,
                 cls_kernel: int = 1) -> None:
        super().__init__()
        c5 = widths[-1]
        self.fc6 = nn.Sequential(nn.Conv2d(c5, fc_channels, fc6_kernel, bias=False), nn.BatchNorm2d(fc_channels),
                                 nn.ReLU(inplace=True))
        self.fc7 = nn.Sequential(nn.Conv2d(fc_channels, fc_channels, 1, bias=False), nn.BatchNorm2d(fc_channels),
                                 nn.ReLU(inplace=True))
        self.deconv_fc6 = nn.Sequential(nn.ConvTranspose2d(fc_channels, c5, fc6_kernel, bias=False),
                                        nn.BatchNorm2d(c5), nn.ReLU(inplace=True))
        if fc_skip:  # a residual branch: starts at zero, the ReLU after the sum (ResNet's zero-gamma)
            self.deconv_fc6[2] = nn.Identity()
            nn.init.zeros_(self.deconv_fc6[1].weight)
        self.unpools = nn.ModuleList(nn.MaxUnpool2d(2, stride=2) for _ in widths)
        stages = []
        for i, (width, n) in enumerate(zip(widths, convs_per_stage)):
            out = widths[i - 1] if i > 0 else width
            stages.append(nn.Sequential(*[deconv_bn_relu(width, width, transposed=transposed) for _ in range(n - 1)],
                                        deconv_bn_relu(width, out, transposed=transposed)))
        self.stages = nn.ModuleList(stages)
        self.cls = nn.Conv2d(widths[0], num_classes, cls_kernel, padding=cls_kernel // 2)
        self.fc_skip = fc_skip

    def forward(self, x: torch.Tensor, indices: list[torch.Tensor]) -> torch.Tensor:
        fc = self.deconv_fc6(self.fc7(self.fc6(x)))
        x = torch.relu(x + fc) if self.fc_skip else fc
        for i in reversed(range(len(self.stages))):
            x = self.stages[i](self.unpools[i](x, indices[i]))
        return self.cls(x)


class DeconvNet(SegNet):
    """SegNet's encoder with switches -> the deconvolution network (SegNet's forward: the deepest
    pooled feature and every pool's switches go to the decoder); logits at input size."""

    classifier: DeconvNetDecoder  # type: ignore[assignment]

    @property
    def min_input_side(self) -> int:
        """fc6 is a valid convolution on pool5 (1/32 of the input): each side needs its kernel there."""
        return self.input_divisor * self.classifier.fc6[0].kernel_size[0]


@register_model(
    "deconvnet",
    summary="DeconvNet: VGG16-BN encoder, fc6/fc7, mirrored unpooling + deconvolution network",
    paper="Noh, Hong and Han, Learning Deconvolution Network for Semantic Segmentation, ICCV 2015",
)
def deconvnet(*, size: str = "tiny", num_classes: int = 21) -> SegmentationModel:
    """DeconvNet (https://arxiv.org/abs/1505.04366).

    Args:
        size: "paper" (VGG16-BN, 4096-channel fc6 7x7 / fc7, 13 deconvolutions) or "tiny".
        num_classes: output classes.
    """
    paper = size == "paper"
    encoder = SegNetEncoder(PAPER_WIDTHS if paper else TINY_WIDTHS)
    decoder = DeconvNetDecoder(encoder.feature_info.channels, PAPER_DECODER_CONVS if paper else TINY_DECODER_CONVS,
                               num_classes, fc_channels=4096 if paper else 128, fc6_kernel=7 if paper else 2,
                               transposed=paper, fc_skip=not paper, cls_kernel=1 if paper else 3)
    return DeconvNet(encoder, decoder)
