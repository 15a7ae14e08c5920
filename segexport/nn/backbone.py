"""The backbone contract shared by every encoder.

A backbone is an ``nn.Module`` whose ``forward`` returns a list of feature maps, one per
stage, and which declares what it returns: ``channels[i]`` and ``reductions[i]`` (input size
divided by the size of feature ``i``). Heads pick features by index and trust the
declaration; one generic test enforces it for every backbone.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from segexport.errors import ConfigError


@dataclass(frozen=True)
class FeatureInfo:
    """What a backbone returns: channels and reduction per stage, shallowest first."""

    channels: tuple[int, ...]
    reductions: tuple[int, ...]

    @property
    def output_stride(self) -> int:
        return self.reductions[-1]


class Backbone(nn.Module):
    """Base class. Subclasses set ``self.feature_info`` in ``__init__`` and define
    ``forward(x: Tensor) -> list[Tensor]`` returning one feature map per declared stage."""

    feature_info: FeatureInfo


def dilated_stages(reductions: tuple[int, ...], output_stride: int) -> list[bool]:
    """Which stages trade their stride for dilation to reach ``output_stride``.

    Args:
        reductions: nominal reduction of each stage without dilation (e.g. 4, 8, 16, 32).
        output_stride: the reduction the deepest feature map should have.

    Returns:
        One flag per stage, True where the stage keeps stride 1 and dilates instead
        (DeepLab's atrous trick; torchvision's ``replace_stride_with_dilation``).

    Raises:
        ConfigError: if ``output_stride`` is not one of the nominal reductions.
    """
    if output_stride not in reductions:
        raise ConfigError(
            f"output stride {output_stride} is not supported by this backbone; "
            f"choose one of {sorted(set(reductions))}"
        )
    return [red > output_stride for red in reductions]
