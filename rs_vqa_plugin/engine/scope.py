"""A question's scope: a map extent or polygon in the raster's CRS -> the pixel window it covers.

The window is the pixel bounding box of the scope's vertices (through the inverse geotransform,
so rotated rasters are handled), clipped to the raster. The pyramid is then planned over it, and
a polygon's outside is masked within it (scope_mask.py).
"""

from __future__ import annotations

import math
from typing import Iterable, List, Optional, Tuple, Union

from .errors import InputError

Scope = Union[None, str, Tuple[float, float, float, float]]
Window = Tuple[int, int, int, int]   # xoff, yoff, xsize, ysize in full-raster pixels


def scope_vertices(scope, label: str = "scope") -> List[Tuple[float, float]]:
    """Map coordinates of the scope's corners: an extent (xmin, ymin, xmax, ymax) or polygon WKT."""
    if isinstance(scope, str):
        return _wkt_vertices(scope, label)
    try:
        xmin, ymin, xmax, ymax = (float(v) for v in scope)
    except (TypeError, ValueError):
        raise InputError(f"The {label} {scope!r} is neither an extent (xmin, ymin, xmax, ymax) "
                         "nor polygon WKT: give one of them in the raster's CRS.") from None
    if not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax)) or xmax <= xmin or ymax <= ymin:
        raise InputError(f"The {label} extent {(xmin, ymin, xmax, ymax)} is empty or invalid: "
                         "give xmin < xmax and ymin < ymax in the raster's CRS.")
    return [(xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax)]


def _wkt_vertices(wkt: str, label: str) -> List[Tuple[float, float]]:
    from osgeo import ogr

    try:
        geometry = ogr.CreateGeometryFromWkt(wkt)
    except RuntimeError:
        geometry = None
    if geometry is None or geometry.IsEmpty():
        raise InputError(f"The {label} is not valid polygon WKT ({wkt[:80]!r}): give e.g. "
                         "'POLYGON ((x0 y0, x1 y1, x2 y2, x0 y0))' in the raster's CRS.")
    if ogr.GT_Flatten(geometry.GetGeometryType()) not in (ogr.wkbPolygon, ogr.wkbMultiPolygon):
        raise InputError(f"The {label} is a {geometry.GetGeometryName()}, not a polygon: draw or "
                         "select a polygon, or give an extent.")
    points: List[Tuple[float, float]] = []
    _collect_points(geometry, points)
    return points


def _collect_points(geometry, out: List[Tuple[float, float]]) -> None:
    if geometry.GetGeometryCount():
        for i in range(geometry.GetGeometryCount()):
            _collect_points(geometry.GetGeometryRef(i), out)
        return
    out.extend((float(p[0]), float(p[1])) for p in geometry.GetPoints() or [])


def window_from_vertices(vertices: Iterable[Tuple[float, float]], georef, width: int,
                         height: int, label: str = "scope") -> Window:
    """Pixel bounding box of map vertices, clipped to the raster; InputError when outside it."""
    import numpy as np

    pts = np.asarray(list(vertices), dtype=float)
    px, py = georef.map_to_pixel(pts[:, 0], pts[:, 1])
    x0, x1 = math.floor(float(np.min(px)) + 1e-9), math.ceil(float(np.max(px)) - 1e-9)
    y0, y1 = math.floor(float(np.min(py)) + 1e-9), math.ceil(float(np.max(py)) - 1e-9)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx1 <= cx0 or cy1 <= cy0:
        raise InputError(f"The {label} lies outside the raster (it covers pixels x {x0}..{x1}, "
                         f"y {y0}..{y1} of a {width} x {height} raster): draw it over the image, "
                         "in the raster's CRS.")
    return cx0, cy0, cx1 - cx0, cy1 - cy0


def scope_window(raster_path, scope: Scope) -> Optional[Window]:
    """The pixel window of `scope` over the raster at raster_path (None: the whole raster)."""
    if scope is None or (isinstance(scope, str) and not scope.strip()):
        return None
    from .geo import georeference_from_dataset
    from .raster import open_dataset

    ds = open_dataset(raster_path)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # a missing CRS is reported by the raster source itself
        georef = georeference_from_dataset(ds)
    width, height = ds.RasterXSize, ds.RasterYSize
    ds = None
    return window_from_vertices(scope_vertices(scope), georef, width, height)
