"""Heat cells (where the model looked) and their file: a GeoPackage or GeoJSON layer via OGR.

Cells are footprints in the raster's CRS of the kept tokens and of the tiles read at each level.
A new file is written to a temporary name beside the target and renamed at the end; a layer added
to an existing GeoPackage is written in one transaction; so a failure or a cancel leaves no
half-written file. Existing files and layers are replaced only when asked (GDAL's convention).
Fields: HEAT_FIELDS (question, score, level, tile "row,col", rank, kind), the one schema of every
heatmap: this file writer, the dock's heat layers and Processing's HEATMAP output.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .answer import Answer, HeatCell
from .errors import InputError

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}
LAYER_NAME = "heatmap"
# (name, kind) of a heat cell's attributes, in order; kind is string | real | integer.
HEAT_FIELDS = (("question", "string"), ("score", "real"), ("level", "integer"),
               ("tile", "string"), ("rank", "integer"), ("kind", "string"))


def heat_values(question: str, cell: HeatCell) -> list:
    """A heat cell's attribute values, in HEAT_FIELDS order."""
    return [str(question), float(cell.score), int(cell.level),
            f"{int(cell.tile[0])},{int(cell.tile[1])}", int(cell.rank), str(cell.kind)]


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


@dataclass(frozen=True)
class HeatmapTarget:
    """Where a heatmap goes: a new file, a file replaced, or a layer added to / replaced in an
    existing GeoPackage (whose other layers are never touched)."""

    path: Path
    layer: str
    action: str     # new-file | replace-file | add-layer | replace-layer


def _gpkg_layer_names(path: Path) -> Optional[List[str]]:
    """The vector layers of a GeoPackage, or None when the file is not a GeoPackage."""
    from osgeo import gdal

    try:
        ds = gdal.OpenEx(str(path), gdal.OF_VECTOR | gdal.OF_UPDATE, allowed_drivers=["GPKG"])
    except RuntimeError:
        return None
    if ds is None:
        return None
    names = [ds.GetLayer(i).GetName() for i in range(ds.GetLayerCount())]
    ds = None
    return names


def heatmap_target(path, layer: Optional[str] = None, overwrite: bool = False,
                   base: str = LAYER_NAME) -> HeatmapTarget:
    """What writing a heatmap at `path` would do, following GDAL's convention: an existing file is
    refused unless `overwrite`; an existing GeoPackage gets a new layer (`layer`, or the first free
    name of `base`, `base`_2, ...), and `overwrite` replaces only the layer of that name."""
    from .output_paths import check_output_file

    path = Path(path)
    driver = _driver_for(path)
    check_output_file(path, "The heatmap")
    if not path.exists():
        return HeatmapTarget(path, layer or base, "new-file")
    if driver != "GPKG":
        if not overwrite:
            raise InputError(f"The heatmap file {path} already exists: choose another name, or pass "
                             "--overwrite to replace it.")
        return HeatmapTarget(path, layer or base, "replace-file")
    names = _gpkg_layer_names(path)
    if names is None:
        if not overwrite:
            raise InputError(f"{path} already exists and is not a GeoPackage that can be written: "
                             "choose another name, or pass --overwrite to replace the file.")
        return HeatmapTarget(path, layer or base, "replace-file")
    lowered = {n.lower() for n in names}      # GeoPackage table names compare case-insensitively
    if layer:
        if layer.lower() not in lowered:
            return HeatmapTarget(path, layer, "add-layer")
        if not overwrite:
            raise InputError(f"{path} already has a layer '{layer}': choose another layer name, or "
                             "pass --overwrite to replace that layer (the others are kept).")
        return HeatmapTarget(path, layer, "replace-layer")
    if overwrite and base.lower() in lowered:
        return HeatmapTarget(path, base, "replace-layer")
    name, number = base, 1
    while name.lower() in lowered:
        number += 1
        name = f"{base}_{number}"
    return HeatmapTarget(path, name, "add-layer")


def spatial_reference(answers: Sequence[Answer]):
    from osgeo import osr

    crs_wkt = next((a.crs_wkt for a in answers if a.crs_wkt), "")
    if not crs_wkt:
        return None
    srs = osr.SpatialReference()
    srs.ImportFromWkt(crs_wkt)
    # Keep X = easting / longitude whatever the CRS's declared axis order.
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def ogr_polygon(ring):
    """An OGR polygon from one closed ring of (x, y) map coordinates."""
    from osgeo import ogr

    linear = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in ring:
        linear.AddPoint_2D(float(x), float(y))
    polygon = ogr.Geometry(ogr.wkbPolygon)
    polygon.AddGeometry(linear)
    return polygon


def create_heat_layer(ds, name: str, srs, question_id: bool = False):
    """A polygon layer with the heat cell fields (and question_id first, for batch files)."""
    from osgeo import ogr

    kinds = {"string": ogr.OFTString, "real": ogr.OFTReal, "integer": ogr.OFTInteger}
    layer = ds.CreateLayer(name, srs, ogr.wkbPolygon)
    for field, kind in ((("question_id", "string"),) if question_id else ()) + HEAT_FIELDS:
        layer.CreateField(ogr.FieldDefn(field, kinds[kind]))
    return layer


def add_heat_cells(layer, answer: Answer, question_id: Optional[str] = None) -> None:
    """One feature per heat cell of `answer`."""
    from osgeo import ogr

    definition = layer.GetLayerDefn()
    names = [name for name, _kind in HEAT_FIELDS]
    for cell in answer.heat_cells:
        feature = ogr.Feature(definition)
        if question_id is not None:
            feature.SetField("question_id", question_id)
        for name, value in zip(names, heat_values(answer.question, cell)):
            feature.SetField(name, value)
        feature.SetGeometry(ogr_polygon(cell.ring))
        layer.CreateFeature(feature)


