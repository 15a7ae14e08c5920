"""U-Net: output at input size, learned 2x2 stride-2 transposed convs, encoder contract."""

from __future__ import annotations

import torch
from torch import nn

from segexport.models import build_model


def test_output_size_equals_input_size() -> None:
    torch.manual_seed(0)
    model = build_model("unet", size="tiny", num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 5, 64, 96)


def test_paper_upsamplers_are_2x2_stride_2_transposed_convs_halving_channels() -> None:
    with torch.device("meta"):
        model = build_model("unet", size="paper", num_classes=21)
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(u.in_channels, u.out_channels) for u in ups] == [(1024, 512), (512, 256), (256, 128), (128, 64)]
    assert all(u.kernel_size == (2, 2) and u.stride == (2, 2) and u.padding == (0, 0) for u in ups)
    assert all(u.weight.requires_grad for u in ups)


def test_paper_layout_has_no_batch_norm() -> None:
    with torch.device("meta"):
        paper = build_model("unet", size="paper", num_classes=21)
        tiny = build_model("unet", size="tiny", num_classes=21)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in paper.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in tiny.modules())
    convs = [m for m in paper.modules() if isinstance(m, nn.Conv2d)]
    ups = [m for m in paper.modules() if isinstance(m, nn.ConvTranspose2d)]
    # the paper's "23 convolutional layers": 18 3x3 convs, one 1x1 classifier, 4 up-convs
    assert (len(convs), len(ups)) == (19, 4)
    assert convs[-1].kernel_size == (1, 1)
    # every 3x3 conv pads, so no crop is needed
    assert all(c.padding == (1, 1) for c in convs if c.kernel_size == (3, 3))
    assert sum(p.numel() for p in paper.parameters()) == 31_033_045


def test_encoder_keeps_the_backbone_contract() -> None:
    model = build_model("unet", size="tiny", num_classes=5).eval()
    info = model.backbone.feature_info
    assert info.reductions == (1, 2, 4, 8, 16)
    assert info.output_stride == model.input_divisor
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [
        (1, c, 64 // r, 96 // r) for c, r in zip(info.channels, info.reductions)
    ]


def test_paper_forward_at_64x64() -> None:
    torch.manual_seed(0)
    model = build_model("unet", size="paper", num_classes=21).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 21, 64, 64)
    assert torch.isfinite(out).all()
