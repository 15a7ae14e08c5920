"""Exact Gaussian filters for the dense CRF's messages.

- :func:`exact_gaussian_filter`: ``sum_j exp(-|f_i - f_j|^2 / 2) v_j`` over all pairs, in
  float64 blocks of rows: O(N^2), exact, for small images (``method="exact"``).
- :class:`SpatialGaussian`: the same sum when the features are the pixel positions only (the
  smoothness kernel), as a separable depthwise convolution truncated at five bandwidths
  (dropped taps weigh below exp(-12.5) ~ 4e-6 of the peak); O(N * bandwidth) per call.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

EXACT_BLOCK = 1024  # rows per block of the exact filter: a (1024, N) float64 kernel at a time
TRUNCATE_BANDWIDTHS = 5.0  # radius of the smoothness kernel, in bandwidths


def exact_gaussian_filter(features: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``out_i = sum_j exp(-|f_i - f_j|^2 / 2) values_j`` for every i, exactly.

    Args:
        features: ``(N, d)`` features, already divided by their bandwidths.
        values: ``(N, C)``.

    Returns:
        float64 ``(N, C)``.
    """
    f = torch.from_numpy(np.asarray(features, dtype=np.float64))
    v = torch.from_numpy(np.asarray(values, dtype=np.float64))
    out = torch.empty_like(v)
    for start in range(0, len(f), EXACT_BLOCK):
        block = f[start : start + EXACT_BLOCK]
        # (a - b)^2 accumulated feature by feature: no cancellation (unlike |a|^2 + |b|^2 - 2ab)
        # and one (block, N) array at a time.
        sq = torch.zeros(len(block), len(f), dtype=torch.float64)
        for k in range(f.shape[1]):
            sq += (block[:, k, None] - f[None, :, k]) ** 2
        out[start : start + EXACT_BLOCK] = torch.exp(-0.5 * sq) @ v
    return out.numpy()


class SpatialGaussian:
    """``out(p) = sum_q exp(-|p - q|^2 / (2 bandwidth^2)) v(q)`` on a ``height x width`` grid,
    for values laid out ``(height * width, C)`` (pixels row-major, channels last).

    Args:
        height, width: the grid.
        bandwidth: standard deviation in pixels.
    """

    def __init__(self, height: int, width: int, bandwidth: float) -> None:
        self.height, self.width = height, width
        self.radius = min(max(height, width) - 1, math.ceil(TRUNCATE_BANDWIDTHS * bandwidth))
        x = torch.arange(-self.radius, self.radius + 1, dtype=torch.float64)
        self._taps = torch.exp(-0.5 * (x / bandwidth) ** 2).to(torch.float32)

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Filter float32 ``(height * width, C)`` values; returns the same shape."""
        c, k, r = values.shape[1], len(self._taps), self.radius
        # A channels-last view of the (pixels, C) layout: no copy, and the layout oneDNN's
        # depthwise convolution is fastest in.
        x = values.view(1, self.height, self.width, c).permute(0, 3, 1, 2)
        x = F.conv2d(x, self._taps.view(1, 1, k, 1).expand(c, 1, k, 1).contiguous(), padding=(r, 0), groups=c)
        x = F.conv2d(x, self._taps.view(1, 1, 1, k).expand(c, 1, 1, k).contiguous(), padding=(0, r), groups=c)
        return x.permute(0, 2, 3, 1).reshape(self.height * self.width, c)
