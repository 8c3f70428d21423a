"""`batch --heatmaps DIR`: one GeoPackage per raster (DIR/<raster name>.gpkg, layer `heatmap`, in
the raster's CRS) with the heat cells of every question asked about it, field question_id.

Cells are committed before their answer row, so a crash between the two leaves cells of a
question the answers table lacks: a resumed run deletes those first, and the question's cells are
written again with its answer. A file there that this command did not write is refused up front.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, Iterable, List, Set

from .errors import InputError

LAYER = "heatmap"


def heatmap_names(rasters: Iterable[Path]) -> Dict[str, str]:
    """File name per raster (by its resolved path): the raster's name with .gpkg; rasters of one
    name in several folders get a short digest of their path (stable between runs)."""
    rasters = [str(r) for r in rasters]
    by_stem: Dict[str, List[str]] = {}
    for raster in rasters:
        by_stem.setdefault(Path(raster).stem, []).append(raster)
    names = {}
    for stem, group in by_stem.items():
        for raster in group:
            tag = "" if len(group) == 1 else "_" + hashlib.sha1(raster.encode()).hexdigest()[:8]
            names[raster] = f"{stem}{tag}.gpkg"
    return names


class HeatmapFolder:
    def __init__(self, folder, rasters: Iterable[Path]):
        from .output_paths import folder_is_writable

        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"--heatmaps {folder} is a file: give a folder (it is created if "
                             "missing).")
        if not self.folder.absolute().parent.is_dir():
            raise InputError(f"--heatmaps {folder}: the folder {self.folder.absolute().parent} "
                             "does not exist.")
        if self.folder.is_dir() and not folder_is_writable(self.folder):
            raise InputError(f"--heatmaps {folder} cannot be written in; choose another folder.")
        self.paths = {raster: self.folder / name for raster, name in heatmap_names(rasters).items()}
        for path in self.paths.values():
            if path.exists():
                self._check_ours(path)

    def _check_ours(self, path: Path) -> None:
        ds = _open(path)
        layer = ds.GetLayerByName(LAYER) if ds is not None else None
        fields = set()
        if layer is not None:
            definition = layer.GetLayerDefn()
            fields = {definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())}
        layer = ds = None
        if "question_id" not in fields:
            raise InputError(f"{path} exists and is not a heatmap file of `batch` (a GeoPackage "
                             f"with a '{LAYER}' layer and a question_id field): move it away or "
                             "choose another --heatmaps folder.")

    def forget_unanswered(self, answered: Dict[str, Set[str]]) -> int:
        """Delete cells whose question has no answer row (see the module docstring); how many."""
        removed = 0
        for raster, path in self.paths.items():
            if not path.exists():
                continue
            ds = _open(path)
            layer = ds.GetLayerByName(LAYER)
            keep = answered.get(raster, set())
            stale = [f.GetFID() for f in layer if f.GetField("question_id") not in keep]
            if stale:
                ds.StartTransaction()
                for fid in stale:
                    layer.DeleteFeature(fid)
                ds.CommitTransaction()
            removed += len(stale)
            layer = ds = None
        return removed

    def add(self, raster: str, question_id: str, answer) -> None:
        """The answer's cells in the raster's file, in one transaction (the file made at first)."""
        from osgeo import ogr

        from .heatmap import add_heat_cells, create_heat_layer, spatial_reference, transaction

        if not self.paths:
            return
        path = self.paths[raster]
        self.folder.mkdir(exist_ok=True)
        if path.exists():
            ds = _open(path)
        else:
            ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
        try:
            with transaction(ds):
                layer = ds.GetLayerByName(LAYER)
                if layer is None:
                    layer = create_heat_layer(ds, LAYER, spatial_reference([answer]), question_id=True)
                add_heat_cells(layer, answer, question_id)
                layer = None
        finally:
            ds = None


def _open(path: Path):
    from osgeo import gdal

    gdal.UseExceptions()
    try:
        return gdal.OpenEx(str(path), gdal.OF_VECTOR | gdal.OF_UPDATE, allowed_drivers=["GPKG"])
    except RuntimeError:
        return None
