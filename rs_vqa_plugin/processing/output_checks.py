"""Processing destinations never write into the run's inputs (the raster and the files GDAL reads
for it, the question file, an image), and two outputs never replace each other's file.

QGIS's own conventions stay as they are otherwise: its dialog asks before replacing an existing
file, and `ogr:dbname=... table=...` adds a layer to an existing GeoPackage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from qgis.core import QgsDataSourceUri, QgsProviderRegistry

from ..engine import InputError, refuse_inputs, same_file

NOT_FILES = ("memory:", "TEMPORARY_OUTPUT", "postgres:", "postgis:", "spatialite:", "mssql:",
             "oracle:", "hana:")


def destination_file(destination) -> Optional[Tuple[Path, str]]:
    """(file, layer name or '') a destination string writes to; None for memory / databases."""
    destination = str(destination or "")
    if not destination or destination.startswith(NOT_FILES):
        return None
    if destination.startswith("ogr:"):
        uri = QgsDataSourceUri(destination[len("ogr:"):])
        return (Path(uri.database()), uri.table()) if uri.database() else None
    parts = QgsProviderRegistry.instance().decodeUri("ogr", destination)
    path = parts.get("path") or ""
    return (Path(path), parts.get("layerName") or "") if path else None


def destination_problem(outputs: Sequence[Tuple[str, object]],
                        inputs: Iterable[Tuple[str, object]]) -> Optional[str]:
    """A message when an output (name, destination) is one of the inputs (label, path), or two
    outputs share a file without each naming its own layer; None when all is well."""
    inputs = [(label, path) for label, path in inputs if path]
    seen: List[Tuple[str, Path, str]] = []
    for name, destination in outputs:
        target = destination_file(destination)
        if target is None:
            continue
        path, layer = target
        try:
            refuse_inputs(path, inputs, name)
        except InputError as exc:
            return str(exc)
        for other, other_path, other_layer in seen:
            if same_file(path, other_path) and (not layer or not other_layer or layer == other_layer):
                return (f"{other} and {name} are the same file {path}: one would replace the "
                        "other. Give each its own file (or its own layer of a GeoPackage).")
        seen.append((name, path, layer))
    return None
