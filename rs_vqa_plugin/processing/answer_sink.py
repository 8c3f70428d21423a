"""Processing outputs written answer by answer, so a killed or cancelled run keeps what it answered.

QGIS's own sink keeps a file's features until the run ends (a GeoPackage in one open transaction):
a run killed after 1,749 answers kept none. Here QGIS still creates the output (its formats, its
`ogr:dbname=... table=...` destinations, its overwrite question in the dialog), then, for the
formats OGR appends to reliably, the file is closed and every answer's rows are appended with OGR,
committed and closed at once. Other destinations (memory layers, databases, formats such as
GeoJSON or XLSX that are rewritten whole) keep QGIS's sink and are complete when the run ends.
CSV text cells are written spreadsheet-safe (no formula runs when the file is opened).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from qgis.core import (QgsFeature, QgsFeatureSink, QgsGeometry, QgsPointXY, QgsProcessingException,
                       QgsVectorFileWriter, QgsWkbTypes)

from ..engine import spreadsheet_safe
from .output_checks import destination_file

# Drivers whose files take appended features in place, keeping the field types QGIS created.
APPENDABLE = ("GPKG", "CSV", "ESRI Shapefile")
SHAPEFILE_NAME_LENGTH = 10

Row = Tuple[Sequence[object], Optional[Sequence[Tuple[float, float]]]]   # (values, polygon ring)


def appendable_file(destination: str, geometry: bool) -> Optional[Tuple[Path, str, str]]:
    """(path, layer name or '', OGR driver) of a file output OGR can append to, else None."""
    target = destination_file(destination)
    if target is None:
        return None
    path, layer_name = target
    driver = QgsVectorFileWriter.driverForExtension(path.suffix.lstrip("."))
    # A table without geometry in a shapefile is only its .dbf, not the .shp QGIS names.
    if driver not in APPENDABLE or (driver == "ESRI Shapefile" and not geometry):
        return None
    return path, layer_name, driver


class AnswerSink:
    """One output of an algorithm: add(rows) per answer; what was added stays on disk."""

    def __init__(self, fields, geometry: bool, sink=None, location=None, written_at_end=""):
        self.fields = fields
        self.geometry = geometry
        self._sink = sink
        self._location = location
        # The file a QGIS sink writes only when the run ends (empty for memory / database layers).
        self.written_at_end = written_at_end
        self._columns: List[int] = []
        self._open_layer = None     # (dataset, layer) kept between answers for transactional formats
        if location is not None:
            self._columns = self._map_columns()

    @classmethod
    def create(cls, algorithm, parameters, name: str, context, fields, wkb_type, crs):
        """(AnswerSink or None when the optional output is not wanted, destination id)."""
        # What was asked for: a file, or a memory / database layer (whose id dest_id then is).
        is_file = destination_file(algorithm.parameterAsOutputLayer(parameters, name, context))
        sink, dest_id = algorithm.parameterAsSink(parameters, name, context, fields, wkb_type, crs)
        if sink is None:
            return None, dest_id
        geometry = wkb_type != QgsWkbTypes.NoGeometry
        location = appendable_file(dest_id, geometry) if is_file else None
        if location is None:
            target = destination_file(dest_id) if is_file else None
            written_at_end = str(target[0]) if target else ""
            return cls(fields, geometry, sink=sink, written_at_end=written_at_end), dest_id
        # Deleting QGIS's writer closes the file it created (empty, with its fields); from now on
        # each answer is appended and committed on its own.
        del sink
        return cls(fields, geometry, location=location), dest_id

    @property
    def file(self) -> str:
        """The file that holds what was added once close() ran ('' for memory / database layers)."""
        return str(self._location[0]) if self._location is not None else self.written_at_end

    # -- OGR appends ------------------------------------------------------------------------------
    def _open(self):
        from osgeo import gdal

        path, layer_name, driver = self._location
        try:
            ds = gdal.OpenEx(str(path), gdal.OF_VECTOR | gdal.OF_UPDATE, allowed_drivers=[driver])
        except RuntimeError as exc:
            raise QgsProcessingException(
                f"Cannot open the output {path} to add answers ({exc}).") from None
        layer = ds.GetLayerByName(layer_name) if layer_name else ds.GetLayer(0)
        if layer is None:
            raise QgsProcessingException(f"The output {path} has no layer '{layer_name}' any more.")
        return ds, layer

    def _map_columns(self) -> List[int]:
        """Our fields' indexes in the file (by name; a shapefile cuts names to 10 characters)."""
        path, _layer_name, driver = self._location
        ds, layer = self._open()
        try:
            definition = layer.GetLayerDefn()
            names = {definition.GetFieldDefn(i).GetName().lower(): i
                     for i in range(definition.GetFieldCount())}
            columns = []
            for field in self.fields:
                name = field.name().lower()
                if driver == "ESRI Shapefile":
                    name = name[:SHAPEFILE_NAME_LENGTH]
                if name not in names:
                    raise QgsProcessingException(
                        f"The output {path} has no field '{field.name()}'.")
                columns.append(names[name])
            return columns
        finally:
            layer = ds = None

    def _append(self, rows: Sequence[Row]) -> None:
        """Append and make durable: one committed transaction where the format has them (kept
        open: reopening a GeoPackage per answer costs ~0.1 s), else open, append and close."""
        from osgeo import ogr

        from ..engine import ogr_polygon

        _path, _layer_name, driver = self._location
        if self._open_layer is None:
            ds, layer = self._open()
            if ds.TestCapability("Transactions"):
                self._open_layer = (ds, layer)
        else:
            ds, layer = self._open_layer
        in_transaction = self._open_layer is not None
        try:
            if in_transaction:
                ds.StartTransaction()
            definition = layer.GetLayerDefn()
            for values, ring in rows:
                feature = ogr.Feature(definition)
                for column, value in zip(self._columns, values):
                    if value is None:
                        continue
                    feature.SetField(column, spreadsheet_safe(value) if driver == "CSV" else value)
                if self.geometry and ring is not None:
                    feature.SetGeometry(ogr_polygon(ring))
                layer.CreateFeature(feature)
            if in_transaction:
                ds.CommitTransaction()
        except BaseException:
            if in_transaction:
                ds.RollbackTransaction()
            raise
        finally:
            layer = ds = None   # without a kept connection, closing writes everything to disk

    def close(self) -> None:
        """Close the kept connection (what was committed is on disk already) or QGIS's sink (a
        file is then written; a memory layer stays with the run's context)."""
        self._open_layer = None
        self._sink = None

    # -- QGIS's sink ------------------------------------------------------------------------------
    def _feature(self, values, ring) -> QgsFeature:
        feature = QgsFeature(self.fields)
        if self.geometry and ring is not None:
            feature.setGeometry(QgsGeometry.fromPolygonXY([[QgsPointXY(x, y) for x, y in ring]]))
        feature.setAttributes(list(values))
        return feature

    def add(self, rows: Sequence[Row]) -> None:
        """Write the rows of one answer (together)."""
        if not rows:
            return
        if self._sink is not None:
            self._sink.addFeatures([self._feature(v, r) for v, r in rows],
                                   QgsFeatureSink.FastInsert)
        else:
            self._append(rows)
