"""The SCOPE of a question from Processing's parameters, made a scope in the raster's CRS by the
shared resolver (rs_vqa_plugin/ask_inputs.py), as the dock's: clipped, and refused when it does
not overlap the raster (before any output is written)."""

from __future__ import annotations

from typing import Optional

from qgis.core import (QgsFeatureRequest, QgsProcessingException, QgsProcessingUtils,
                       QgsVectorLayer, QgsWkbTypes)

from ..ask_inputs import Scope, ScopeError, extent_scope, polygon_scope

ADVICE = ("give polygons over the raster, or leave the scope empty to ask about the whole raster.")


def _polygon_layer(value, context) -> Optional[QgsVectorLayer]:
    layer = value if isinstance(value, QgsVectorLayer) else None
    if layer is None and isinstance(value, str) and value:
        found = QgsProcessingUtils.mapLayerFromString(value, context)
        layer = found if isinstance(found, QgsVectorLayer) else None
    return layer


def _polygons(features, crs, raster_layer, context, label: str) -> Scope:
    return polygon_scope((f.geometry() for f in features), crs, raster_layer, label, ADVICE,
                         context.transformContext())


def _resolve(algorithm, parameters, context, raster_layer) -> Scope:
    polygons = parameters.get("SCOPE_POLYGONS")
    extent_value = parameters.get("SCOPE")
    if polygons not in (None, "") and extent_value not in (None, ""):
        raise QgsProcessingException("Give either SCOPE or SCOPE_POLYGONS, not both.")
    if polygons not in (None, ""):
        source = algorithm.parameterAsSource(parameters, "SCOPE_POLYGONS", context)
        if source is None:
            raise QgsProcessingException("SCOPE_POLYGONS could not be opened as a vector layer.")
        return _polygons(source.getFeatures(), source.sourceCrs(), raster_layer, context,
                         "The scope layer SCOPE_POLYGONS")
    if extent_value in (None, ""):
        return None
    # A polygon layer given as SCOPE (handy under qgis_process) means its polygons, not its bbox.
    layer = _polygon_layer(extent_value, context)
    if layer is not None:
        if layer.geometryType() != QgsWkbTypes.PolygonGeometry:
            raise QgsProcessingException(f"The scope layer '{layer.name()}' holds "
                                         f"{QgsWkbTypes.geometryDisplayString(layer.geometryType())} "
                                         "features; a scope must be polygons or an extent.")
        return _polygons(layer.getFeatures(QgsFeatureRequest()), layer.crs(), raster_layer,
                         context, f"The scope layer '{layer.name()}'")
    # In the raster's CRS already (reprojected from the one given with it, if any).
    extent = algorithm.parameterAsExtent(parameters, "SCOPE", context, raster_layer.crs())
    if extent.isNull() or extent.isEmpty():
        raise QgsProcessingException("SCOPE is an empty extent; give xmin,xmax,ymin,ymax [CRS] or leave "
                                     "it empty to ask about the whole raster.")
    return extent_scope(extent, raster_layer.crs(), raster_layer,
                        "The SCOPE extent",
                        "give an extent over the raster (xmin,xmax,ymin,ymax in its CRS, or "
                        "followed by [EPSG:xxxx]), or leave SCOPE empty to ask about the whole "
                        "raster.", context.transformContext())


def scope_from_parameters(algorithm, parameters, context, raster_layer) -> Scope:
    """SCOPE: an extent (any CRS, reprojected) or a polygon layer; SCOPE_POLYGONS: polygon features."""
    try:
        return _resolve(algorithm, parameters, context, raster_layer)
    except ScopeError as exc:
        raise QgsProcessingException(str(exc)) from None