def _fill_layer(ds, name: str, srs, answers: Sequence[Answer]) -> None:
    layer = create_heat_layer(ds, name, srs)
    try:
        for answer in answers:
            add_heat_cells(layer, answer)
    finally:
        # A traceback keeps this frame alive: drop the layer and the dataset so the caller's
        # close really closes the file.
        layer = ds = None


def _write_file(target: HeatmapTarget, fill) -> None:
    """A whole new file, written under a temporary name and renamed when complete; `fill(ds,
    layer name)` makes its layer."""
    from osgeo import ogr

    path = target.path
    driver_name = _driver_for(path)
    tmp = path.with_name(f".{path.stem}.part-{os.getpid()}{path.suffix}")
    ds = None
    try:
        ds = ogr.GetDriverByName(driver_name).CreateDataSource(str(tmp))
        if ds is None:
            raise InputError(f"Cannot create {path} (OGR {driver_name} refused it): check that "
                             "the folder is writable.")
        fill(ds, target.layer)
        ds = None   # flush and close before the rename
        os.replace(tmp, path)
    except BaseException:
        ds = None
        if tmp.exists():
            tmp.unlink()
        raise


@contextmanager
def transaction(ds):
    """A GDAL dataset transaction: committed when the block ends, rolled back when it raises."""
    ds.StartTransaction()
    try:
        yield ds
    except BaseException:
        ds.RollbackTransaction()
        raise
    ds.CommitTransaction()


def _write_layer(target: HeatmapTarget, fill) -> None:
    """One layer added to (or replacing its namesake in) an existing GeoPackage, in one
    transaction: a failure leaves the file as it was."""
    from osgeo import gdal

    ds = gdal.OpenEx(str(target.path), gdal.OF_VECTOR | gdal.OF_UPDATE, allowed_drivers=["GPKG"])
    try:
        with transaction(ds):
            if target.action == "replace-layer":
                names = [ds.GetLayer(i).GetName().lower() for i in range(ds.GetLayerCount())]
                ds.DeleteLayer(names.index(target.layer.lower()))
            fill(ds, target.layer)
    finally:
        ds = None


def _write(target: HeatmapTarget, fill) -> HeatmapTarget:
    if target.action in ("new-file", "replace-file"):
        _write_file(target, fill)
    else:
        _write_layer(target, fill)
    return target


def write_heatmap(answers: Iterable[Answer], path, layer: Optional[str] = None,
                  overwrite: bool = False) -> Path:
    """One polygon per heat cell of every answer; the CRS is the first answer's raster CRS.

    A new file, or a new layer in an existing GeoPackage (see heatmap_target); an existing file
    or layer is replaced only when `overwrite` is true."""
    return write_heatmap_layer(answers, path, layer, overwrite).path


def write_heatmap_layer(answers: Iterable[Answer], path, layer: Optional[str] = None,
                        overwrite: bool = False, base: str = LAYER_NAME) -> HeatmapTarget:
    """write_heatmap, saying where it went: the file and the layer (the first free name of
    `base` when no `layer` is named)."""
    from osgeo import ogr, osr

    ogr.UseExceptions()
    osr.UseExceptions()
    answers = list(answers)
    srs = spatial_reference(answers)
    return _write(heatmap_target(path, layer, overwrite, base),
                  lambda ds, name: _fill_layer(ds, name, srs, answers))


def copy_heatmap_layer(source, source_layer: str, path, base: str = LAYER_NAME) -> HeatmapTarget:
    """The layer `source_layer` of the GeoPackage `source` copied into `path`, as its first free
    name of `base`: a new file, or a new layer of an existing GeoPackage added in one transaction
    (no other layer is touched; a failure leaves `path` as it was)."""
    from osgeo import gdal, ogr

    ogr.UseExceptions()
    source_ds = gdal.OpenEx(str(source), gdal.OF_VECTOR, allowed_drivers=["GPKG"])
    try:
        layer = source_ds.GetLayerByName(source_layer)
        if layer is None:
            raise InputError(f"{source} has no layer '{source_layer}' to copy.")
        return _write(heatmap_target(path, None, False, base),
                      lambda ds, name: _copy_layer(ds, name, layer))
    finally:
        layer = source_ds = None


def _copy_layer(ds, name: str, source) -> None:
    """`source` (a layer) copied feature by feature into `ds` as `name`: inside the caller's
    transaction (OGR's CopyLayer starts transactions of its own)."""
    from osgeo import ogr

    layer = ds.CreateLayer(name, source.GetSpatialRef(), source.GetGeomType())
    try:
        definition = source.GetLayerDefn()
        for index in range(definition.GetFieldCount()):
            layer.CreateField(definition.GetFieldDefn(index))
        source.ResetReading()
        for feature in source:
            copy = ogr.Feature(layer.GetLayerDefn())
            copy.SetFrom(feature)
            layer.CreateFeature(copy)
    finally:
        layer = ds = None


def delete_heatmap_layer(path, layer: str) -> None:
    """The layer `layer` deleted from the GeoPackage `path` (the others kept); nothing when it
    has no such layer."""
    from osgeo import gdal

    gdal.UseExceptions()
    ds = gdal.OpenEx(str(path), gdal.OF_VECTOR | gdal.OF_UPDATE, allowed_drivers=["GPKG"])
    try:
        names = [ds.GetLayer(i).GetName() for i in range(ds.GetLayerCount())]
        if layer in names:
            ds.DeleteLayer(names.index(layer))
    finally:
        ds = None
