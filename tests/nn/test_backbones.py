"""Every registered backbone keeps its declared contract; paper ones keep torchvision's keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from segexport.errors import CheckpointError, ConfigError, UnknownNameError
from segexport.nn import BACKBONES, build_backbone
from segexport.nn.vgg import vgg_fc_to_conv

KEYS_DIR = Path(__file__).parents[1] / "fixtures" / "torchvision_keys"

# name -> (nominal reductions at output stride 32, supported output strides)
SPEC = {
    "resnet18": ((4, 8, 16, 32), (8, 16, 32)),
    "resnet50": ((4, 8, 16, 32), (8, 16, 32)),
    "resnet101": ((4, 8, 16, 32), (8, 16, 32)),
    "resnet_tiny": ((4, 8, 16, 32), (8, 16, 32)),
    "vgg16": ((2, 4, 8, 16, 32), (8, 32)),
    "vgg16_bn": ((2, 4, 8, 16, 32), (8, 32)),
    "vgg_tiny": ((2, 4, 8, 16, 32), (8, 32)),
    "mobilenet_v2": ((2, 4, 8, 16, 32), (8, 16, 32)),
    "mobilenet_v2_tiny": ((2, 4, 8, 16, 32), (8, 16, 32)),
    "xception65": ((4, 8, 16, 32), (8, 16, 32)),
    "xception_tiny": ((4, 8, 16, 32), (8, 16, 32)),
}
CASES = [(name, stride) for name in sorted(SPEC) for stride in SPEC[name][1]]

# backbone (and its torchvision fixture's name) -> classifier prefix the backbone drops
TORCHVISION = {
    "resnet18": "fc.",
    "resnet50": "fc.",
    "resnet101": "fc.",
    "vgg16": "classifier.",
    "vgg16_bn": "classifier.",
    "mobilenet_v2": "classifier.",
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small convs gain nothing from a second thread; on a shared 2-core machine its
    spin-waiting made this file 4x slower. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_spec_covers_every_registered_backbone() -> None:
    assert set(SPEC) == set(BACKBONES)


@pytest.mark.parametrize(("name", "output_stride"), CASES, ids=[f"{n}-os{s}" for n, s in CASES])
def test_features_match_declaration(name: str, output_stride: int) -> None:
    model = build_backbone(name, output_stride=output_stride).eval()
    # non-square so that swapped axes show; tiny ones at the size they train at
    height, width = (128, 96) if "tiny" in name else (64, 96)
    with torch.no_grad():
        features = model(torch.randn(1, 3, height, width))

    info = model.feature_info
    assert info.reductions == tuple(min(r, output_stride) for r in SPEC[name][0])
    assert info.output_stride == output_stride
    assert len(features) == len(info.channels) == len(info.reductions)
    for feature, channels, reduction in zip(features, info.channels, info.reductions):
        assert tuple(feature.shape) == (1, channels, height // reduction, width // reduction)


@pytest.mark.parametrize("name", sorted(SPEC))
def test_unsupported_output_stride_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="output stride"):
        build_backbone(name, output_stride=16 if name.startswith("vgg") else 4)


def _reference(name: str) -> dict[str, list[int]]:
    data = json.loads((KEYS_DIR / f"{name}.json").read_text())
    assert data["source"].startswith("torchvision ")
    return {k: v for k, v in data["state_dict"].items() if not k.startswith(TORCHVISION[name])}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_state_dict_matches_torchvision(name: str) -> None:
    model = build_backbone(name)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    reference = _reference(name)
    assert list(ours) == list(reference)  # same keys, same order
    assert ours == reference

    # a torchvision-shaped checkpoint loads strictly, and its values arrive
    checkpoint = {
        k: torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(shape)
        for k, shape in reference.items()
    }
    model.load_state_dict(checkpoint, strict=True)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], checkpoint[k]) for k in checkpoint)


@pytest.mark.parametrize("options", [{"output_stride": 8}, {"pool": "max3"}, {"output_stride": 8, "pool": "max3"}])
def test_vgg_options_change_no_key(options: dict[str, object]) -> None:
    model = build_backbone("vgg16_bn", **options)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == _reference("vgg16_bn")


def test_vgg_deeplab_v1_layout() -> None:
    model = build_backbone("vgg16", output_stride=8, pool="max3")
    pools = [m for m in model.features if isinstance(m, torch.nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride, p.padding) for p in pools] == [(3, 2, 1)] * 3 + [(3, 1, 1)] * 2
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.dilation for c in convs] == [(1, 1)] * 10 + [(2, 2)] * 3


def test_vgg_fc_to_conv_shapes() -> None:
    # the weights are 400 MB of float32: shapes are checked on the meta device
    state_dict = {
        "features.0.weight": torch.empty(64, 3, 3, 3, device="meta"),
        "classifier.0.weight": torch.empty(4096, 25088, device="meta"),
        "classifier.0.bias": torch.randn(4096),
        "classifier.3.weight": torch.empty(4096, 4096, device="meta"),
        "classifier.3.bias": torch.randn(4096),
        "classifier.6.weight": torch.empty(1000, 4096, device="meta"),
    }
    converted = vgg_fc_to_conv(state_dict)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        "fc6.weight": (4096, 512, 7, 7),
        "fc6.bias": (4096,),
        "fc7.weight": (4096, 4096, 1, 1),
        "fc7.bias": (4096,),
    }
    assert torch.equal(converted["fc6.bias"], state_dict["classifier.0.bias"])
    assert converted["fc6.bias"].data_ptr() != state_dict["classifier.0.bias"].data_ptr()


def test_vgg_fc_to_conv_rejects_incomplete_or_misshapen_input() -> None:
    with pytest.raises(CheckpointError, match="classifier.0.weight"):
        vgg_fc_to_conv({})
    bad = {
        "classifier.0.weight": torch.empty(4096, 512, device="meta"),
        "classifier.0.bias": torch.empty(4096, device="meta"),
        "classifier.3.weight": torch.empty(4096, 4096, device="meta"),
        "classifier.3.bias": torch.empty(4096, device="meta"),
    }
    with pytest.raises(CheckpointError, match="expected"):
        vgg_fc_to_conv(bad)


def test_resnet50_output_stride_8_dilates_layer3_and_layer4() -> None:
    model = build_backbone("resnet50", output_stride=8).eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in features] == [16, 8, 8, 8]
    # torchvision's rule: a dilated stage's first block keeps the previous dilation
    assert [b.conv2.dilation[0] for b in model.layer3] == [1] + [2] * 5
    assert [b.conv2.dilation[0] for b in model.layer4] == [2, 4, 4]
    assert model.layer4[0].conv2.stride == (1, 1)


def test_resnet_multi_grid_scales_layer4_rates() -> None:
    model = build_backbone("resnet50", output_stride=16, multi_grid=(1, 2, 4))
    assert [b.conv2.dilation[0] for b in model.layer4] == [2, 4, 8]
    assert [b.conv2.padding[0] for b in model.layer4] == [2, 4, 8]
    with pytest.raises(ConfigError, match="multi_grid"):
        build_backbone("resnet_tiny", multi_grid=(1, 2, 4))


def test_unknown_backbone_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match="resnet50"):
        build_backbone("resnet5")


def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="pool"):
        build_backbone("resnet18", pool="max3")
