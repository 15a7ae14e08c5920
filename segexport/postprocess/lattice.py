"""Gaussian filtering in feature space with the permutohedral lattice (Adams, Baek and Davis,
"Fast High-Dimensional Filtering Using the Permutohedral Lattice", Eurographics 2010).

Filtering ``out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j`` over N points with d-dimensional
features costs O(N^2) directly. The lattice splats every point onto the d+1 vertices of the
simplex enclosing it (barycentric weights), blurs along the d+1 lattice directions with a
[1/2, 1, 1/2] kernel, and slices back with the same weights: O(N d^2). The result is the
Gaussian sum only up to a factor that varies with the local density of points (about 0.3 to 1
for d = 5); the CRF divides it by the filtered constant 1, as Krähenbühl's densecrf (the code
DeepLab ran, whose scale factors these are) does, which cancels most of that: normalised
messages differ from exact ones by about 1e-3 on average on image features (see the tests).

Construction is vectorised numpy (rounding, ranking and hashing of every point at once,
vertices deduplicated with ``np.unique``); filtering is two torch CSR sparse products and
2(d+1) row gathers per call, so one lattice serves every mean-field iteration.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from segexport.errors import ConfigError

_MAX_CODE = 2**62  # mixed-radix vertex codes must stay below this to fit in int64


def _elevate(features: np.ndarray) -> np.ndarray:
    """(N, d) features -> (N, d+1) coordinates on the hyperplane sum(x) = 0, scaled so the
    lattice blur has unit standard deviation in feature units (Adams et al., p. 5-6)."""
    n, d = features.shape
    scale = np.sqrt(2.0 / 3.0) * (d + 1) / np.sqrt((np.arange(d) + 2.0) * (np.arange(d) + 1.0))
    cf = features * scale
    suffix = np.zeros((n, d + 1))
    suffix[:, :d] = np.cumsum(cf[:, ::-1], axis=1)[:, ::-1]
    elevated = suffix
    elevated[:, 1:] -= np.arange(1, d + 1) * cf
    return elevated


def _ranks(diff: np.ndarray) -> np.ndarray:
    """Position of each coordinate in descending order of ``diff`` (ties: lower index first), (N, d+1)."""
    n, d1 = diff.shape
    order = np.argsort(-diff, axis=1, kind="stable")
    rank = np.empty((n, d1), dtype=np.int64)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(d1), (n, d1)), axis=1)
    return rank


def _simplex(elevated: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The enclosing simplex of every point: its 0-vertex ``rem0`` (N, d+1), the ``rank`` of
    each coordinate (N, d+1) and the barycentric weights (N, d+1)."""
    n, d1 = elevated.shape
    d = d1 - 1
    rounded = np.round(elevated / d1)
    rem0 = rounded * d1
    rank = _ranks(elevated - rem0)
    # Points off the plane sum = 0 (rounding moved them) are brought back by re-ranking.
    rank += rounded.sum(1).astype(np.int64)[:, None]
    low, high = rank < 0, rank > d
    rank[low] += d1
    rem0[low] += d1
    rank[high] -= d1
    rem0[high] -= d1
    v = (elevated - rem0) / d1
    plus, minus = np.zeros((n, d1 + 1)), np.zeros((n, d1 + 1))
    np.put_along_axis(plus, d - rank, v, axis=1)
    np.put_along_axis(minus, d - rank + 1, v, axis=1)
    bary = plus - minus
    bary[:, 0] += 1.0 + bary[:, d1]
    return rem0.astype(np.int64), rank, bary[:, :d1]


