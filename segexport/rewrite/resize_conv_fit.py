"""Least-squares fit of bilinear resize + conv to a learned transposed convolution.

Used by the ``deconv_to_resize`` rule for transposed convs that are not bilinear kernels
(U-Net's learned 2x2 stride-2 upsamplers, trained FCN deconvs). A resize followed by a
spatially invariant conv cannot represent every transposed conv (a 2x2 stride-2 one applies
a different kernel to each of the four output phases), so the fit is an approximation whose
residual is reported, and the rule keeps it only when the whole model's predictions hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from segexport.rewrite.bilinear import BilinearUpsample

# Rows of the design matrix turned into float64 at a time (bounds the fit's peak memory).
ROW_CHUNK = 1 << 16
# Ridge relative to the mean diagonal of the normal equations: enough to solve systems made
# singular by dead (all-zero) input channels, far below anything that moves the fit.
RIDGE = 1e-9


def _upsample(x: torch.Tensor, factor: int, edge: BilinearUpsample | None) -> torch.Tensor:
    if edge is not None:
        return edge(x)
    return F.interpolate(x, scale_factor=float(factor), mode="bilinear", align_corners=False)


class ResizeConv(nn.Module):
    """Bilinear resize by ``factor`` (half-pixel, ``align_corners=False``) then ``conv``.

    Args:
        factor: upsampling factor.
        conv: the fitted conv.
        edge_correction: resize with the zero-border gain of a bilinear deconv
            (:class:`BilinearUpsample`) instead of the plain, edge-clamping resize.
    """

    def __init__(self, factor: int, conv: nn.Conv2d, *, edge_correction: bool = False) -> None:
        super().__init__()
        self.factor = factor
        self.edge = BilinearUpsample(factor) if edge_correction else None
        self.conv = conv

    def extra_repr(self) -> str:
        return f"factor={self.factor}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_upsample(x, self.factor, self.edge))


@dataclass(frozen=True)
class ResizeConvFit:
    """A fitted :class:`ResizeConv` and how well it reproduces the transposed conv.

    Attributes:
        module: the replacement.
        rmse: root mean square residual over every fitted output value.
        relative_residual: ||fit - target|| / ||target|| over every fitted output value.
        values: number of output values fitted (pixels x channels).
    """

    module: ResizeConv
    rmse: float
    relative_residual: float
    values: int


def _design(features: torch.Tensor, factor: int, kernel: int, edge: BilinearUpsample | None) -> torch.Tensor:
    """``[pixels, cin*k*k + 1]``: each resized pixel's k x k neighbourhood, plus a bias column."""
    up = _upsample(features, factor, edge)
    cols = F.unfold(up, kernel, padding=kernel // 2)  # [N, cin*k*k, L], conv weight order
    ones = torch.ones_like(cols[:, :1])
    return torch.cat([cols, ones], dim=1).transpose(1, 2).reshape(-1, cols.shape[1] + 1)


@torch.no_grad()
def _fit(
    deconv: nn.ConvTranspose2d, features: torch.Tensor, factor: int, kernel: int, edge_correction: bool
) -> ResizeConvFit:
    """Solve the normal equations in float64, accumulated image by image."""
    edge = BilinearUpsample(factor) if edge_correction else None
    cout = deconv.out_channels
    d = deconv.in_channels * kernel * kernel + 1
    gram = torch.zeros(d, d, dtype=torch.float64)
    cross = torch.zeros(d, cout, dtype=torch.float64)
    target_sq, values = 0.0, 0
    for image in features.split(1):
        design = _design(image, factor, kernel, edge)
        target = deconv(image).flatten(2).transpose(1, 2).reshape(-1, cout)
        for a, t in zip(design.split(ROW_CHUNK), target.split(ROW_CHUNK)):
            a, t = a.double(), t.double()
            gram += a.T @ a
            cross += a.T @ t
            target_sq += float((t * t).sum())
        values += target.numel()
    ridge = RIDGE * float(gram.diagonal().mean()) + 1e-30
    w = torch.linalg.solve(gram + ridge * torch.eye(d, dtype=torch.float64), cross)
    # ||A w - t||^2 from the accumulated normal equations (no second pass over the data).
    sse = max(float((w * (gram @ w)).sum() - 2 * (w * cross).sum()) + target_sq, 0.0)
    conv = nn.Conv2d(deconv.in_channels, cout, kernel, padding=kernel // 2)
    conv.weight.copy_(w[:-1].T.reshape(cout, deconv.in_channels, kernel, kernel).float())
    conv.bias.copy_(w[-1].float())
    return ResizeConvFit(
        module=ResizeConv(factor, conv, edge_correction=edge_correction).eval(),
        rmse=(sse / max(values, 1)) ** 0.5,
        relative_residual=(sse / target_sq) ** 0.5 if target_sq > 0 else 0.0,
        values=values,
    )


def fit_resize_conv(
    deconv: nn.ConvTranspose2d, features: torch.Tensor, factor: int, kernel: int = 3
) -> ResizeConvFit:
    """Fit resize + ``kernel x kernel`` conv to reproduce ``deconv`` on ``features``.

    Two resize stages are fitted and the one with the smaller residual wins: the plain
    resize, and (even factors) the resize with a bilinear deconv's zero-border gain, which
    makes a deconv that is still close to its bilinear initialisation fit at the borders too.

    Args:
        deconv: the transposed conv to reproduce; its output must be ``factor`` x its input.
        features: inputs of ``deconv`` collected from calibration images ``[N, Cin, h, w]``.
        factor: the deconv's stride.
        kernel: side of the fitted conv (odd).

    Returns:
        The better fitted module and its residuals on ``features``.
    """
    edges = (False, True) if factor % 2 == 0 else (False,)
    fits = [_fit(deconv, features, factor, kernel, edge) for edge in edges]
    return min(fits, key=lambda f: f.relative_residual)
