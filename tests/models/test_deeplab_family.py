"""DeepLab v1, v2 and v3: output strides, heads and rates of the paper configurations."""

import pytest
import torch

from segexport.errors import ConfigError
from segexport.models import build_model
from segexport.models.deeplabv3 import scaled_rates

# name -> (deepest feature side at a 64x64 input, parameters at 21 classes)
PAPER = {
    "deeplabv1": (8, 20_505_429),
    "deeplabv2": (8, 44_048_532),
    "deeplabv3": (4, 58_040_661),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_output_stride_and_size(name):
    side, params = PAPER[name]
    torch.manual_seed(0)
    model = build_model(name, size="paper", num_classes=21).eval()
    assert sum(p.numel() for p in model.parameters()) == params
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 64, 64))
        assert feats[-1].shape[-2:] == (side, side)
        assert model.classifier(feats).shape == (1, 21, side, side)
    assert model.input_divisor == model.backbone.feature_info.output_stride == 64 // side


def test_deeplabv1_largefov_head():
    paper = build_model("deeplabv1", size="paper", num_classes=21)
    fc6 = paper.classifier.fc6
    assert (fc6.in_channels, fc6.out_channels, fc6.kernel_size, fc6.dilation) == (512, 1024, (3, 3), (12, 12))
    assert paper.classifier.fc7.kernel_size == (1, 1) and paper.classifier.fc7.out_channels == 1024
    # The names vgg_fc_to_conv produces, under the shell's classifier (shapes differ: see deeplabv1.py).
    assert {"classifier.fc6.weight", "classifier.fc6.bias", "classifier.fc7.weight"} <= set(paper.state_dict())
    assert build_model("deeplabv1", size="tiny").classifier.fc6.dilation == (3, 3)


def test_deeplabv2_sums_four_atrous_branches():
    torch.manual_seed(0)
    model = build_model("deeplabv2", size="tiny", num_classes=5).eval()
    branches = model.classifier.branches
    assert [b.dilation[0] for b in branches] == [2, 4, 6, 8]
    assert all(b.out_channels == 5 and b.kernel_size == (3, 3) for b in branches)
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 64, 64))
        x = feats[-1]
        expected = branches[0](x) + branches[1](x) + branches[2](x) + branches[3](x)
        assert torch.equal(model.classifier(feats), expected)
    paper = build_model("deeplabv2", size="paper", num_classes=21)
    assert [b.dilation[0] for b in paper.classifier.branches] == [6, 12, 18, 24]


def _layer4_dilations(model):
    return tuple(block.conv2.dilation[0] for block in model.backbone.layer4)


def _aspp_rates(model):
    return tuple(branch[0].dilation[0] for branch in model.classifier[0].convs[1:-1])


def test_deeplabv3_multi_grid_and_rates():
    os16 = build_model("deeplabv3", size="paper", num_classes=21)
    assert _layer4_dilations(os16) == (2, 4, 8)
    assert _aspp_rates(os16) == (6, 12, 18)
    os8 = build_model("deeplabv3", size="paper", num_classes=21, output_stride=8)
    assert _layer4_dilations(os8) == (4, 8, 16)
    assert _aspp_rates(os8) == (12, 24, 36)
    tiny = build_model("deeplabv3", size="tiny", num_classes=5)
    # One block, no multi-grid: torchvision's rule gives a stage's first block the previous dilation.
    assert _layer4_dilations(tiny) == (1,)
    assert _aspp_rates(tiny) == (2, 4, 6)


def test_invalid_options():
    with pytest.raises(ConfigError, match="output stride 8 or 16"):
        build_model("deeplabv3", output_stride=32)
    with pytest.raises(ConfigError, match="output stride 8 or 16, not 4"):
        scaled_rates("deeplabv3p", 4, (6, 12, 18))
    with pytest.raises(ConfigError, match="does not take option"):
        build_model("deeplabv1", output_stride=16)
    with pytest.raises(ConfigError, match="does not take option"):
        build_model("deeplabv2", output_stride=16)
    with pytest.raises(ConfigError, match="takes backbone resnet_tiny"):
        build_model("deeplabv2", size="tiny", backbone="resnet101")
