"""Mean-field inference of the fully connected CRF with Gaussian edge potentials on the host.

Krähenbühl and Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
Potentials", NIPS 2011 (https://arxiv.org/abs/1210.5644). With unaries ``-logits`` and Potts
compatibility, one mean-field update is

    Q = softmax(logits + w1 * A(Q) + w2 * S(Q))

where ``A(Q)_i = sum_j k_a(i, j) Q_j / sum_j k_a(i, j)`` is the appearance message (position
over ``theta_alpha`` and colour over ``theta_beta``) and ``S`` the smoothness message
(position over ``theta_gamma``), both normalised per pixel as in the densecrf code DeepLab
used (the sums include j = i). The refined logits ``logits + w1 A + w2 S`` of the last update
are returned; their softmax is the CRF's marginal and their argmax its labels.

Filtering methods:

- ``"lattice"`` (default): the appearance kernel on a permutohedral lattice (approximate, see
  :mod:`segexport.postprocess.lattice`), the smoothness kernel as a separable convolution
  (exact to ~4e-6 of its peak).
- ``"exact"``: both kernels by direct O(N^2) summation; only for images of at most
  ``EXACT_MAX_PIXELS`` pixels. It is the reference the lattice is measured against.

Images are independent: each is refined alone, so the result does not depend on batch order
or batch size.
"""

from __future__ import annotations

import numpy as np
import torch

from segexport.errors import ConfigError, InputError
from segexport.postprocess.filters import SpatialGaussian, exact_gaussian_filter
from segexport.postprocess.lattice import PermutohedralLattice
from segexport.postprocess.params import CrfParams

METHODS = ("lattice", "exact")
EXACT_MAX_PIXELS = 64 * 64  # the exact method recomputes (N, N) kernels at every iteration


def _check_inputs(logits: np.ndarray, images: np.ndarray) -> None:
    if logits.ndim != 4 or not np.issubdtype(logits.dtype, np.floating):
        raise InputError(f"logits must be float (N, C, H, W), got {logits.dtype} of shape {logits.shape}")
    n, _, h, w = logits.shape
    if images.dtype != np.uint8 or images.shape != (n, h, w, 3):
        raise InputError(
            f"images must be uint8 (N, H, W, 3) = {(n, h, w, 3)} matching the logits, "
            f"got {images.dtype} of shape {images.shape}"
        )


def _positions(height: int, width: int) -> np.ndarray:
    """(H*W, 2) pixel positions (y, x) in row-major order."""
    yy, xx = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


def appearance_features(image: np.ndarray, params: CrfParams) -> np.ndarray:
    """(H*W, 5) features (y, x over theta_alpha; r, g, b over theta_beta) of an (H, W, 3) uint8 image."""
    h, w, _ = image.shape
    colour = image.reshape(-1, 3).astype(np.float64) / params.appearance_rgb
    return np.concatenate([_positions(h, w) / params.appearance_xy, colour], axis=1)


class _Kernels:
    """The weighted, normalised pairwise operator of one image, built once for all iterations."""

    def __init__(self, image: np.ndarray, params: CrfParams, method: str) -> None:
        h, w, _ = image.shape
        self.method = method
        if method == "exact":
            self._fa = appearance_features(image, params)
            self._fs = _positions(h, w) / params.smoothness_xy
        else:
            self._lattice = PermutohedralLattice(appearance_features(image, params))
            self._spatial = SpatialGaussian(h, w, params.smoothness_xy)
        norm_a, norm_s = self._raw(torch.ones(h * w, 1))
        # Kernel weight over the kernel's sum at each pixel: one multiply per message.
        self._wa = params.appearance_weight / norm_a
        self._ws = params.smoothness_weight / norm_s

    def _raw(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised appearance and smoothness sums of ``q`` (H*W, C)."""
        if self.method == "exact":
            a = torch.from_numpy(exact_gaussian_filter(self._fa, q.numpy()).astype(np.float32))
            s = torch.from_numpy(exact_gaussian_filter(self._fs, q.numpy()).astype(np.float32))
            return a, s
        return self._lattice.filter(q), self._spatial.filter(q)

    def pairwise(self, q: torch.Tensor) -> torch.Tensor:
        """``w1 * A(q) + w2 * S(q)`` for marginals ``q`` (H*W, C), in a new tensor."""
        a, s = self._raw(q)
        return a.mul_(self._wa).addcmul_(s, self._ws)


def refine_one(logits: np.ndarray, image: np.ndarray, params: CrfParams, method: str = "lattice") -> np.ndarray:
    """CRF-refined logits ``(C, H, W)`` float32 of one image's logits ``(C, H, W)`` and ``(H, W, 3)`` uint8 image."""
    c, h, w = logits.shape
    unary = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32).reshape(c, h * w).T.copy())
    if params.iterations == 0:
        return unary.T.reshape(c, h, w).numpy().copy()
    kernels = _Kernels(image, params, method)
    energy = unary
    for _ in range(params.iterations):
        energy = kernels.pairwise(torch.softmax(energy, dim=1)).add_(unary)
    return energy.T.reshape(c, h, w).contiguous().numpy()


def dense_crf(
    logits: np.ndarray, images: np.ndarray, params: CrfParams | None = None, *, method: str = "lattice"
) -> np.ndarray:
    """Refine a batch of logits with the fully connected CRF (see the module docstring).

    Args:
        logits: float ``(N, C, H, W)`` from any runner, at the images' size.
        images: uint8 ``(N, H, W, 3)`` RGB images the logits were computed from (not normalised).
        params: weights, bandwidths, iterations (default: DeepLab v1's published values).
        method: "lattice" or "exact" (small images only).

    Returns:
        float32 ``(N, C, H, W)`` refined logits; ``argmax(1)`` gives the CRF labels.

    Raises:
        InputError: shapes or dtypes that do not fit together.
        ConfigError: an unknown method, or "exact" on an image above ``EXACT_MAX_PIXELS``.
    """
    params = params or CrfParams()
    logits = np.asarray(logits)
    images = np.asarray(images)
    _check_inputs(logits, images)
    if method not in METHODS:
        raise ConfigError(f"CRF method must be one of {', '.join(METHODS)}, got {method!r}")
    h, w = logits.shape[2:]
    if method == "exact" and h * w > EXACT_MAX_PIXELS:
        raise ConfigError(
            f"the exact CRF is O(pixels^2) and limited to {EXACT_MAX_PIXELS} pixels, got {h}x{w}; use method='lattice'"
        )
    out = np.empty(logits.shape, dtype=np.float32)
    for i in range(len(logits)):
        out[i] = refine_one(logits[i], images[i], params, method)
    return out
