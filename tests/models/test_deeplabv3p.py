"""DeepLabv3+ at paper size: ResNet-50 backbone keys equal torchvision's, a 512x512 forward."""

import json
from pathlib import Path

import pytest
import torch

from segexport.models import build_model
from segexport.models.deeplabv3p import PAPER_BACKBONES

KEYS = Path(__file__).parents[1] / "fixtures" / "torchvision_keys" / "resnet50.json"


@pytest.fixture(scope="module")
def paper_resnet50():
    torch.manual_seed(0)
    return build_model("deeplabv3p", size="paper", num_classes=21, backbone="resnet50").eval()


def test_backbone_keys_and_shapes_equal_torchvision_resnet50(paper_resnet50):
    reference = json.loads(KEYS.read_text())["state_dict"]
    expected = {k: v for k, v in reference.items() if not k.startswith("fc.")}
    ours = {k: list(v.shape) for k, v in paper_resnet50.backbone.state_dict().items()}
    assert list(ours) == list(expected)
    assert ours == expected


def test_paper_forward_at_512(paper_resnet50):
    with torch.no_grad():
        out = paper_resnet50(torch.randn(1, 3, 512, 512))
    assert out.shape == (1, 21, 512, 512)
    assert torch.isfinite(out).all()


def test_paper_head_matches_the_paper(paper_resnet50):
    head = paper_resnet50.classifier
    assert head.project_low[0].out_channels == 48
    assert [c[0].dilation for c in list(head.aspp.convs)[1:4]] == [(6, 6), (12, 12), (18, 18)]
    # Separable 3x3 branches: a depthwise conv first.
    assert all(c[0].groups == c[0].in_channels for c in list(head.aspp.convs)[1:4])


@pytest.mark.parametrize("backbone", PAPER_BACKBONES)
def test_every_paper_backbone_builds_and_runs(backbone):
    model = build_model("deeplabv3p", size="paper", num_classes=3, backbone=backbone).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)
