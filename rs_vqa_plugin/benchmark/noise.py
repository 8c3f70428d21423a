"""Deterministic hash-based value noise, evaluated on pixel windows (fast, separable) or on points.

Every texture and land-cover field of a synthetic scene comes from here, so that any block of the
image can be rendered on its own and still match its neighbours exactly.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

_M1 = np.uint32(0x7FEB352D)
_M2 = np.uint32(0x846CA68B)
_PX = np.uint32(0x9E3779B1)
_PY = np.uint32(0x85EBCA77)


def hash_u32(values) -> np.ndarray:
    """lowbias32 integer hash; uint32 arithmetic wraps, which is what we want."""
    h = np.asarray(values).astype(np.uint32)
    with np.errstate(over="ignore"):     # 0-d arrays warn on the wrap-around we rely on
        h = h ^ (h >> np.uint32(16))
        h = h * _M1
        h = h ^ (h >> np.uint32(15))
        h = h * _M2
    return h ^ (h >> np.uint32(16))


def hash2(ix, iy, seed: int) -> np.ndarray:
    """Hash of integer lattice coordinates (broadcasting) -> uint32."""
    ix = np.asarray(ix).astype(np.int64).astype(np.uint32)
    iy = np.asarray(iy).astype(np.int64).astype(np.uint32)
    with np.errstate(over="ignore"):
        return hash_u32((ix * _PX) ^ hash_u32(iy * _PY + np.uint32(seed & 0xFFFFFFFF)))


def unit(h: np.ndarray) -> np.ndarray:
    """uint32 hash -> float32 uniform in [0, 1)."""
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def _smooth(t):
    return t * t * (3.0 - 2.0 * t)


def _axis_taps(start: int, count: int, cell: float):
    """Lattice index (relative to the first node), smoothstep weight and node count along one axis."""
    pos = (np.arange(start, start + count, dtype=np.float64) + 0.5) / cell
    base = np.floor(pos)
    i0 = int(base[0])
    idx = (base - i0).astype(np.int64)
    return i0, idx, _smooth(pos - base).astype(np.float32), int(idx[-1]) + 2


def grid_noise(x0: int, y0: int, width: int, height: int, cell: float, seed: int) -> np.ndarray:
    """Value noise in [0, 1) on the pixel window [x0, x0+width) x [y0, y0+height), float32 (h, w).

    Separable: interpolate the few lattice rows along x first (small), then along y (two row
    gathers and a blend), so a window costs a handful of operations per pixel per octave and no
    BLAS (whose threads would only spin on such small products).
    """
    ix0, ix, tx, nx = _axis_taps(x0, width, cell)
    iy0, iy, ty, ny = _axis_taps(y0, height, cell)
    lattice = unit(hash2(np.arange(ix0, ix0 + nx)[None, :], np.arange(iy0, iy0 + ny)[:, None], seed))
    left = lattice.take(ix, axis=1)
    rows = left + (lattice.take(ix + 1, axis=1) - left) * tx[None, :]        # (ny, width)
    top = rows.take(iy, axis=0)
    out = rows.take(iy + 1, axis=0)
    out -= top
    out *= ty[:, None]
    out += top
    return out


def point_noise(xs, ys, cell: float, seed: int) -> np.ndarray:
    """The same field as grid_noise, at arbitrary pixel coordinates (for layout decisions)."""
    px = (np.asarray(xs, dtype=np.float64) + 0.5) / cell
    py = (np.asarray(ys, dtype=np.float64) + 0.5) / cell
    bx, by = np.floor(px), np.floor(py)
    tx, ty = _smooth(px - bx), _smooth(py - by)
    ix, iy = bx.astype(np.int64), by.astype(np.int64)
    v00 = unit(hash2(ix, iy, seed))
    v10 = unit(hash2(ix + 1, iy, seed))
    v01 = unit(hash2(ix, iy + 1, seed))
    v11 = unit(hash2(ix + 1, iy + 1, seed))
    top = v00 + (v10 - v00) * tx
    bottom = v01 + (v11 - v01) * tx
    return (top + (bottom - top) * ty).astype(np.float32)


def grid_fbm(x0, y0, width, height, cells: Sequence[float], seed: int) -> np.ndarray:
    """Sum of octaves (weights proportional to cell size), normalised to about [0, 1)."""
    total = np.zeros((height, width), dtype=np.float32)
    norm = float(sum(cells))
    for octave, cell in enumerate(cells):
        total += grid_noise(x0, y0, width, height, cell, seed + 101 * octave) * np.float32(cell / norm)
    return total


def point_fbm(xs, ys, cells: Sequence[float], seed: int) -> np.ndarray:
    norm = float(sum(cells))
    total = 0.0
    for octave, cell in enumerate(cells):
        total = total + point_noise(xs, ys, cell, seed + 101 * octave) * np.float32(cell / norm)
    return np.asarray(total, dtype=np.float32)


def noise1(t, cells: Sequence[float], seed: int) -> np.ndarray:
    """1-D fractal value noise in about [0, 1) along a coordinate (curves: coasts, rivers, roads)."""
    t = np.asarray(t, dtype=np.float64)
    return point_fbm(t, np.zeros_like(t), cells, seed)


def periodic_table(size: int, cell: int, seed: int) -> np.ndarray:
    """A size x size value-noise texture that wraps at its edges (cell must divide size)."""
    n = size // cell
    lattice = unit(hash2(np.arange(n)[None, :], np.arange(n)[:, None], seed))
    pos = (np.arange(size) + 0.5) / cell
    base = np.floor(pos).astype(np.int64)
    t = _smooth(pos - base).astype(np.float32)
    i0, i1 = base % n, (base + 1) % n
    rows = lattice[i0] + (lattice[i1] - lattice[i0]) * t[:, None]          # interpolate along y
    return (rows[:, i0] + (rows[:, i1] - rows[:, i0]) * t[None, :]).astype(np.float32)
