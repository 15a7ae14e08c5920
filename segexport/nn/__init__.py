"""Backbones (one file per family) and shared blocks, with a registry by name."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

from segexport.errors import ConfigError, UnknownNameError
from segexport.nn.backbone import Backbone, FeatureInfo
from segexport.nn.mobilenetv2 import mobilenet_v2, mobilenet_v2_tiny
from segexport.nn.resnet import resnet18, resnet50, resnet101, resnet_tiny
from segexport.nn.vgg import vgg16, vgg16_bn, vgg_tiny
from segexport.nn.xception import xception65, xception_tiny

__all__ = ["BACKBONES", "Backbone", "FeatureInfo", "build_backbone"]


def _registry(*builders: Callable[..., Backbone]) -> dict[str, Callable[..., Backbone]]:
    registry: dict[str, Callable[..., Backbone]] = {}
    for builder in builders:
        if builder.__name__ in registry:
            raise ValueError(f"backbone {builder.__name__!r} is registered twice")
        registry[builder.__name__] = builder
    return registry


BACKBONES: dict[str, Callable[..., Backbone]] = _registry(
    resnet18, resnet50, resnet101, resnet_tiny,
    vgg16, vgg16_bn, vgg_tiny,
    mobilenet_v2, mobilenet_v2_tiny,
    xception65, xception_tiny,
)  # fmt: skip


def build_backbone(name: str, **kwargs: object) -> Backbone:
    """Build a registered backbone by name.

    Args:
        name: a key of ``BACKBONES`` (e.g. ``"resnet50"``).
        **kwargs: the builder's keyword options (e.g. ``output_stride=8``).

    Raises:
        UnknownNameError: if ``name`` is not registered (the message suggests close names).
        ConfigError: if an option is not one the builder takes, or its value is invalid.
    """
    if name not in BACKBONES:
        close = difflib.get_close_matches(name, BACKBONES, n=3)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise UnknownNameError(f"unknown backbone {name!r}; {hint}known: {', '.join(sorted(BACKBONES))}")
    builder = BACKBONES[name]
    signature = inspect.signature(builder)
    unknown = sorted(set(kwargs) - set(signature.parameters))
    if unknown:
        raise ConfigError(
            f"backbone {name!r} takes no option {', '.join(unknown)}; its options are {', '.join(signature.parameters)}"
        )
    return builder(**kwargs)
