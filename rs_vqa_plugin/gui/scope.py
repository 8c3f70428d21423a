"""Where the dock looks: the whole raster, the visible map extent, or the selected polygons; made
a scope in the raster's CRS by the shared resolver (rs_vqa_plugin/ask_inputs.py), as Processing's."""

from __future__ import annotations

from typing import Optional

from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer, QgsWkbTypes
from qgis.PyQt.QtCore import QCoreApplication

from ..ask_inputs import Scope, ScopeError, extent_scope, polygon_scope

WHOLE, EXTENT, POLYGON = "whole", "extent", "polygon"
__all__ = ["WHOLE", "EXTENT", "POLYGON", "Scope", "ScopeError", "resolve_scope"]


def tr(text: str) -> str:
    return QCoreApplication.translate("Scope", text)


def resolve_scope(kind: str, raster: QgsRasterLayer, canvas=None,
                  vector: Optional[QgsVectorLayer] = None) -> Scope:
    context = QgsProject.instance().transformContext()
    if kind == EXTENT:
        if canvas is None:
            raise ScopeError(tr("There is no map canvas to take the visible extent from."))
        return extent_scope(canvas.extent(), canvas.mapSettings().destinationCrs(), raster,
                            tr("The visible map extent"),
                            tr("pan to the raster or choose \"Whole layer\"."), context)
    if kind == POLYGON:
        if vector is None or vector.geometryType() != QgsWkbTypes.PolygonGeometry:
            raise ScopeError(tr("Choose a polygon layer for the \"Selected polygon\" scope."))
        features = list(vector.getSelectedFeatures())
        if not features:
            raise ScopeError(tr("Select a polygon in {layer} first (or choose another "
                                "scope).").format(layer=vector.name()))
        return polygon_scope([f.geometry() for f in features if f.hasGeometry()], vector.crs(),
                             raster, tr("The selected polygon"),
                             tr("select one over the raster, or choose another scope."), context)
    return None
