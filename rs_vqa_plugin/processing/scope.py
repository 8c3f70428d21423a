"""The SCOPE of a question as the engine wants it: an extent tuple or a polygon WKT in the raster's CRS."""

from __future__ import annotations

from typing import Optional, Tuple, Union

from qgis.core import (QgsCoordinateTransform, QgsFeatureRequest, QgsGeometry, QgsProcessingException,
                       QgsProcessingUtils, QgsVectorLayer, QgsWkbTypes)

Scope = Union[None, Tuple[float, float, float, float], str]


def _polygon_union_wkt(features, source_crs, raster_layer, context, label: str) -> str:
    transform = None
    if source_crs.isValid() and raster_layer.crs().isValid() and source_crs != raster_layer.crs():
        transform = QgsCoordinateTransform(source_crs, raster_layer.crs(), context.transformContext())
    parts = []
    for feature in features:
        geometry = QgsGeometry(feature.geometry())
        if geometry.isEmpty():
            continue
        if transform is not None:
            geometry.transform(transform)
        parts.append(geometry)
    if not parts:
        raise QgsProcessingException(f"The scope layer {label} has no polygon to ask inside; select or "
                                     "draw at least one polygon, or leave the scope empty.")
    return QgsGeometry.unaryUnion(parts).asWkt()


def _polygon_layer(value, context) -> Optional[QgsVectorLayer]:
    layer = value if isinstance(value, QgsVectorLayer) else None
    if layer is None and isinstance(value, str) and value:
        found = QgsProcessingUtils.mapLayerFromString(value, context)
        layer = found if isinstance(found, QgsVectorLayer) else None
    return layer


def scope_from_parameters(algorithm, parameters, context, raster_layer) -> Scope:
    """SCOPE: an extent (any CRS, reprojected) or a polygon layer; SCOPE_POLYGONS: polygon features."""
    polygons = parameters.get("SCOPE_POLYGONS")
    extent_value = parameters.get("SCOPE")
    if polygons not in (None, "") and extent_value not in (None, ""):
        raise QgsProcessingException("Give either SCOPE or SCOPE_POLYGONS, not both.")
    if polygons not in (None, ""):
        source = algorithm.parameterAsSource(parameters, "SCOPE_POLYGONS", context)
        if source is None:
            raise QgsProcessingException("SCOPE_POLYGONS could not be opened as a vector layer.")
        return _polygon_union_wkt(source.getFeatures(), source.sourceCrs(), raster_layer, context,
                                  "SCOPE_POLYGONS")
    if extent_value in (None, ""):
        return None
    # A polygon layer given as SCOPE (handy under qgis_process) means its polygons, not its bbox.
    layer = _polygon_layer(extent_value, context)
    if layer is not None:
        if layer.geometryType() != QgsWkbTypes.PolygonGeometry:
            raise QgsProcessingException(f"The scope layer '{layer.name()}' holds "
                                         f"{QgsWkbTypes.geometryDisplayString(layer.geometryType())} "
                                         "features; a scope must be polygons or an extent.")
        return _polygon_union_wkt(layer.getFeatures(QgsFeatureRequest()), layer.crs(), raster_layer,
                                  context, f"'{layer.name()}'")
    extent = algorithm.parameterAsExtent(parameters, "SCOPE", context, raster_layer.crs())
    if extent.isNull() or extent.isEmpty():
        raise QgsProcessingException("SCOPE is an empty extent; give xmin,xmax,ymin,ymax [CRS] or leave "
                                     "it empty to ask about the whole raster.")
    return (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
