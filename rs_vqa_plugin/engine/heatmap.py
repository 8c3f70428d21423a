"""Heat cells (where the model looked) and their file: a GeoPackage or GeoJSON layer via OGR.

Cells are footprints in the raster's CRS of the kept tokens and of the tiles read at each level.
The file is written to a temporary name beside the target and renamed at the end, so a failure
or a cancel leaves no half-written file. Fields: question, score, level, tile ("row,col"), rank, kind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .answer import Answer, HeatCell
from .errors import InputError

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}
LAYER_NAME = "heatmap"


def _rings(georef, x0, y0, x1, y1) -> List[List[Tuple[float, float]]]:
    """Closed 5-point rings in map coordinates of pixel rectangles (vectorised pixel_to_map)."""
    xs = np.stack([x0, x1, x1, x0, x0], axis=-1)
    ys = np.stack([y0, y0, y1, y1, y0], axis=-1)
    X, Y = georef.pixel_to_map(xs, ys)
    X, Y = np.atleast_2d(X), np.atleast_2d(Y)
    return [[(float(a), float(b)) for a, b in zip(xr, yr)] for xr, yr in zip(X, Y)]


def token_cells(plan, georef, tokens, scores: Sequence[float]) -> List[HeatCell]:
    """One cell per token of `tokens` (LevelTokens), ranked by score (1 = highest)."""
    from .geo import level_cell_to_source
    from .select import score_ranks

    if len(tokens) == 0:
        return []
    cell = plan.tile_size / plan.token_grid
    # The same level -> source mapping as the tile reads, so cells sit on the pixels read.
    rects = np.array([level_cell_to_source(plan, tokens.level, c * cell, r * cell,
                                           (c + 1) * cell, (r + 1) * cell)
                      for r, c in zip(tokens.rows.tolist(), tokens.cols.tolist())], dtype=float)
    ranks = score_ranks(scores)
    rings = _rings(georef, rects[:, 0], rects[:, 1], rects[:, 2], rects[:, 3])
    return [HeatCell(ring=ring, score=float(s), level=int(tokens.level),
                     tile=(int(tr), int(tc)), rank=int(rank), kind="token")
            for ring, s, tr, tc, rank in zip(rings, scores, tokens.tile_rows, tokens.tile_cols, ranks)]


def tile_cells(plan, georef, level: int, tiles: Sequence[Tuple[int, int]],
               scores: Optional[Sequence[float]] = None) -> List[HeatCell]:
    """One cell per tile read at `level` (its content, padding excluded). Without scores (modes
    that do not run the RFM) every score is 0 and ranks follow raster order."""
    from .geo import level_cell_to_source
    from .pyramid import tile_content_rect
    from .select import score_ranks

    if not tiles:
        return []
    rects = np.array([level_cell_to_source(plan, level, *tile_content_rect(plan, level, r, c))
                      for r, c in tiles], dtype=float)
    scores = np.zeros(len(tiles)) if scores is None else np.asarray(scores, dtype=float)
    ranks = score_ranks(scores)
    rings = _rings(georef, rects[:, 0], rects[:, 1], rects[:, 2], rects[:, 3])
    return [HeatCell(ring=ring, score=float(s), level=int(level), tile=(int(r), int(c)),
                     rank=int(rank), kind="tile")
            for ring, s, (r, c), rank in zip(rings, scores, tiles, ranks)]


def _driver_for(path: Path) -> str:
    driver = DRIVERS.get(path.suffix.lower())
    if driver is None:
        raise InputError(f"{path}: a heatmap is written as .gpkg or .geojson; choose one of those "
                         "extensions.")
    return driver


def write_heatmap(answers: Iterable[Answer], path) -> Path:
    """One polygon per heat cell of every answer; the CRS is the first answer's raster CRS."""
    from osgeo import ogr, osr

    ogr.UseExceptions()
    osr.UseExceptions()
    answers = list(answers)
    path = Path(path)
    driver_name = _driver_for(path)
    if not path.parent.is_dir():
        raise InputError(f"{path.parent} does not exist: create the folder or choose another "
                         "heatmap path.")
    tmp = path.with_name(f".{path.stem}.part-{os.getpid()}{path.suffix}")
    srs = None
    crs_wkt = next((a.crs_wkt for a in answers if a.crs_wkt), "")
    if crs_wkt:
        srs = osr.SpatialReference()
        srs.ImportFromWkt(crs_wkt)
        # Keep X = easting / longitude whatever the CRS's declared axis order.
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    driver = ogr.GetDriverByName(driver_name)
    try:
        ds = driver.CreateDataSource(str(tmp))
        if ds is None:
            raise InputError(f"Cannot create {path} (OGR {driver_name} refused it): check that "
                             "the folder is writable.")
        layer = ds.CreateLayer(LAYER_NAME, srs, ogr.wkbPolygon)
        for name, kind in (("question", ogr.OFTString), ("score", ogr.OFTReal),
                           ("level", ogr.OFTInteger), ("tile", ogr.OFTString),
                           ("rank", ogr.OFTInteger), ("kind", ogr.OFTString)):
            layer.CreateField(ogr.FieldDefn(name, kind))
        definition = layer.GetLayerDefn()
        for answer in answers:
            for cell in answer.heat_cells:
                ring = ogr.Geometry(ogr.wkbLinearRing)
                for x, y in cell.ring:
                    ring.AddPoint_2D(float(x), float(y))
                polygon = ogr.Geometry(ogr.wkbPolygon)
                polygon.AddGeometry(ring)
                feature = ogr.Feature(definition)
                feature.SetField("question", answer.question)
                feature.SetField("score", float(cell.score))
                feature.SetField("level", int(cell.level))
                feature.SetField("tile", f"{int(cell.tile[0])},{int(cell.tile[1])}")
                feature.SetField("rank", int(cell.rank))
                feature.SetField("kind", cell.kind)
                feature.SetGeometry(polygon)
                layer.CreateFeature(feature)
        layer = None
        ds = None   # flush and close before the rename
        os.replace(tmp, path)
    except BaseException:
        ds = None
        if tmp.exists():
            tmp.unlink()
        raise
    return path
