"""SegNet: torchvision vgg16_bn keys in the encoder, real max-pool indices and unpooling."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from segexport.models import build_model

KEYS = Path(__file__).parents[1] / "fixtures" / "torchvision_keys" / "vgg16_bn.json"


def test_paper_encoder_keys_are_torchvision_vgg16_bn_features() -> None:
    with torch.device("meta"):
        model = build_model("segnet", size="paper", num_classes=21)
    reference = json.loads(KEYS.read_text())["state_dict"]
    expected = {f"backbone.{k}": v for k, v in reference.items() if k.startswith("features.")}
    ours = {k: list(v.shape) for k, v in model.state_dict().items() if k.startswith("backbone.")}
    assert list(ours) == list(expected)  # same keys, same order
    assert ours == expected


def test_vgg16_bn_features_load_strictly_into_the_encoder() -> None:
    model = build_model("segnet", size="paper", num_classes=21)
    reference = json.loads(KEYS.read_text())["state_dict"]
    state = {
        k: torch.tensor(3) if k.endswith("num_batches_tracked") else torch.randn(shape)
        for k, shape in reference.items()
        if k.startswith("features.")
    }
    model.backbone.load_state_dict(state, strict=True)
    assert torch.equal(model.state_dict()["backbone.features.40.weight"], state["features.40.weight"])


def test_forward_pools_with_indices_and_unpools() -> None:
    torch.manual_seed(0)
    model = build_model("segnet", size="tiny", num_classes=5).eval()
    pools = [m for m in model.backbone.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5 and all(p.return_indices for p in pools)
    calls: list[str] = []
    for module in model.modules():
        if isinstance(module, (nn.MaxPool2d, nn.MaxUnpool2d)):
            module.register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 5, 64, 96)
    assert calls == ["MaxPool2d"] * 5 + ["MaxUnpool2d"] * 5

    # the graph an exporter sees holds the indexed pooling and the unpooling
    graph = torch.export.export(model, (x,)).graph
    targets = [str(node.target) for node in graph.nodes if node.op == "call_function"]
    assert sum("max_pool2d_with_indices" in t for t in targets) == 5
    assert sum("max_unpool2d" in t for t in targets) == 5


def test_unpooling_puts_values_at_the_encoders_argmax() -> None:
    torch.manual_seed(0)
    model = build_model("segnet", size="tiny", num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        pooled, indices = model.backbone.forward_with_indices(x)
        unpooled = model.classifier.unpools[4](pooled[4], indices[4])
    assert unpooled.shape == (1, 64, 4, 4)
    # each 2x2 window keeps exactly one value, at the position the pool chose
    flat = unpooled.flatten(2)
    assert torch.equal(flat.gather(2, indices[4].flatten(2)), pooled[4].flatten(2))
    assert int((unpooled != 0).sum()) <= pooled[4].numel()


def test_encoder_keeps_the_backbone_contract() -> None:
    model = build_model("segnet", size="tiny", num_classes=5).eval()
    info = model.backbone.feature_info
    assert info.channels == (24, 32, 48, 64, 64)
    assert info.reductions == (2, 4, 8, 16, 32)
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [
        (1, c, 64 // r, 96 // r) for c, r in zip(info.channels, info.reductions)
    ]


def test_paper_forward_and_decoder_layout() -> None:
    torch.manual_seed(0)
    model = build_model("segnet", size="paper", num_classes=21).eval()
    convs = [
        [(c.in_channels, c.out_channels) for c in stage.modules() if isinstance(c, nn.Conv2d)]
        for stage in model.classifier.stages
    ]
    assert convs == [
        [(64, 64)],
        [(128, 128), (128, 64)],
        [(256, 256), (256, 256), (256, 128)],
        [(512, 512), (512, 512), (512, 256)],
        [(512, 512), (512, 512), (512, 512)],
    ]
    assert (model.classifier.cls.in_channels, model.classifier.cls.kernel_size) == (64, (3, 3))
    assert sum(p.numel() for p in model.parameters()) == 29_451_413
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 21, 64, 64)
