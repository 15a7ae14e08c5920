"""Host dense CRF: exact filtering against brute force, edge snapping, lattice accuracy, batch order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segexport.data import Preprocess, load_arrays, open_dataset
from segexport.errors import ConfigError, InputError
from segexport.postprocess import EXACT_MAX_PIXELS, CrfParams, dense_crf
from segexport.postprocess.dense_crf import appearance_features
from segexport.postprocess.filters import SpatialGaussian, exact_gaussian_filter
from segexport.postprocess.lattice import PermutohedralLattice

PARAMS = CrfParams(appearance_weight=5.0, appearance_xy=8.0, appearance_rgb=12.0,
                   smoothness_weight=3.0, smoothness_xy=1.5, iterations=5)


def _brute_force_crf(logits: np.ndarray, image: np.ndarray, p: CrfParams) -> np.ndarray:
    """Mean field with the full (N, N) kernel matrices written out from the definitions."""
    c, h, w = logits.shape
    yy, xx = np.mgrid[:h, :w]
    pos = np.stack([yy.ravel(), xx.ravel()], 1).astype(np.float64)
    rgb = image.reshape(-1, 3).astype(np.float64)
    d_pos = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    d_rgb = ((rgb[:, None] - rgb[None]) ** 2).sum(-1)
    ka = np.exp(-d_pos / (2 * p.appearance_xy**2) - d_rgb / (2 * p.appearance_rgb**2))
    ks = np.exp(-d_pos / (2 * p.smoothness_xy**2))
    ka /= ka.sum(1, keepdims=True)
    ks /= ks.sum(1, keepdims=True)
    unary = logits.reshape(c, -1).T.astype(np.float64)
    energy = unary
    for _ in range(p.iterations):
        q = np.exp(energy - energy.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        energy = unary + p.appearance_weight * ka @ q + p.smoothness_weight * ks @ q
    return energy.T.reshape(c, h, w)


def _scenes(count: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    src = open_dataset("synthetic", "val", size=(side, side), seed=3, length=count)
    return load_arrays(src, Preprocess(size=(side, side)))


def _noisy_logits(masks: np.ndarray, classes: int, seed: int, noise: float = 1.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    onehot = np.eye(classes, dtype=np.float32)[np.minimum(masks, classes - 1)].transpose(0, 3, 1, 2)
    return (1.5 * onehot + rng.normal(0.0, noise, onehot.shape)).astype(np.float32)


def test_exact_filter_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    features = appearance_features(image, PARAMS)
    values = rng.random((len(features), 4))
    brute = np.array([np.exp(-0.5 * ((features - f) ** 2).sum(1)) @ values for f in features])
    np.testing.assert_allclose(exact_gaussian_filter(features, values), brute, rtol=1e-10, atol=0)


def test_spatial_filter_matches_brute_force() -> None:
    h, w, bandwidth = 13, 17, 2.5
    rng = np.random.default_rng(1)
    values = rng.random((h * w, 3)).astype(np.float32)
    yy, xx = np.mgrid[:h, :w]
    pos = np.stack([yy.ravel(), xx.ravel()], 1) / bandwidth
    brute = np.array([np.exp(-0.5 * ((pos - f) ** 2).sum(1)) @ values.astype(np.float64) for f in pos])
    got = SpatialGaussian(h, w, bandwidth).filter(torch.from_numpy(values)).numpy()
    np.testing.assert_allclose(got, brute, rtol=1e-4, atol=1e-5)


def test_exact_crf_matches_brute_force_mean_field() -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    logits = rng.normal(0.0, 2.0, (1, 4, 10, 12)).astype(np.float32)
    got = dense_crf(logits, image[None], PARAMS, method="exact")[0]
    want = _brute_force_crf(logits[0], image, PARAMS)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert np.abs(got - logits[0]).max() > 0.5  # the CRF did move the logits


@pytest.mark.parametrize("method", ["exact", "lattice"])
def test_noisy_unaries_snap_to_colour_edge(method: str) -> None:
    h, w, edge = 20, 28, 13
    rng = np.random.default_rng(4)
    image = np.empty((h, w, 3), dtype=np.uint8)
    image[:, :edge] = (200, 60, 40)
    image[:, edge:] = (40, 70, 190)
    image = np.clip(image.astype(int) + rng.integers(-4, 5, image.shape), 0, 255).astype(np.uint8)
    truth = np.broadcast_to(np.arange(w) >= edge, (h, w)).astype(np.int64)
    # Unaries whose boundary sits 4 pixels right of the colour edge, plus noise.
    margin = 0.6 * np.sign(np.arange(w) - (edge + 3.5))
    diff = margin[None, :] + rng.normal(0.0, 1.0, (h, w))
    logits = np.stack([-diff / 2, diff / 2])[None].astype(np.float32)
    params = CrfParams(appearance_weight=6.0, appearance_xy=20.0, appearance_rgb=10.0,
                       smoothness_weight=1.0, smoothness_xy=1.0, iterations=10)
    before = logits[0].argmax(0)
    after = dense_crf(logits, image[None], params, method=method)[0].argmax(0)
    assert (before != truth).mean() > 0.2
    np.testing.assert_array_equal(after, truth)


def test_lattice_agrees_with_exact_on_a_scene() -> None:
    images, masks = _scenes(2, 48)
    logits = _noisy_logits(masks, 8, seed=5)
    exact = dense_crf(logits, images, PARAMS, method="exact")
    lattice = dense_crf(logits, images, PARAMS, method="lattice")
    assert (exact.argmax(1) == lattice.argmax(1)).mean() >= 0.97
    # Both clean up the noise: better than the unaries against the true masks.
    noisy = (logits.argmax(1) == masks).mean()
    assert (lattice.argmax(1) == masks).mean() > noisy + 0.1


def test_lattice_normalised_messages_close_to_exact() -> None:
    images, _ = _scenes(1, 40)
    features = appearance_features(images[0], PARAMS)
    values = np.random.default_rng(6).random((len(features), 3))
    lattice = PermutohedralLattice(features)
    approx = lattice.filter(torch.from_numpy(values.astype(np.float32))).numpy()
    approx /= lattice.filter(torch.ones(len(features), 1)).numpy()
    exact = exact_gaussian_filter(features, values) / exact_gaussian_filter(features, np.ones((len(features), 1)))
    assert np.abs(approx - exact).mean() < 0.01


def test_result_independent_of_batch_order_and_size() -> None:
    images, masks = _scenes(3, 32)
    logits = _noisy_logits(masks, 8, seed=7)
    full = dense_crf(logits, images, PARAMS)
    order = [2, 0, 1]
    permuted = dense_crf(logits[order], images[order], PARAMS)
    np.testing.assert_array_equal(permuted, full[order])
    np.testing.assert_array_equal(dense_crf(logits[1:2], images[1:2], PARAMS), full[1:2])


def test_zero_iterations_returns_the_logits() -> None:
    images, masks = _scenes(1, 16)
    logits = _noisy_logits(masks, 8, seed=8)
    out = dense_crf(logits, images, CrfParams(iterations=0))
    np.testing.assert_array_equal(out, logits)


def test_bad_inputs_are_one_line_errors() -> None:
    images, masks = _scenes(1, 16)
    logits = _noisy_logits(masks, 8, seed=9)
    with pytest.raises(InputError, match="images must be uint8"):
        dense_crf(logits, images[:, :8], PARAMS)
    with pytest.raises(InputError, match="logits must be float"):
        dense_crf(logits[0], images, PARAMS)
    with pytest.raises(ConfigError, match="method"):
        dense_crf(logits, images, PARAMS, method="fast")
    side = int(EXACT_MAX_PIXELS**0.5) + 1
    big = np.zeros((1, side, side, 3), dtype=np.uint8)
    with pytest.raises(ConfigError, match="use method='lattice'"):
        dense_crf(np.zeros((1, 2, side, side), np.float32), big, PARAMS, method="exact")
    with pytest.raises(ConfigError, match="appearance_rgb"):
        CrfParams(appearance_rgb=0.0)
