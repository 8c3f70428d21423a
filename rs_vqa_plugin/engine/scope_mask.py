"""A polygon scope as a pixel mask: what lies outside the polygon (but inside its bounding-box
window) is read as missing, like nodata, so the model sees only the polygon.

The polygon is held in the scope window's pixel coordinates (through the inverse geotransform,
so rotated rasters work); a read asks whether each output pixel's centre is inside, by the
even-odd rule over every ring (holes and multipolygons included). An extent on a north-up raster
is its own window and needs no mask."""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

# Points tested per chunk (bounds the temporary arrays: points x edges booleans).
_CHUNK_CELLS = 4_000_000


class ScopeMask:
    def __init__(self, rings: Sequence[np.ndarray]):
        """rings: closed or open (N, 2) arrays of (x, y) in scope-window pixel coordinates."""
        starts, ends = [], []
        for ring in rings:
            ring = np.asarray(ring, dtype=np.float64)
            if len(ring) < 3:
                continue
            nxt = np.roll(ring, -1, axis=0)
            keep = np.any(ring != nxt, axis=1)      # drop the closing duplicate's zero edge
            starts.append(ring[keep])
            ends.append(nxt[keep])
        self.a = np.concatenate(starts) if starts else np.zeros((0, 2))
        self.b = np.concatenate(ends) if ends else np.zeros((0, 2))

    def inside(self, src_x, src_y, src_w, src_h, out_w: int, out_h: int) -> np.ndarray:
        """bool [out_h, out_w]: is each output pixel's centre (in window pixels) in the polygon?"""
        xs = src_x + (np.arange(out_w) + 0.5) * (src_w / out_w)
        ys = src_y + (np.arange(out_h) + 0.5) * (src_h / out_h)
        px, py = np.meshgrid(xs, ys)
        px, py = px.ravel(), py.ravel()
        inside = np.zeros(px.size, dtype=bool)
        (ax, ay), (bx, by) = self.a.T, self.b.T
        step = max(1, _CHUNK_CELLS // max(1, len(ax)))
        for s in range(0, px.size, step):
            x, y = px[s:s + step, None], py[s:s + step, None]
            crosses = (ay > y) != (by > y)
            with np.errstate(divide="ignore", invalid="ignore"):
                at = ax + (y - ay) * (bx - ax) / (by - ay)
            inside[s:s + step] = np.logical_xor.reduce(crosses & (x < at), axis=1)
        return inside.reshape(out_h, out_w)


def _rings_of(geometry) -> List[List[tuple]]:
    if geometry.GetGeometryCount():
        return [r for i in range(geometry.GetGeometryCount()) for r in _rings_of(geometry.GetGeometryRef(i))]
    return [[(float(p[0]), float(p[1])) for p in geometry.GetPoints() or []]]


def scope_mask(scope, georef, window) -> Optional[ScopeMask]:
    """The mask of a polygon WKT (or of an extent on a rotated raster) over `window`
    (xoff, yoff, w, h); None when the scope is exactly its window (nothing to mask)."""
    from .scope import scope_vertices

    if scope is None or window is None or (isinstance(scope, str) and not scope.strip()):
        return None
    if isinstance(scope, str):
        from osgeo import ogr

        scope_vertices(scope)          # validates, with the user-facing errors
        rings = _rings_of(ogr.CreateGeometryFromWkt(scope))
    else:
        rings = [scope_vertices(scope)]
    xoff, yoff = window[0], window[1]
    pixel_rings = []
    for ring in rings:
        pts = np.asarray(ring, dtype=np.float64)
        px, py = georef.map_to_pixel(pts[:, 0], pts[:, 1])
        pixel_rings.append(np.column_stack([np.asarray(px) - xoff, np.asarray(py) - yoff]))
    if len(pixel_rings) == 1 and _is_axis_aligned_rectangle(pixel_rings[0]):
        return None
    return ScopeMask(pixel_rings)


def _is_axis_aligned_rectangle(ring: np.ndarray, tol: float = 1e-6) -> bool:
    xs, ys = ring[:, 0], ring[:, 1]
    on_x = np.minimum(np.abs(xs - xs.min()), np.abs(xs - xs.max())) <= tol
    on_y = np.minimum(np.abs(ys - ys.min()), np.abs(ys - ys.max())) <= tol
    corners = on_x & on_y
    return bool(corners.all()) and len({(round(x, 6), round(y, 6)) for x, y in ring}) == 4
