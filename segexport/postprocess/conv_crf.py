"""An engine-friendly CRF: mean field over a local window (ConvCRF) in plain torch ops.

Teichmann and Cipolla, "Convolutional CRFs for Semantic Segmentation", BMVC 2019
(https://arxiv.org/abs/1805.04777): the fully connected CRF's messages restricted to a
``window x window`` neighbourhood (optionally dilated), so that inference is a fixed number of
convolution-like steps that export to ONNX and run inside an engine.

The kernels and the update are the host CRF's (:mod:`segexport.postprocess.dense_crf`):
appearance (position over theta_alpha, colour over theta_beta) and smoothness (position over
theta_gamma), Potts compatibility, messages normalised per pixel by the kernel's sum over the
window (centre included, outside the image excluded). Only the window differs, which is why
agreement with the host CRF is measured and reported, not assumed.

Export: the window is read with a convolution whose weights are one-hot (one output channel per
offset), not ``unfold`` (no ONNX operator), and summed with a 1x1 convolution of ones;
everything else is Mul, Add, Exp, Div, Softmax and Reshape, which TensorRT's ONNX parser
accepts. The window tensor holds ``window^2`` copies of the class scores: memory and the
one-hot convolution's work grow with ``window^4``, which is why the window is small.

Numerics and the default of 3 iterations: with DeepLab's weights (w1 + w2 well above 4) a
mean-field step is not contractive at pixels where two classes nearly tie, so the map from
logits to refined logits gets worse conditioned with every iteration. Measured on the trained
tiny deeplabv1 (recipe weights, 32 val images, the same float32 logits in;
``benchmarks/crf_conditioning.py``): PyTorch's own float32 result differs from its float64
evaluation by at most 1.4e-5 after 3 iterations, 1.2e-4 after 5 and 6.5e-3 after 10, and a 1e-7
relative perturbation of the logits moves the output by up to 8.0e-5, 2.9e-4 and 7.7e-3. No float32 backend can reproduce a 10-iteration
graph to 1e-4 (ONNX Runtime is as close to float64 as PyTorch is), so the engine variant runs
:data:`DEFAULT_ITERATIONS` steps, whose output is reproducible to 1e-4 and which keep about
85% of the 10-step gain (val mIoU: deeplabv1 +5.0 of +5.8 points, deeplabv2 +3.2 of +3.7;
BENCHMARKS.md). The host CRF keeps the papers' 10 (its output is labels, not a verified graph).
The network in front still differs by a few ulps between backends, and the CRF amplifies that
too, which is why export measures the graph's CRF on PyTorch's logits
(:func:`segexport.postprocess.export.onnx_crf_error`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segexport.errors import ConfigError
from segexport.postprocess.params import CrfParams

# A 7x7 window with taps 3 pixels apart reaches 9 pixels: on the built-in data's calib split at
# 128x128 it recovered more of the host CRF's gain than dilation 1, 2 or 4 for v1 and v2
# alike (window 9 or 11 a little more, at (9/7)^4 or (11/7)^4 the cost).
DEFAULT_WINDOW = 7
DEFAULT_DILATION = 3
DEFAULT_ITERATIONS = 3  # see the module docstring


class ConvCRF(nn.Module):
    """Mean-field CRF over a local window, on logits and the normalised images they came from.

    Args:
        params: kernel weights, bandwidths and iterations (as for the host CRF).
        mean, std: the normalisation of the images (per RGB channel, in [0, 1] units); colours
            are recovered as ``(x * std + mean) * 255`` inside the graph.
        window: odd side of the neighbourhood, in taps.
        dilation: spacing of the window's taps in pixels (1: dense).

    Raises:
        ConfigError: an even or too small window, or a dilation below 1.
    """

    def __init__(
        self, params: CrfParams, *, mean: Sequence[float], std: Sequence[float],
        window: int = DEFAULT_WINDOW, dilation: int = DEFAULT_DILATION,
    ) -> None:
        super().__init__()
        if window < 3 or window % 2 == 0:
            raise ConfigError(f"ConvCRF window must be an odd integer >= 3, got {window}")
        if dilation < 1:
            raise ConfigError(f"ConvCRF dilation must be >= 1, got {dilation}")
        self.params, self.window, self.dilation = params, window, dilation
        steps = [(i - window // 2) * dilation for i in range(window)]
        self.offsets = [(dy, dx) for dy in steps for dx in steps]
        self.reach = (window // 2) * dilation
        sq = torch.tensor([float(dy * dy + dx * dx) for dy, dx in self.offsets]).reshape(1, -1, 1, 1)
        self.register_buffer("position_a", sq / (2 * params.appearance_xy**2), persistent=False)
        self.register_buffer("smooth", torch.exp(-sq / (2 * params.smoothness_xy**2)), persistent=False)
        self.register_buffer("ones", torch.ones(1, window * window, 1, 1), persistent=False)
        taps = torch.eye(window * window, dtype=torch.float32).reshape(-1, 1, window, window)
        self.register_buffer("taps", taps, persistent=False)
        for name, value in (("mean", mean), ("std", std)):
            self.register_buffer(name, torch.tensor(list(value), dtype=torch.float32).reshape(1, 3, 1, 1), persistent=False)

    def _window(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, C, window^2, H, W)``: every pixel's window, zeros outside
        the image. One convolution with one-hot weights (output channel k copies offset k):
        a single node whatever the window (a Slice per offset made graphs of thousands of
        nodes that took minutes to export)."""
        n, c, h, w = x.shape
        out = F.conv2d(x.reshape(n * c, 1, h, w), self.taps, padding=self.reach, dilation=self.dilation)
        return out.reshape(n, c, -1, h, w)

    def _sum_taps(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, window^2, H, W)`` -> ``(B, 1, H, W)`` summed over the window.

        A 1x1 convolution with ones rather than ReduceSum: ONNX Runtime's ReduceSum changes its
        summation order with the batch size (1-ulp differences between batch 1 and batch 4),
        its convolution does not, and verification requires identical per-image results.
        """
        return F.conv2d(x, self.ones)

    def pairwise(self, images: torch.Tensor) -> torch.Tensor:
        """Combined normalised kernel weights ``(N, 1, window^2, H, W)`` of normalised images."""
        p = self.params
        rgb = (images * self.std + self.mean) * 255.0
        d = self._window(rgb) - rgb.unsqueeze(2)
        colour = d[:, 0] ** 2 + d[:, 1] ** 2 + d[:, 2] ** 2  # (N, k2, H, W)
        inside = self._window(torch.ones_like(images[:, :1]))[:, 0]  # 1 where the tap is in the image
        appearance = torch.exp(-self.position_a - colour / (2 * p.appearance_rgb**2)) * inside
        smooth = self.smooth * inside
        weights = (p.appearance_weight * appearance / self._sum_taps(appearance)
                   + p.smoothness_weight * smooth / self._sum_taps(smooth))
        return weights.unsqueeze(1)

    def forward(self, logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Refined logits ``(N, C, H, W)`` from logits and the normalised images ``(N, 3, H, W)``."""
        n, c, h, w = logits.shape
        weights = self.pairwise(images)
        energy = logits
        for _ in range(self.params.iterations):
            window = self._window(torch.softmax(energy, dim=1)) * weights  # (N, C, k2, H, W)
            energy = logits + self._sum_taps(window.reshape(n * c, -1, h, w)).reshape(n, c, h, w)
        return energy


class CrfModel(nn.Module):
    """A segmentation model followed by a :class:`ConvCRF`: normalised images in, refined logits out.

    Args:
        model: maps normalised images ``(N, 3, H, W)`` to logits ``(N, C, H, W)``.
        crf: the CRF applied to its logits.
    """

    def __init__(self, model: nn.Module, crf: ConvCRF) -> None:
        super().__init__()
        self.model = model
        self.crf = crf

    @property
    def input_divisor(self) -> int:
        return int(getattr(self.model, "input_divisor", 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.crf(self.model(images), images)