class _Codec:
    """Mixed-radix int64 codes of integer keys (the first d lattice coordinates) in a box."""

    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        self.low, self.high = low, high
        span = high - low + 1
        if np.prod(span.astype(np.float64)) >= _MAX_CODE:
            raise ConfigError(
                "CRF bandwidths too small for this image: the lattice has more cells than int64 "
                "codes can number; use larger theta values"
            )
        self.radix = np.cumprod(np.concatenate([[1], span[:-1]])).astype(np.int64)

    def encode(self, keys: np.ndarray) -> np.ndarray:
        return ((keys - self.low) * self.radix).sum(-1)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return (codes[:, None] // self.radix) % (self.high - self.low + 1) + self.low

    def inside(self, keys: np.ndarray) -> np.ndarray:
        return ((keys >= self.low) & (keys <= self.high)).all(-1)


def _vertex_codes(rem0: np.ndarray, rank: np.ndarray, codec: _Codec) -> np.ndarray:
    """Codes of the d+1 vertices of each simplex, (S, d+1).

    Vertex r has keys ``rem0_i + r - (d+1) [rank_i > d - r]`` (the canonical simplex of Adams
    et al. shifted to ``rem0``), so its code is the code of ``rem0`` plus ``r * sum(radix)``
    minus ``(d+1)`` times the radix of every coordinate with ``rank_i + r > d``: a cumulative
    sum over r of each coordinate's radix placed at ``r = d + 1 - rank_i``.
    """
    s, d1 = rank.shape
    d = d1 - 1
    base = codec.encode(rem0[:, :d])
    steps = np.zeros((s, d1 + 1), dtype=np.int64)
    np.put_along_axis(steps, d1 - rank[:, :d], np.broadcast_to(codec.radix, (s, d)), axis=1)
    crossed = np.cumsum(steps, axis=1)[:, :d1]
    return base[:, None] + np.arange(d1) * codec.radix.sum() - d1 * crossed


def _csr(crow: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """A float32 CSR matrix (rows need not have sorted columns for ``torch.sparse.mm``)."""
    with warnings.catch_warnings():
        # torch flags all of CSR as "beta" on every construction; the product used here is stable.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(crow.astype(np.int64)), torch.from_numpy(cols.astype(np.int64)),
            torch.from_numpy(vals.astype(np.float32)), size=shape, check_invariants=False,
        )


class PermutohedralLattice:
    """A lattice built once for N points with features ``(N, d)`` (already divided by their
    bandwidths), filtering any ``(N, C)`` values with the Gaussian of unit std.

    Args:
        features: float array ``(N, d)``.
    """

    def __init__(self, features: np.ndarray) -> None:
        f = np.asarray(features, dtype=np.float64)
        n, d = f.shape
        self.points, self.dim = n, d
        rem0, rank, bary = _simplex(_elevate(f))
        codec = _Codec(rem0[:, :d].min(0) - d, rem0[:, :d].max(0) + d)
        # Neighbouring points mostly share a simplex: find the distinct simplices first
        # (N rows), then their distinct vertices, instead of hashing N (d+1) vertices.
        base = codec.encode(rem0[:, :d])
        shape_code = (rank[:, :d] * (d + 1) ** np.arange(d)).sum(1)
        order = np.lexsort((shape_code, base))
        new = np.ones(n, dtype=bool)
        new[1:] = (base[order][1:] != base[order][:-1]) | (shape_code[order][1:] != shape_code[order][:-1])
        simplex = np.empty(n, dtype=np.int64)
        simplex[order] = np.cumsum(new) - 1
        heads = order[new]
        codes = _vertex_codes(rem0[heads], rank[heads], codec)
        uniq, vertex = np.unique(codes.ravel(), return_inverse=True)
        self.vertices = m = len(uniq)
        vertex = vertex.reshape(codes.shape)[simplex]  # (N, d+1) vertex ids of each point
        weights = bary.astype(np.float32)
        self._slice = _csr(np.arange(0, n * (d + 1) + 1, d + 1), vertex.ravel(), weights.ravel(), (n, m))
        # Stable, so each vertex's points stay in ascending order; 16-bit ids sort by radix.
        by_vertex = np.argsort(vertex.ravel().astype(np.uint16 if m <= 1 << 16 else np.int64), kind="stable")
        crow = np.concatenate([[0], np.cumsum(np.bincount(vertex.ravel(), minlength=m))])
        self._splat = _csr(crow, by_vertex // (d + 1), weights.ravel()[by_vertex], (m, n))
        self._neighbours = self._blur_neighbours(codec.decode(uniq), uniq, codec)
        # densecrf's slice factor: the blur's gain for a point sitting on a vertex.
        self._alpha = 1.0 / (1.0 + 2.0 ** (-d))

    def _blur_neighbours(
        self, vkeys: np.ndarray, uniq: np.ndarray, codec: _Codec
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """For each lattice direction, the indices of every vertex's two neighbours (``M`` if absent)."""
        d = self.dim
        out = []
        for j in range(d + 1):
            step = -np.ones(d, dtype=np.int64)
            if j < d:
                step[j] = d
            pair = []
            for keys in (vkeys + step, vkeys - step):
                codes = codec.encode(keys)
                pos = np.clip(np.searchsorted(uniq, codes), 0, len(uniq) - 1)
                found = codec.inside(keys) & (uniq[pos] == codes)
                pair.append(torch.from_numpy(np.where(found, pos, len(uniq)).astype(np.int64)))
            out.append((pair[0], pair[1]))
        return out

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """``sum_j exp(-|f_i - f_j|^2 / 2) values_j`` for every point i, approximately and up to
        a smooth per-point factor (divide by ``filter(ones)`` to normalise).

        Args:
            values: float32 ``(N, C)``.

        Returns:
            float32 ``(N, C)``.
        """
        lattice = torch.sparse.mm(self._splat, values)
        zero = lattice.new_zeros(1, lattice.shape[1])
        for n1, n2 in self._neighbours:
            padded = torch.cat([lattice, zero])
            lattice = lattice + 0.5 * (padded[n1] + padded[n2])
        return torch.sparse.mm(self._slice, lattice) * self._alpha
