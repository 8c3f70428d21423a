"""Water, coast, roads and the two land-cover fields, evaluated on broadcastable pixel coordinates.

The same functions serve the renderer (xs as a (1, w) row, ys as an (h, 1) column: curves are
evaluated once per row or column) and the layout (arbitrary sample points).
"""

from __future__ import annotations

import numpy as np

from .noise import grid_fbm, grid_noise, point_fbm, point_noise
from .scene import Curve, Scene


def curve_offset(curve: Curve, xs, ys) -> np.ndarray:
    """Signed distance (across the curve's run) from its centre line, broadcasting xs and ys."""
    if curve.orient == "h":
        return np.asarray(ys, dtype=np.float32) - curve.centre(xs).astype(np.float32)
    return np.asarray(xs, dtype=np.float32) - curve.centre(ys).astype(np.float32)


def sea_depth(scene: Scene, xs, ys):
    """Signed distance into the sea (positive = sea), or None where the scene has no sea."""
    if scene.sea is None:
        return None
    return scene.sea.sign * curve_offset(scene.sea.coast, xs, ys)


def lake_mask(scene: Scene, xs, ys, window=None) -> np.ndarray:
    """Lakes: discs with a noisy edge; `window` (x1, y1, x2, y2) skips lakes outside it."""
    mask = np.zeros(np.broadcast(np.asarray(xs), np.asarray(ys)).shape, dtype=bool)
    for lake in scene.lakes:
        r = lake.radius * 1.3
        if window is not None and (lake.cx + r < window[0] or lake.cx - r > window[2]
                                   or lake.cy + r < window[1] or lake.cy - r > window[3]):
            continue
        dist = np.hypot(np.asarray(xs, np.float32) - lake.cx, np.asarray(ys, np.float32) - lake.cy)
        wobble = point_noise(xs, ys, lake.radius / 2.5, lake.seed) - 0.5
        mask |= (dist / lake.radius + 0.5 * wobble) < 1.0
    return mask


def water_mask(scene: Scene, xs, ys, window=None) -> np.ndarray:
    shape = np.broadcast(np.asarray(xs), np.asarray(ys)).shape
    mask = np.zeros(shape, dtype=bool)
    depth = sea_depth(scene, xs, ys)
    if depth is not None:
        mask |= depth > 0
    for river in scene.rivers:
        mask |= np.abs(curve_offset(river, xs, ys)) < river.width / 2
    mask |= lake_mask(scene, xs, ys, window)
    for patch in scene.water_patches:
        mask |= ((xs >= patch.x1) & (xs < patch.x2) & (ys >= patch.y1) & (ys < patch.y2))
    return mask


def _extent(scene: Scene) -> float:
    return float(min(scene.width, scene.height))


def urban_cells(scene: Scene):
    e = _extent(scene)
    return (e / 3.0, e / 9.0, 260.0)


def veg_cells(scene: Scene):
    e = _extent(scene)
    return (e / 4.0, e / 12.0, 200.0)


def _city_bumps(scene: Scene, xs, ys):
    total = 0.0
    for cx, cy, sigma in scene.city_centres:
        gx = np.exp(-((np.asarray(xs, np.float32) - cx) ** 2) / (2 * sigma * sigma))
        gy = np.exp(-((np.asarray(ys, np.float32) - cy) ** 2) / (2 * sigma * sigma))
        total = total + 0.45 * gx * gy
    return total


# a fine octave with more weight than fbm would give it: ragged, natural-looking class edges
ROUGH_CELL, ROUGH_WEIGHT = 64.0, np.float32(0.07)


def urban_field_points(scene: Scene, xs, ys) -> np.ndarray:
    rough = ROUGH_WEIGHT * (point_noise(xs, ys, ROUGH_CELL, scene.seed + 24) - 0.5)
    return point_fbm(xs, ys, urban_cells(scene), scene.seed + 23) + rough + _city_bumps(scene, xs, ys)


def urban_field_grid(scene: Scene, x0, y0, w, h) -> np.ndarray:
    xs = np.arange(x0, x0 + w, dtype=np.float32)[None, :]
    ys = np.arange(y0, y0 + h, dtype=np.float32)[:, None]
    rough = ROUGH_WEIGHT * (grid_noise(x0, y0, w, h, ROUGH_CELL, scene.seed + 24) - 0.5)
    return grid_fbm(x0, y0, w, h, urban_cells(scene), scene.seed + 23) + rough + _city_bumps(scene, xs, ys)


def veg_field_points(scene: Scene, xs, ys) -> np.ndarray:
    rough = ROUGH_WEIGHT * (point_noise(xs, ys, ROUGH_CELL, scene.seed + 12) - 0.5)
    return point_fbm(xs, ys, veg_cells(scene), scene.seed + 11) + rough


def veg_field_grid(scene: Scene, x0, y0, w, h) -> np.ndarray:
    rough = ROUGH_WEIGHT * (grid_noise(x0, y0, w, h, ROUGH_CELL, scene.seed + 12) - 0.5)
    return grid_fbm(x0, y0, w, h, veg_cells(scene), scene.seed + 11) + rough
