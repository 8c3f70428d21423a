"""Where to look: the whole raster, the visible map extent, or a selected polygon, in the raster's CRS."""

from __future__ import annotations

from typing import Optional, Tuple, Union

from qgis.core import (QgsCoordinateTransform, QgsGeometry, QgsProject, QgsRasterLayer,
                       QgsVectorLayer, QgsWkbTypes)
from qgis.PyQt.QtCore import QCoreApplication

WHOLE, EXTENT, POLYGON = "whole", "extent", "polygon"
Scope = Union[None, Tuple[float, float, float, float], str]


class ScopeError(ValueError):
    """A scope that cannot be used; the message is for the person at the dock."""


def tr(text: str) -> str:
    return QCoreApplication.translate("Scope", text)


def extent_scope(raster: QgsRasterLayer, canvas) -> Tuple[float, float, float, float]:
    transform = QgsCoordinateTransform(canvas.mapSettings().destinationCrs(), raster.crs(),
                                       QgsProject.instance())
    visible = transform.transformBoundingBox(canvas.extent())
    inside = visible.intersect(raster.extent())
    if inside.isEmpty():
        raise ScopeError(tr("The visible map extent does not overlap {layer}: pan to the raster or "
                            "choose \"Whole layer\".").format(layer=raster.name()))
    return (inside.xMinimum(), inside.yMinimum(), inside.xMaximum(), inside.yMaximum())


def polygon_scope(raster: QgsRasterLayer, vector: Optional[QgsVectorLayer]) -> str:
    if vector is None or vector.geometryType() != QgsWkbTypes.PolygonGeometry:
        raise ScopeError(tr("Choose a polygon layer for the \"Selected polygon\" scope."))
    features = list(vector.getSelectedFeatures())
    if not features:
        raise ScopeError(tr("Select a polygon in {layer} first (or choose another scope).").format(
            layer=vector.name()))
    geometry = QgsGeometry.unaryUnion([f.geometry() for f in features if f.hasGeometry()])
    geometry.transform(QgsCoordinateTransform(vector.crs(), raster.crs(), QgsProject.instance()))
    if not geometry.intersects(QgsGeometry.fromRect(raster.extent())):
        raise ScopeError(tr("The selected polygon does not overlap {layer}.").format(
            layer=raster.name()))
    return geometry.asWkt()


def resolve_scope(kind: str, raster: QgsRasterLayer, canvas=None,
                  vector: Optional[QgsVectorLayer] = None) -> Scope:
    if kind == EXTENT:
        if canvas is None:
            raise ScopeError(tr("There is no map canvas to take the visible extent from."))
        return extent_scope(raster, canvas)
    if kind == POLYGON:
        return polygon_scope(raster, vector)
    return None
