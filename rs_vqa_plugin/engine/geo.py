"""Pixel <-> map geometry of a raster (or scope window) and of pyramid levels, tiles and token cells."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .pyramid import PyramidPlan, tile_content_rect

# QGIS shows a raster without geotransform with y pointing down the screen (its GDAL provider
# uses a -1 y step); using the same affine keeps our footprints on top of the layer.
PIXEL_GEOTRANSFORM = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


class NoCrsWarning(UserWarning):
    """The raster has no CRS: results are in pixel (or bare geotransform) coordinates."""


@dataclass
class GeoReference:
    """Affine geotransform (rotation terms included) of the scope window plus the raster's CRS."""

    geotransform: Tuple[float, float, float, float, float, float]
    crs_wkt: str = ""
    epsg: Optional[int] = None
    is_geographic: bool = False
    warnings: List[str] = field(default_factory=list)

    def __post_init__(self):
        gt = tuple(float(v) for v in self.geotransform)
        if len(gt) != 6 or gt[1] * gt[5] - gt[2] * gt[4] == 0:
            raise ValueError(f"geotransform {gt} is not invertible")
        self.geotransform = gt

    @property
    def has_crs(self) -> bool:
        return bool(self.crs_wkt)

    def pixel_to_map(self, x, y):
        """Pixel (column, row) coordinates, edges at integers, -> map (X, Y); arrays welcome."""
        g = self.geotransform
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        X = g[0] + x * g[1] + y * g[2]
        Y = g[3] + x * g[4] + y * g[5]
        return (X.item(), Y.item()) if X.ndim == 0 else (X, Y)

    def map_to_pixel(self, X, Y):
        g = self.geotransform
        X, Y = np.asarray(X, dtype=float) - g[0], np.asarray(Y, dtype=float) - g[3]
        det = g[1] * g[5] - g[2] * g[4]
        x = (g[5] * X - g[2] * Y) / det
        y = (-g[4] * X + g[1] * Y) / det
        return (x.item(), y.item()) if x.ndim == 0 else (x, y)

    def footprint(self, x0, y0, x1, y1) -> List[Tuple[float, float]]:
        """Closed 5-point ring of the pixel rectangle in the raster's CRS (clockwise on screen)."""
        xs = np.array([x0, x1, x1, x0, x0], dtype=float)
        ys = np.array([y0, y0, y1, y1, y0], dtype=float)
        X, Y = self.pixel_to_map(xs, ys)
        return [(float(a), float(b)) for a, b in zip(X, Y)]

    def offset(self, xoff: float, yoff: float) -> "GeoReference":
        """The same reference for a window starting at pixel (xoff, yoff)."""
        g = self.geotransform
        X, Y = self.pixel_to_map(xoff, yoff)
        return GeoReference((X, g[1], g[2], Y, g[4], g[5]), self.crs_wkt, self.epsg,
                            self.is_geographic, list(self.warnings))

    def to_dict(self) -> dict:
        return {"geotransform": list(self.geotransform), "crs_wkt": self.crs_wkt,
                "epsg": self.epsg, "is_geographic": self.is_geographic,
                "warnings": list(self.warnings)}


def georeference_from_dataset(ds, label: str = "raster") -> GeoReference:
    """Read geotransform and CRS from an open GDAL dataset; warn (and use pixels) when absent."""
    from osgeo import osr

    wkt = ds.GetProjection() or ""
    # GetGeoTransform(can_return_null=True) tells "none" apart from GDAL's default identity.
    gt = ds.GetGeoTransform(can_return_null=True)
    notes = []
    if gt is None:
        gt = PIXEL_GEOTRANSFORM
        notes.append(f"{label} has no geotransform: coordinates are pixel columns and rows "
                     "(negative rows, as QGIS shows it).")
    epsg, geographic = None, False
    if wkt:
        srs = osr.SpatialReference()
        if srs.ImportFromWkt(wkt) == 0:
            srs.AutoIdentifyEPSG()
            code = srs.GetAuthorityCode(None)
            if srs.GetAuthorityName(None) == "EPSG" and code:
                epsg = int(code)
            geographic = bool(srs.IsGeographic())
    else:
        notes.append(f"{label} has no CRS: footprints and heat maps are in its pixel/geotransform "
                     "coordinates; assign a CRS (e.g. gdal_edit.py -a_srs EPSG:XXXX) to place them on a map.")
    for note in notes:
        warnings.warn(note, NoCrsWarning, stacklevel=3)
    return GeoReference(gt, wkt, epsg, geographic, notes)


def level_scales(plan: PyramidPlan, level_index: int) -> Tuple[float, float]:
    """(x, y) content pixels per source pixel of a level (level_index 0 = thumbnail).

    Per axis: the content spans the whole source on both axes, and its sides are whole pixels, so
    content_width / source_width and content_height / source_height differ slightly in general."""
    geometry = plan.thumbnail if level_index == 0 else plan.level(level_index)
    return (geometry.content_width / plan.source_width, geometry.content_height / plan.source_height)


def level_cell_to_source(plan: PyramidPlan, level_index: int,
                         x0, y0, x1, y1) -> Tuple[float, float, float, float]:
    """A rectangle in level content pixels -> window (source) pixels. level_index 0 = thumbnail.

    Clipped to the source; padding maps outside the image and is cut away.
    """
    # Per-axis scales: each level's content is the whole source resampled to exactly
    # content_width x content_height, whose rounding makes x and y differ slightly.
    sx, sy = level_scales(plan, level_index)
    w, h = plan.source_width, plan.source_height
    return (min(max(x0 / sx, 0.0), w), min(max(y0 / sy, 0.0), h),
            min(max(x1 / sx, 0.0), w), min(max(y1 / sy, 0.0), h))


def tile_footprint(georef: GeoReference, plan: PyramidPlan, level_index: int, row: int, col: int):
    """Footprint ring of a tile's non-padding part in the raster CRS."""
    rect = tile_content_rect(plan, level_index, row, col)
    return georef.footprint(*level_cell_to_source(plan, level_index, *rect))


def token_cell_footprint(georef: GeoReference, plan: PyramidPlan, level_index: int,
                         token_row: int, token_col: int):
    """Footprint ring of one pooled token cell of a level's stitched grid (clipped to the image)."""
    cell = plan.tile_size / plan.token_grid
    return georef.footprint(*level_cell_to_source(plan, level_index, token_col * cell, token_row * cell,
                                                  (token_col + 1) * cell, (token_row + 1) * cell))


def footprints_to_wkt(rings: Sequence[Sequence[Tuple[float, float]]]) -> List[str]:
    return ["POLYGON ((" + ", ".join(f"{x!r} {y!r}" for x, y in ring) + "))" for ring in rings]
