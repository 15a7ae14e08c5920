"""Bilinear upsampling that reproduces a bilinear-kernel transposed conv exactly, borders included.

The derivation is in :mod:`segexport.rewrite.deconv_to_resize`: the deconv equals the
half-pixel bilinear resize times a separable gain ``g`` that is 1 except on the first and last
``s/2`` rows and columns, where the deconv interpolates towards its implicit zero border.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def edge_gain(factor: int) -> torch.Tensor:
    """``g(o)`` for the first ``factor/2`` output rows (see the module docstring)."""
    o = torch.arange(factor // 2, dtype=torch.float64)
    return (0.5 + (o + 0.5) / factor).float()


def _scale_edges(y: torch.Tensor, gain: torch.Tensor, dim: int) -> torch.Tensor:
    """Multiply the first ``len(gain)`` slices of ``y`` along ``dim`` by ``gain``, the last by its mirror."""
    e = gain.shape[dim]
    head = y.narrow(dim, 0, e) * gain
    tail = y.narrow(dim, y.shape[dim] - e, e) * gain.flip(dim)
    return torch.cat([head, y.narrow(dim, e, y.shape[dim] - 2 * e), tail], dim=dim)


class BilinearUpsample(nn.Module):
    """Exact replacement of a bilinear-kernel ``ConvTranspose2d``: resize + fixed edge correction.

    Args:
        factor: the deconv's stride (even).
        bias: the deconv's bias, if any.
    """

    def __init__(self, factor: int, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.factor = factor
        gain = edge_gain(factor)
        self.register_buffer("row_gain", gain.view(-1, 1).clone())
        self.register_buffer("col_gain", gain.view(1, -1).clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone().view(1, -1, 1, 1))

    def extra_repr(self) -> str:
        return f"factor={self.factor}, bias={self.bias is not None}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.interpolate(x, scale_factor=float(self.factor), mode="bilinear", align_corners=False)
        y = _scale_edges(_scale_edges(y, self.row_gain, -2), self.col_gain, -1)
        return y if self.bias is None else y + self.bias
