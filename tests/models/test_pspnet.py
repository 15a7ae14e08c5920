"""PSPNet: pyramid pooling bins, the training-only auxiliary head, non-dividing bins."""

import pytest
import torch
from torch import nn

from segexport.errors import ConfigError
from segexport.models import build_model


def _pools(model):
    return [stage[0] for stage in model.classifier.ppm.stages]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("pspnet", size="tiny", num_classes=5)


def test_pyramid_bins_are_adaptive_pools_of_1_2_3_6(tiny):
    pools = _pools(tiny)
    assert all(type(p) is nn.AdaptiveAvgPool2d for p in pools)
    assert [p.output_size for p in pools] == [1, 2, 3, 6]
    # Each branch reduces the 128-channel feature to 32 channels; concatenated with it: 256.
    assert tiny.classifier.bottleneck[0].in_channels == 128 + 4 * 32


def test_aux_head_runs_in_forward_train_only(tiny):
    calls = []
    handle = tiny.aux_classifier.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 3, 64, 64)
    try:
        tiny.train()
        out, aux = tiny.forward_train(x)
        assert len(calls) == 1 and aux.shape == out.shape == (2, 5, 64, 64)
        tiny.eval()
        logits = tiny(x)
        assert len(calls) == 1
    finally:
        handle.remove()
    aux_params = list(tiny.aux_classifier.parameters())
    grads = torch.autograd.grad(logits.sum(), aux_params, allow_unused=True)
    assert all(g is None for g in grads)  # no path from forward's output to the aux head
    assert tiny.aux_classifier.feature_index == 2  # layer3


def test_bins_that_do_not_divide_the_feature_map(tiny):
    seen = {}
    hooks = [p.register_forward_hook(lambda m, i, o: seen.__setitem__(m.output_size, (i[0], o))) for p in _pools(tiny)]
    x = torch.randn(1, 3, 128, 128)
    tiny.eval()
    try:
        with torch.no_grad():
            assert tiny.backbone(x)[-1].shape[-2:] == (16, 16)
            assert tiny(x).shape == (1, 5, 128, 128)
    finally:
        for h in hooks:
            h.remove()
    assert {b: tuple(o.shape[-2:]) for b, (_, o) in seen.items()} == {1: (1, 1), 2: (2, 2), 3: (3, 3), 6: (6, 6)}
    # 16 / 3 is not whole: adaptive bins overlap, rows [0, 6), [5, 11), [10, 16) (floor/ceil edges).
    feat, pooled = seen[3]
    torch.testing.assert_close(pooled[0, :, 1, 2], feat[0, :, 5:11, 10:16].mean(dim=(-2, -1)))


def test_paper_configuration_at_64x64():
    torch.manual_seed(0)
    model = build_model("pspnet", size="paper", num_classes=21).eval()
    assert sum(p.numel() for p in model.parameters()) == 48_957_802
    assert [p.output_size for p in _pools(model)] == [1, 2, 3, 6]
    assert [s[1].out_channels for s in model.classifier.ppm.stages] == [512] * 4
    assert model.classifier.bottleneck[0].out_channels == 512
    assert model.aux_classifier[0].in_channels == 1024 and model.aux_classifier[0].out_channels == 256
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.backbone(x)
        assert [tuple(f.shape[-2:]) for f in feats] == [(16, 16), (8, 8), (8, 8), (8, 8)]  # OS8
        assert model.classifier(feats).shape == (1, 21, 8, 8)


def test_invalid_options():
    with pytest.raises(ConfigError, match="output stride 8"):
        build_model("pspnet", output_stride=32)
    with pytest.raises(ConfigError, match="takes backbone resnet50, resnet101"):
        build_model("pspnet", size="paper", backbone="resnet_tiny")
    model = build_model("pspnet", num_classes=3, output_stride=16)
    assert model.input_divisor == 16 and model.backbone.feature_info.output_stride == 16
