"""Is an overview file still the overviews of its raster? Stamps, fingerprints and content checks.

GDAL trusts `<file>.ovr` blindly: replace a raster by another of the same name and its old
overviews are read as the new image. So every overview file we build records what it was built
from (the raster's size, time and a fingerprint of its header and a few pixel blocks); an overview
file that does not carry our stamp (gdaladdo, QGIS, an older version) is compared with the raster
on a few small windows instead. A truncated or corrupt overview file is told apart from the raster.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
from osgeo import gdal

from .errors import InputError

gdal.UseExceptions()

STAMP_DOMAIN = "RS_VQA"
STAMP_VERSION = "1"
# Open options that hide a raster's own overviews (internal or .ovr): used to read the pixels an
# overview file should hold, and for cache VRTs that must never fall back on a stale .ovr.
NO_OVERVIEWS = ["OVERVIEW_LEVEL=NONE"]
# Blocks per axis sampled for the fingerprint (corners, edges, centre): cheap, content-based.
FINGERPRINT_GRID = 3
# Windows (in overview pixels) compared when an overview file carries no stamp.
CHECK_WINDOW = 32
# Mean difference, as a fraction of the sampled value range, above which an unstamped overview
# is not of this raster. Average- or nearest-built overviews of the same raster stay far below
# (the comparison tries both); another scene of the same size lands around 0.2-0.4.
MISMATCH_FRACTION = 0.08


def open_without_overviews(source):
    return gdal.OpenEx(str(source), gdal.OF_RASTER | gdal.OF_READONLY, open_options=NO_OVERVIEWS)


def _file_stat(source) -> Dict[str, int]:
    if isinstance(source, str) and source.startswith("/vsi"):
        st = gdal.VSIStatL(source)
        return {"size": int(st.size), "mtime_ns": int(st.mtime) * 10**9} if st else {"size": 0, "mtime_ns": 0}
    st = os.stat(source)
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def source_stamp(source) -> Dict[str, str]:
    """What an overview file of `source` is built from: file size, time and a content fingerprint."""
    try:
        ds = open_without_overviews(source)
        digest = hashlib.sha1()
        header = [ds.RasterXSize, ds.RasterYSize, ds.RasterCount, ds.GetGeoTransform(), ds.GetProjection()]
        header += [(gdal.GetDataTypeName(ds.GetRasterBand(i).DataType), ds.GetRasterBand(i).GetNoDataValue())
                   for i in range(1, ds.RasterCount + 1)]
        digest.update(json.dumps(header, default=str).encode())
        for index in sorted({1, ds.RasterCount}):
            band = ds.GetRasterBand(index)
            bx, by = band.GetBlockSize()
            bx, by = min(bx, ds.RasterXSize), min(by, ds.RasterYSize)
            nx, ny = -(-ds.RasterXSize // bx), -(-ds.RasterYSize // by)
            for j in sorted({round(k * (ny - 1) / (FINGERPRINT_GRID - 1)) for k in range(FINGERPRINT_GRID)}):
                for i in sorted({round(k * (nx - 1) / (FINGERPRINT_GRID - 1)) for k in range(FINGERPRINT_GRID)}):
                    x, y = i * bx, j * by
                    digest.update(band.ReadRaster(x, y, min(bx, ds.RasterXSize - x), min(by, ds.RasterYSize - y)))
        ds = None
    except RuntimeError as exc:
        raise InputError(f"{source}: the pixel data cannot be read ({exc}). The file is probably "
                         "truncated or corrupt: copy or export it again.") from None
    stat = _file_stat(source)
    return {"FORMAT": STAMP_VERSION, "SOURCE_SIZE": str(stat["size"]),
            "SOURCE_MTIME_NS": str(stat["mtime_ns"]), "SOURCE_FINGERPRINT": digest.hexdigest()}


def write_stamp(ovr_path: Path, stamp: Dict[str, str], resampling: str) -> None:
    """Record the stamp inside the overview file (a GDAL metadata domain of the TIFF)."""
    ds = gdal.Open(str(ovr_path), gdal.GA_Update)
    ds.SetMetadata({**stamp, "RESAMPLING": resampling}, STAMP_DOMAIN)
    ds = None


@dataclass
class OverviewCheck:
    """Verdict on one overview file: usable, stale (of another raster) or corrupt."""

    verdict: str              # ok | stale | corrupt
    ours: bool                # carries our stamp (we may replace it)
    reason: str = ""
    resampling: str = ""


def _blocks_readable(ds) -> Optional[str]:
    """Read the last block of every level of the overview file: a truncated one fails here."""
    levels = [ds] + [ds.GetRasterBand(1).GetOverview(i).GetDataset()
                     for i in range(ds.GetRasterBand(1).GetOverviewCount())]
    for level in levels:
        for index in sorted({1, level.RasterCount}):
            band = level.GetRasterBand(index)
            if band is None:
                return "a level has fewer bands"
            bx, by = band.GetBlockSize()
            bx, by = min(bx, level.RasterXSize), min(by, level.RasterYSize)
            for x, y in ((0, 0), (level.RasterXSize - bx, level.RasterYSize - by)):
                band.ReadRaster(x, y, bx, by)
    return None


def _content_mismatch(source_ds, ovr_ds) -> Optional[str]:
    """Compare the finest level of an unstamped overview file with the raster it sits beside."""
    sw, sh, ow, oh = source_ds.RasterXSize, source_ds.RasterYSize, ovr_ds.RasterXSize, ovr_ds.RasterYSize
    if ovr_ds.RasterCount != source_ds.RasterCount:
        return f"it has {ovr_ds.RasterCount} bands, the raster {source_ds.RasterCount}"
    factor = max(1, round(sw / ow))
    if abs(ow - sw / factor) > 1 or abs(oh - sh / factor) > 1:
        return f"its {ow} x {oh} px level is not a reduction of the raster's {sw} x {sh} px"
    fx, fy = sw / ow, sh / oh
    side_x, side_y = min(CHECK_WINDOW, ow), min(CHECK_WINDOW, oh)
    spots = {(max(0, min(ow - side_x, int(ow * u) - side_x // 2)), max(0, min(oh - side_y, int(oh * v) - side_y // 2)))
             for u, v in ((0.5, 0.5), (0.25, 0.3), (0.75, 0.7))}
    bands = list(range(1, min(source_ds.RasterCount, 3) + 1))
    # Class rasters: nearest only (GDAL's colour-matching average on a palette band is very slow).
    methods = {"nearest": gdal.GRIORA_NearestNeighbour}
    if source_ds.GetRasterBand(1).GetColorTable() is None:
        methods["average"] = gdal.GRIORA_Average
    stored, candidates = [], {name: [] for name in methods}
    for x, y in sorted(spots):
        stored.append(ovr_ds.ReadAsArray(x, y, side_x, side_y, band_list=bands).astype(np.float64))
        for name, alg in methods.items():
            candidates[name].append(source_ds.ReadAsArray(
                x * fx, y * fy, side_x * fx, side_y * fy, buf_xsize=side_x, buf_ysize=side_y,
                band_list=bands, resample_alg=alg).astype(np.float64))
    stored = np.concatenate([a.ravel() for a in stored])
    finite = np.isfinite(stored)
    errors = {}
    for name, arrays in candidates.items():
        expected = np.concatenate([a.ravel() for a in arrays])
        ok = finite & np.isfinite(expected)
        if not ok.any():
            continue
        both = np.concatenate([stored[ok], expected[ok]])
        spread = float(np.percentile(both, 98) - np.percentile(both, 2)) or float(np.ptp(both)) or 1.0
        errors[name] = float(np.abs(stored[ok] - expected[ok]).mean()) / spread
    if errors and min(errors.values()) > MISMATCH_FRACTION:
        return (f"its pixels differ from the raster's by {min(errors.values()):.0%} of the value range "
                "(it was built from another raster)")
    return None


def check_overview_file(source, ovr_path: Union[Path, str], stamp: Optional[Dict[str, str]] = None) -> OverviewCheck:
    """Is `ovr_path` the overviews of `source` as it is now? `stamp`: source_stamp(source) if known."""
    try:
        ovr_ds = gdal.Open(str(ovr_path), gdal.GA_ReadOnly)
        recorded = ovr_ds.GetMetadata(STAMP_DOMAIN) or {}
        problem = _blocks_readable(ovr_ds)
    except RuntimeError as exc:
        return OverviewCheck("corrupt", False, f"GDAL cannot read it ({exc})")
    ours = recorded.get("FORMAT") == STAMP_VERSION
    if problem:
        return OverviewCheck("corrupt", ours, problem)
    if ours:
        now = stamp or source_stamp(source)
        changed = [what for key, what in (("SOURCE_SIZE", "size"), ("SOURCE_MTIME_NS", "time"),
                                          ("SOURCE_FINGERPRINT", "pixels"))
                   if recorded.get(key) != now[key]]
        if changed:
            return OverviewCheck("stale", True, "the raster changed since it was built ("
                                 + ", ".join(changed) + ")", recorded.get("RESAMPLING", ""))
        return OverviewCheck("ok", True, resampling=recorded.get("RESAMPLING", ""))
    try:
        mismatch = _content_mismatch(open_without_overviews(source), ovr_ds)
    except RuntimeError as exc:
        return OverviewCheck("corrupt", False, f"GDAL cannot read it ({exc})")
    return OverviewCheck("stale", False, mismatch) if mismatch else OverviewCheck("ok", False)
