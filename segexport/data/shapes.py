"""Shape rasterisers for the synthetic data set.

Each shape is an inside-test in its own local frame, where the shape fills roughly the unit
disk. ``rasterize_shape`` maps the pixel grid of a window into that frame (translation,
rotation, anisotropic scale) and evaluates the test there, so the cost scales with the
shape's size rather than with the image's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

InsideTest = Callable[[np.ndarray, np.ndarray], np.ndarray]

_COS30 = float(np.cos(np.pi / 6))


def _disk(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v < 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Half-side 0.85: about the area of the unit disk, corners reach 1.2.
    return np.maximum(np.abs(u), np.abs(v)) < 0.85


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Equilateral, centroid at the origin, edges 0.6 from it (vertices at radius 1.2).
    return (v > -0.6) & (_COS30 * u + 0.5 * v < 0.6) & (-_COS30 * u + 0.5 * v < 0.6)


def _ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r2 = u * u + v * v
    return (r2 > 0.55**2) & (r2 < 1.0)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return ((au < 0.3) & (av < 1.0)) | ((av < 0.3) & (au < 1.0))


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Polar radius falls linearly from the 5 points (1.1) to the notches between them (0.45).
    turns = np.arctan2(v, u) * (5.0 / (2.0 * np.pi)) % 1.0
    from_point = 2.0 * np.minimum(turns, 1.0 - turns)
    radius = 1.1 - 0.65 * from_point
    return u * u + v * v < radius * radius


def _crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u * u + v * v < 1.0) & ((u - 0.45) ** 2 + v * v >= 0.8**2)


SHAPE_TESTS: dict[str, InsideTest] = {
    "disk": _disk,
    "square": _square,
    "triangle": _triangle,
    "ring": _ring,
    "cross": _cross,
    "star": _star,
    "crescent": _crescent,
}
"""Inside-test per shape class name, in the local frame."""

SHAPE_EXTENT = 1.25
"""Largest local radius any shape reaches (with margin): sizes the raster window."""


@dataclass(frozen=True)
class Placement:
    """Where a shape sits: centre in pixels, scale along its own axes in pixels, rotation."""

    cy: float
    cx: float
    scale_y: float
    scale_x: float
    angle: float

    @property
    def reach(self) -> float:
        """Radius in pixels of a disk around the centre that contains the whole shape."""
        return SHAPE_EXTENT * max(self.scale_x, self.scale_y)


def rasterize_shape(
    test: InsideTest, placement: Placement, height: int, width: int
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Rasterise one shape on the pixel grid (pixel centres at integer coordinates).

    Returns:
        ``(window, inside)``: the window as (row slice, column slice) of the image and a
        boolean array of the window's shape marking covered pixels; ``None`` when the shape
        misses the image entirely.
    """
    p = placement
    reach = p.reach
    y0, y1 = max(int(p.cy - reach), 0), min(int(np.ceil(p.cy + reach)) + 1, height)
    x0, x1 = max(int(p.cx - reach), 0), min(int(np.ceil(p.cx + reach)) + 1, width)
    if y0 >= y1 or x0 >= x1:
        return None
    dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(p.cy))[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(p.cx))[None, :]
    cos, sin = np.float32(np.cos(p.angle)), np.float32(np.sin(p.angle))
    u = (cos * dx + sin * dy) * np.float32(1.0 / p.scale_x)
    v = (cos * dy - sin * dx) * np.float32(1.0 / p.scale_y)
    return (slice(y0, y1), slice(x0, x1)), test(u, v)
