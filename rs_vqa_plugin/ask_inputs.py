"""What a question is asked about, checked one way for the chat dock and Processing: the raster
layer's GDAL source (local files and GDAL virtual paths alike) and the scope, made an extent tuple
or a polygon WKT in the raster's CRS that overlaps the raster. The dock and Processing only turn
their own inputs (the canvas, a selection; parameters) into geometries and call these."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Tuple, Union

from qgis.core import (QgsCoordinateTransform, QgsCoordinateTransformContext, QgsGeometry,
                       QgsProviderRegistry, QgsRasterLayer)

Scope = Union[None, Tuple[float, float, float, float], str]

# Reached over the network by GDAL when the engine opens them: nothing to look at beforehand
# (and no network at check time). Archives (/vsizip/, /vsitar/, /vsigzip/ ...) are local: checked.
NETWORK_PREFIXES = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift",
                    "/vsihdfs", "/vsiwebhdfs")


class ScopeError(ValueError):
    """A scope that cannot be used; the message says which and what to do."""


def raster_source_problem(layer) -> Optional[str]:
    """Why RS-VQA cannot read this layer (as the engine will: its GDAL source), or None."""
    if layer is None:
        return "Choose a raster layer to ask about."
    if not isinstance(layer, QgsRasterLayer):
        return (f"{layer.name()} is not a raster layer: choose a raster (GeoTIFF, COG, VRT, ...).")
    if layer.providerType() != "gdal":
        return (f"{layer.name()} is not a raster file (it comes from the '{layer.providerType()}' "
                "provider); RS-VQA reads rasters through GDAL: save it as a GeoTIFF (Export › "
                "Save As…, or Raster › Conversion › Translate) and ask about the copy.")
    return gdal_source_problem(layer.name(), layer.source())


def gdal_source_problem(name: str, source: str) -> Optional[str]:
    """A missing file or archive member behind a GDAL source, or None (network paths pass)."""
    if source.startswith("/vsi"):
        if source.startswith(NETWORK_PREFIXES):
            return None
        from osgeo import gdal

        if gdal.VSIStatL(source) is not None:
            return None
        return (f"The raster of {name} is missing: GDAL finds nothing at {source} (the archive, "
                "or the file inside it, was moved or deleted). Put it back, or remove the layer "
                "and add the raster from where it is now.")
    path = QgsProviderRegistry.instance().decodeUri("gdal", source).get("path") or source
    if Path(path).is_file():
        return None
    return (f"The file of {name} is missing: {path} was moved or deleted. Put it back, or remove "
            "the layer and add the file from where it is now.")


def extent_scope(rectangle, crs, raster: QgsRasterLayer, label: str, advice: str,
                 context: Optional[QgsCoordinateTransformContext] = None) -> Scope:
    """An extent in `crs` -> (xmin, ymin, xmax, ymax) in the raster's CRS, clipped to the raster."""
    transform = _transform(crs, raster, context)
    box = transform.transformBoundingBox(rectangle) if transform is not None else rectangle
    inside = box.intersect(raster.extent())
    if inside.isEmpty():
        raise ScopeError(f"{label} does not overlap {raster.name()}: {advice}")
    return (inside.xMinimum(), inside.yMinimum(), inside.xMaximum(), inside.yMaximum())


def polygon_scope(geometries: Iterable[QgsGeometry], crs, raster: QgsRasterLayer, label: str,
                  advice: str, context: Optional[QgsCoordinateTransformContext] = None) -> Scope:
    """Polygons in `crs` -> their union as WKT in the raster's CRS; they must overlap the raster."""
    transform = _transform(crs, raster, context)
    parts = []
    for geometry in geometries:
        if geometry is None or geometry.isEmpty():
            continue
        geometry = QgsGeometry(geometry)
        if transform is not None:
            geometry.transform(transform)
        parts.append(geometry)
    if not parts:
        raise ScopeError(f"{label} has no polygon to ask inside: {advice}")
    union = QgsGeometry.unaryUnion(parts)
    if not union.intersects(QgsGeometry.fromRect(raster.extent())):
        raise ScopeError(f"{label} does not overlap {raster.name()}: {advice}")
    return union.asWkt()


def _transform(crs, raster: QgsRasterLayer, context) -> Optional[QgsCoordinateTransform]:
    if not (crs.isValid() and raster.crs().isValid()) or crs == raster.crs():
        return None
    return QgsCoordinateTransform(crs, raster.crs(), context or QgsCoordinateTransformContext())
