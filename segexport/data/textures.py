"""Fill textures and whole-image effects for the synthetic data set.

Every region, background included, draws its fill from ``random_texture``, so colour and
texture statistics say nothing about the class: a network has to look at shape and context.
Arrays here are float32, channels first (3xHxW), values nominally in [0, 1].
"""

from __future__ import annotations

import numpy as np

TEXTURE_KINDS = ("flat", "stripes", "checker", "noise")


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """A base colour, 3 floats in [0.08, 0.92] (room left for texture contrast and lighting)."""
    return rng.uniform(0.08, 0.92, size=3).astype(np.float32)


def _rotated_coordinate(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates along and across a random direction, as broadcastable (h,1)/(1,w) sums."""
    angle = rng.uniform(0.0, np.pi)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    return cos * xs + sin * ys, cos * ys - sin * xs


def _stripes(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    along, _ = _rotated_coordinate(rng, height, width)
    period = rng.uniform(3.0, 10.0)
    wave = np.sin(along * np.float32(2.0 * np.pi / period) + np.float32(rng.uniform(0.0, 2.0 * np.pi)))
    if rng.random() < 0.5:
        return (wave > 0).astype(np.float32)
    return wave * np.float32(0.5) + np.float32(0.5)


def _checker(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    along, across = _rotated_coordinate(rng, height, width)
    cell = np.float32(rng.uniform(3.0, 8.0))
    cells = np.floor(along / cell) + np.floor(across / cell)
    return (cells % 2).astype(np.float32)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Values in [0, 1] varying smoothly over about ``cell`` pixels (bilinear value noise)."""
    grid_h, grid_w = int(height / cell) + 2, int(width / cell) + 2
    grid = rng.random((grid_h, grid_w), dtype=np.float32)
    top, fy = _knots(height, grid_h)
    left, fx = _knots(width, grid_w)
    rows = grid[top] + (grid[top + 1] - grid[top]) * fy[:, None]
    return rows[:, left] + (rows[:, left + 1] - rows[:, left]) * fx[None, :]


def _knots(size: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """For ``size`` points spread evenly over ``grid`` knots: the knot left of each, and the fraction."""
    pos = np.linspace(0.0, grid - 1.0, size, endpoint=False, dtype=np.float32) + np.float32(0.5)
    left = np.minimum(pos.astype(np.int64), grid - 2)
    return left, pos - left


def random_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A 3xHxW fill: a random base colour, flat or modulated by stripes, checks or smooth noise."""
    base = random_colour(rng)
    kind = TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))]
    if kind == "flat":
        return np.broadcast_to(base[:, None, None], (3, height, width)).copy()
    if kind == "stripes":
        pattern = _stripes(rng, height, width)
    elif kind == "checker":
        pattern = _checker(rng, height, width)
    else:
        pattern = smooth_noise(rng, height, width, cell=rng.uniform(6.0, 20.0))
    # The second colour is a bounded offset from the base, so patterns stay within one region.
    offset = rng.uniform(-0.2, 0.2, size=3).astype(np.float32)
    return base[:, None, None] + offset[:, None, None] * (pattern[None] - np.float32(0.5))


def apply_lighting(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Global contrast and brightness, then a linear brightness ramp in a random direction."""
    _, height, width = image.shape
    contrast = np.float32(rng.uniform(0.7, 1.25))
    brightness = np.float32(rng.uniform(-0.12, 0.12))
    image = (image - np.float32(0.5)) * contrast + (np.float32(0.5) + brightness)
    along, _ = _rotated_coordinate(rng, height, width)
    span = max(height, width)
    ramp = np.float32(1.0) + np.float32(rng.uniform(0.0, 0.35) / span) * (along - along.mean())
    return image * ramp[None]


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a CxHxW float32 image, borders extended by their edge pixels.

    Shifted sums rather than matrix products: no BLAS threads fighting over shared cores, and
    the result does not depend on the BLAS build.
    """
    radius = int(np.ceil(2.5 * sigma))
    if sigma < 0.2 or radius < 1:
        return image
    taps = np.exp(-0.5 * (np.arange(radius + 1) / sigma) ** 2)
    taps = (taps / (taps[0] + 2.0 * taps[1:].sum())).astype(np.float32)
    return _blur_axis(_blur_axis(image, taps, axis=1), taps, axis=2)


def _blur_axis(image: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """Convolve one axis with the symmetric kernel ``taps[r], ..., taps[0], ..., taps[r]``."""
    radius = len(taps) - 1
    size = image.shape[axis]
    first = image.take([0] * radius, axis=axis)
    last = image.take([size - 1] * radius, axis=axis)
    padded = np.concatenate([first, image, last], axis=axis)

    def shifted(offset: int) -> np.ndarray:
        index = [slice(None)] * image.ndim
        index[axis] = slice(radius + offset, radius + offset + size)
        return padded[tuple(index)]

    out = shifted(0) * taps[0]
    pair = np.empty_like(out)
    for offset in range(1, radius + 1):
        np.add(shifted(-offset), shifted(offset), out=pair)
        pair *= taps[offset]
        out += pair
    return out


def add_noise(rng: np.random.Generator, image: np.ndarray, std: float) -> np.ndarray:
    """Additive pixel noise of standard deviation ``std`` (in [0, 1] units).

    Uniform rather than Gaussian: drawing uniforms is about 4x cheaper, and at these levels
    (a few grey levels) the shape of the noise distribution does not matter for training.
    """
    noise = rng.random(image.shape, dtype=np.float32)
    noise -= np.float32(0.5)
    noise *= np.float32(std * np.sqrt(12.0))
    return image + noise
