"""One test parametrised over every registered architecture, plus registry behaviour."""

import pytest
import torch

from segexport.errors import ConfigError, UnknownNameError
from segexport.models import build_model, check_input_size, get_entry, list_models
from segexport.models.registry import register_model

NAMES = [e.name for e in list_models() if e.task == "semantic"]  # instance ones: test_instance_models.py


@pytest.mark.parametrize("name", NAMES)
def test_tiny_forward_backward_and_determinism(name):
    torch.manual_seed(0)
    model = build_model(name, size="tiny", num_classes=5)
    d = model.input_divisor
    h, w = 2 * max(d, 32), 3 * max(d, 32)
    x = torch.randn(2, 3, h, w)
    model.train()
    out, aux, *presence = model.forward_train(x)  # presence: class-presence logits (EncNet's SE head)
    assert out.shape == (2, 5, h, w)
    if aux is not None:
        assert aux.shape == (2, 5, h, w)
    loss = out.square().mean() + (aux.square().mean() if aux is not None else 0)
    for logits in presence:
        assert logits.shape == (2, 5)
        loss = loss + logits.square().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert a.shape == (2, 5, h, w)
    assert torch.equal(a, b)


def test_unknown_name_suggests_nearest():
    with pytest.raises(UnknownNameError, match="did you mean deeplabv3p"):
        get_entry("deeplabv3plus")


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="registered twice"):
        register_model("fcn8s", summary="", paper="")(lambda **kw: None)


def test_unknown_option_and_size():
    with pytest.raises(ConfigError, match="does not take"):
        build_model("fcn8s", backbone="resnet50")
    with pytest.raises(ConfigError, match="unknown size"):
        build_model("fcn8s", size="huge")


def test_input_size_error_names_nearest_sizes():
    model = build_model("fcn8s", size="tiny", num_classes=3)
    check_input_size(model, 128, 96)
    with pytest.raises(ConfigError, match=r"use 96x96 or 128x128"):
        check_input_size(model, 100, 100)


@pytest.mark.parametrize(("size", "smallest"), [("tiny", 64), ("paper", 224)])
def test_deconvnet_refuses_inputs_its_valid_fc6_cannot_cover(size, smallest):
    with torch.device("meta"):
        model = build_model("deconvnet", size=size, num_classes=3)
    check_input_size(model, smallest, smallest + 32)
    with torch.device("meta"):
        check_input_size(build_model("maskrcnn", size=size, num_classes=3), 32, 32)  # no smallest side of its own
    with pytest.raises(ConfigError, match=rf"at least {smallest}; use {smallest}x{smallest + 32}"):
        check_input_size(model, smallest - 32, smallest + 32)
