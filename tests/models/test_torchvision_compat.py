"""torchvision's segmentation models: same keys, shapes and parameter counts as torchvision 0.29.1.

Paper-size models are built on the meta device (shapes only), so the 40-60M-parameter networks
cost no memory and no initialisation time here; tests/test_weights.py loads real tensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from segexport.models import build_model, get_entry
from segexport.models.torchvision_compat import FeatureHead
from segexport.nn.blocks import ASPP

KEYS_DIR = Path(__file__).parents[1] / "fixtures" / "torchvision_keys"

# fixture name -> (architecture, build options, parameters counted by torchvision 0.29.1)
CASES = {
    "fcn_resnet50": ("fcn_resnet50", {}, 35_322_218),
    "fcn_resnet101": ("fcn_resnet101", {}, 54_314_346),
    "deeplabv3_resnet50": ("deeplabv3_resnet50", {}, 42_004_074),
    "deeplabv3_resnet50_noaux": ("deeplabv3_resnet50", {"aux": False}, 39_638_869),
    "deeplabv3_resnet101": ("deeplabv3_resnet101", {}, 60_996_202),
}


def _paper(arch: str, **options: object) -> torch.nn.Module:
    with torch.device("meta"):
        return build_model(arch, size="paper", num_classes=21, **options)


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_and_parameter_count_match_torchvision(name: str) -> None:
    arch, options, num_params = CASES[name]
    model = _paper(arch, **options)
    reference = json.loads((KEYS_DIR / f"{name}.json").read_text())
    assert reference["source"] == "torchvision 0.29.1"
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(reference["state_dict"])  # same keys, same order
    assert ours == reference["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == num_params == reference["num_params"]


def test_deeplab_paper_structure() -> None:
    model = _paper("deeplabv3_resnet101")
    # torchvision's replace_stride_with_dilation=[False, True, True]
    assert model.backbone.feature_info.reductions == (4, 8, 8, 8)
    assert [b.conv2.dilation[0] for b in model.backbone.layer4] == [2, 4, 4]
    aspp = model.classifier[0]
    assert isinstance(aspp, ASPP)
    assert [branch[0].dilation[0] for branch in aspp.convs[1:4]] == [12, 24, 36]
    assert aspp.project[3].p == 0.5
    assert model.classifier.feature_index == -1
    assert model.aux_classifier.feature_index == 2  # layer3, 1024 channels
    assert model.aux_classifier[3].p == 0.1
    assert model.input_divisor == 8 and model.upsample_to_input


def test_fcn_paper_head() -> None:
    head = _paper("fcn_resnet50").classifier
    assert isinstance(head, FeatureHead)
    assert [type(m) for m in head] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Dropout, nn.Conv2d]
    assert head[0].padding == (1, 1) and head[0].bias is None and head[3].p == 0.1


@pytest.mark.parametrize("arch", ["fcn_resnet50", "deeplabv3_resnet101"])
def test_tiny_with_and_without_aux(arch: str) -> None:
    torch.manual_seed(0)
    with_aux = build_model(arch, size="tiny", num_classes=4).train()
    without = build_model(arch, size="tiny", num_classes=4, aux=False).train()
    assert without.aux_classifier is None
    x = torch.randn(2, 3, 64, 96)
    out, aux = with_aux.forward_train(x)
    assert out.shape == aux.shape == (2, 4, 64, 96)
    assert without.forward_train(x)[1] is None
    # the tiny variant has the same heads on resnet_tiny: only the widths differ
    def heads(model: nn.Module) -> list[str]:
        return [k for k in model.state_dict() if not k.startswith("backbone.")]

    assert heads(with_aux) == heads(_paper(arch))


def test_registry_entries() -> None:
    entry = get_entry("deeplabv3_resnet50")
    assert "Rethinking Atrous Convolution" in entry.paper
    assert entry.default_backbone == {"paper": "resnet50", "tiny": "resnet_tiny"}
    assert "Fully Convolutional Networks" in get_entry("fcn_resnet101").paper
