"""Open a GDAL raster read-only and read resampled RGB windows (uint8 + validity) through overviews.

Band choice, 8-bit stretch and validity (nodata, alpha, mask bands) live here; the pyramid reader
asks for source windows at a level's scale and never for the full-resolution image.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal

from .bands import BandChoice, choose, choose_bands, palette_lut  # noqa: F401 (choose_bands: API)
from .errors import InputError
from .geo import GeoReference, georeference_from_dataset
from .overviews import OverviewState, inspect_overviews
from .overviews import build_overviews as _build_overviews
from .progress import CancelToken, EventSink, emit, progress_event

gdal.UseExceptions()

COMPLEX_TYPES = {gdal.GDT_CInt16, gdal.GDT_CInt32, gdal.GDT_CFloat32, gdal.GDT_CFloat64}
STRETCH_PERCENTILES = (2.0, 98.0)
# Long side of the decimated read the stretch percentiles come from (served by a coarse overview).
STRETCH_SAMPLE_SIDE = 1024
# GDAL's default block cache is 5 % of RAM (1.2 GB on a 24 GB machine). Tile windows are read once,
# so a cache that large only grows the process with blocks that are never read again; 128 MB still
# holds a full row of 512 px blocks of a 27k px image for the next row of tiles.
BLOCK_CACHE_MB = 128


def cap_gdal_block_cache(megabytes: int = BLOCK_CACHE_MB) -> None:
    """Lower GDAL's block cache to `megabytes` unless the user set GDAL_CACHEMAX themselves."""
    if gdal.GetConfigOption("GDAL_CACHEMAX"):
        return
    if gdal.GetCacheMax() > megabytes * 2**20:
        gdal.SetCacheMax(megabytes * 2**20)


def _fail(path, what: str, todo: str) -> InputError:
    return InputError(f"{path}: {what}. {todo}")


def _check_blocks_readable(ds, path) -> None:
    """Read the first and last blocks: a truncated file fails here, not halfway through a question."""
    bands = [ds.GetRasterBand(1), ds.GetRasterBand(ds.RasterCount)]
    for band in bands:
        bx, by = band.GetBlockSize()
        bx, by = min(bx, ds.RasterXSize), min(by, ds.RasterYSize)
        for x, y in ((0, 0), (ds.RasterXSize - bx, ds.RasterYSize - by)):
            try:
                band.ReadRaster(x, y, bx, by)
            except RuntimeError as exc:
                raise _fail(path, f"the pixel data cannot be read ({exc})",
                            "The file is probably truncated or corrupt: copy or export it again.") from None


def _open_failure(path: Path, message: str) -> InputError:
    """Say why GDAL refused the file as precisely as we can tell."""
    try:
        vector = gdal.OpenEx(str(path), gdal.OF_VECTOR)
    except RuntimeError:
        vector = None
    if vector is not None and vector.GetLayerCount():
        return _fail(path, "is a vector dataset, not a raster",
                     "Ask about an image layer (GeoTIFF, COG, VRT, ...).")
    if path.suffix.lower() == ".vrt" and "bands" in message.lower():
        return _fail(path, f"has no raster bands ({message})", "Add at least one VRTRasterBand to the VRT.")
    return _fail(path, f"GDAL cannot open it as a raster ({message})",
                 "Use an image GDAL reads (GeoTIFF, COG, VRT, ...); if it is one, it may be "
                 "truncated or corrupt: copy or export it again.")


def open_dataset(path) -> gdal.Dataset:
    """Open read-only with checks that turn every bad input into an InputError naming the file."""
    p = Path(path)
    if not str(path).startswith("/vsi"):
        if not p.exists():
            raise _fail(p, "no such file", "Check the path (and that the drive is mounted).")
        if p.is_dir():
            raise _fail(p, "is a folder, not a raster",
                        "Pick an image file inside it (GeoTIFF, COG, VRT, JPEG2000, ...).")
    try:
        ds = gdal.Open(str(path), gdal.GA_ReadOnly)
    except RuntimeError as exc:
        raise _open_failure(p, str(exc)) from None
    if ds is None:
        raise _fail(p, "GDAL cannot open it as a raster", "Use a GeoTIFF, COG or VRT.")
    if ds.RasterCount == 0:
        subs = ds.GetSubDatasets()
        hint = (f"It holds subdatasets; open one of them, e.g. {subs[0][0]}" if subs else
                "It may be a vector file or an empty VRT; give a raster with at least one band.")
        raise _fail(p, "has no raster bands", hint)
    if ds.RasterXSize < 1 or ds.RasterYSize < 1:
        raise _fail(p, f"has an empty size {ds.RasterXSize} x {ds.RasterYSize}", "Give a non-empty raster.")
    for i in range(1, ds.RasterCount + 1):
        dtype = ds.GetRasterBand(i).DataType
        if dtype in COMPLEX_TYPES:
            raise _fail(p, f"band {i} holds complex numbers ({gdal.GetDataTypeName(dtype)})",
                        "Convert it to amplitude or intensity first (e.g. with the QGIS raster "
                        "calculator or gdal_calc.py) and ask again on that raster.")
    _check_blocks_readable(ds, p)
    return ds


# GDAL's Python bindings turn a float window into the integer window GDAL range-checks by rounding
# offset and size separately, half up (int(v + 0.5)), and keep the float window for the sampling.
# A window that ends on the raster edge with both at .5 (offset 55.5 + size 55.5 of 111 px) then
# becomes 56 + 56 = 112 px, "Access window out of range"; a size under half a pixel rounds to 0 and
# GDAL skips the read, leaving the buffer unfilled. The smallest window we hand over:
MIN_WINDOW_PX = 0.5


def gdal_window(offset: float, size: float, start: float, end: float) -> Tuple[float, float]:
    """(offset, size) of a float window along one axis, inside [start, end], that GDAL's rounding
    keeps inside too. The window moves by at most a few ulps, or widens (centred) to half a pixel
    when narrower: the sub-pixel geometry is kept."""
    span = float(end) - float(start)
    size = min(float(size), span)
    if size < MIN_WINDOW_PX:
        offset -= (MIN_WINDOW_PX - size) / 2.0
        size = min(MIN_WINDOW_PX, span)
    offset = min(max(float(offset), float(start)), end - size)
    for _ in range(8):
        if int(offset + 0.5) + int(size + 0.5) <= end:
            return offset, size
        # Only offset and size both at (about) .5 get here: one ulp down makes the offset round down.
        offset = math.nextafter(offset, -math.inf)
    # Not reached in practice: an integer offset never rounds past `end` (size <= end - offset).
    return float(math.floor(offset)), size


def resampling_for(src_w: float, src_h: float, out_w: int, out_h: int, classes: bool = False) -> int:
    """Average when shrinking (antialiasing, and GDAL then reads the overview); bilinear when
    enlarging (the finest level is up to B/L larger than the source): averaging over less than
    one source pixel is only a blocky nearest there, and GDAL's average path is 3x slower.
    Nearest for classes (a palette band): an average of class numbers is no class, and GDAL's
    colour-matching average on a palette band costs seconds per tile (minutes on a 16-bit one)."""
    if classes:
        return gdal.GRIORA_NearestNeighbour
    if out_w < src_w - 1e-9 or out_h < src_h - 1e-9:
        return gdal.GRIORA_Average
    return gdal.GRIORA_Bilinear


class RasterSource:
    """A raster (or a scope window of it) as RGB uint8 + validity, read through overviews."""

    def __init__(self, path, bands=None, window=None, overview_cache_dir=None, build_overviews=True,
                 events: Optional[EventSink] = None, cancel: Optional[CancelToken] = None,
                 use_cache: bool = False):
        self.path = Path(path)
        ds = open_dataset(path)
        cap_gdal_block_cache()
        self.full_width, self.full_height = ds.RasterXSize, ds.RasterYSize
        self.band_count = ds.RasterCount
        self.band_choice: BandChoice = choose(ds, bands, self.path)
        self.bands = self.band_choice.bands
        # A palette band is shown in its colours (RGBA per class), never stretched or averaged.
        self.palette = palette_lut(ds.GetRasterBand(self.bands[0])) if self.band_choice.palette else None
        self.xoff, self.yoff, self.width, self.height = self._check_window(window)
        full_georef = georeference_from_dataset(ds, self.path.name)
        self.georef: GeoReference = full_georef.offset(self.xoff, self.yoff)
        self.crs_wkt, self.epsg = full_georef.crs_wkt, full_georef.epsg
        ds = None
        if build_overviews:
            self.overviews: OverviewState = _build_overviews(
                path, overview_cache_dir, use_cache=use_cache, events=events, cancel=cancel)
        else:
            self.overviews = inspect_overviews(path, overview_cache_dir)
        if self.overviews.note and self.overviews.ignored is not None:
            emit(events, progress_event("overviews", 1.0, self.overviews.note))
        # Reads go through the cache VRT when overviews live there; both are opened read-only.
        self._ds = self.overviews.open()
        self._read_bands = sorted(set(self.bands))
        self._nodata = [self._ds.GetRasterBand(b).GetNoDataValue() for b in self._read_bands]
        self.mask_kind = self._mask_kind()
        # A polygon scope (engine.scope_mask.ScopeMask): pixels outside it read as missing.
        self.scope_mask = None
        self.pixels_read = 0
        emit(events, progress_event("read", 0.0, f"{self.path.name}: {self.band_choice.describe()}"))
        emit(events, progress_event("read", 0.0, f"sampling {self.path.name} for the 8-bit stretch"))
        self.stretch = self._stretch_limits()

    # -- set-up -------------------------------------------------------------------------------
    def _check_window(self, window) -> Tuple[int, int, int, int]:
        if window is None:
            return 0, 0, self.full_width, self.full_height
        xoff, yoff, xsize, ysize = (int(round(v)) for v in window)
        if xsize < 1 or ysize < 1 or xoff < 0 or yoff < 0 or \
                xoff + xsize > self.full_width or yoff + ysize > self.full_height:
            raise _fail(self.path, f"the window {tuple(window)} is outside its "
                        f"{self.full_width} x {self.full_height} pixels",
                        "Draw the scope inside the raster's extent.")
        return xoff, yoff, xsize, ysize

    def _mask_kind(self) -> str:
        flags = self._ds.GetRasterBand(self._read_bands[0]).GetMaskFlags()
        if flags & gdal.GMF_ALL_VALID:
            return "none"
        if flags & gdal.GMF_NODATA:
            return "nodata"
        return "alpha" if flags & gdal.GMF_ALPHA else "mask"

    def _stretch_limits(self) -> Optional[List[Tuple[float, float]]]:
        """Per band 2/98 percentiles of a decimated read (a coarse overview), or None for 8-bit."""
        types = {self._ds.GetRasterBand(b).DataType for b in self._read_bands}
        if types == {gdal.GDT_Byte} or self.palette is not None:
            return None
        factor = max(1.0, max(self.width, self.height) / STRETCH_SAMPLE_SIDE)
        out_w, out_h = max(1, int(self.width / factor)), max(1, int(self.height / factor))
        values, valid = self._read_raw(0, 0, self.width, self.height, out_w, out_h)
        limits = []
        for band_values in values.astype(np.float64):
            v = band_values[valid & np.isfinite(band_values)]
            if v.size == 0:
                limits.append((0.0, 1.0))
                continue
            lo, hi = np.percentile(v, STRETCH_PERCENTILES)
            limits.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
        return limits

    # -- reads ---------------------------------------------------------------------------------
    def _read_raw(self, src_x, src_y, src_w, src_h, out_w, out_h):
        """(bands, h, w) values (native type) + validity, one resampled windowed read (overviews used)."""
        if src_w <= 0 or src_h <= 0 or src_x < 0 or src_y < 0 or \
                src_x + src_w > self.width + 1e-6 or src_y + src_h > self.height + 1e-6:
            raise ValueError(f"window {(src_x, src_y, src_w, src_h)} outside {self.width} x {self.height}")
        # Float windows: GDAL keeps the sub-pixel geometry, so a level read matches its scale exactly.
        x, w = gdal_window(self.xoff + src_x, src_w, self.xoff, self.xoff + self.width)
        y, h = gdal_window(self.yoff + src_y, src_h, self.yoff, self.yoff + self.height)
        resample = resampling_for(w, h, out_w, out_h, classes=self.palette is not None)
        try:
            data = self._ds.ReadAsArray(x, y, w, h, buf_xsize=int(out_w), buf_ysize=int(out_h),
                                        band_list=self._read_bands, resample_alg=resample)
            data = data.reshape(len(self._read_bands), int(out_h), int(out_w))
            valid = self._validity(data, x, y, w, h, out_w, out_h, resample)
        except RuntimeError as exc:
            raise _fail(self.path, f"reading pixels failed ({exc})",
                        "The file may be truncated or corrupt: copy or export it again.") from None
        self.pixels_read += int(out_w) * int(out_h)
        return data, valid

    def _validity(self, data, x, y, w, h, out_w, out_h, resample) -> np.ndarray:
        if self.mask_kind == "nodata":
            # A pixel is missing only when every band says so (GDAL's per-dataset reading).
            invalid = np.ones(data.shape[1:], bool)
            for band_values, nodata in zip(data, self._nodata):
                bad = ~np.isfinite(band_values) if np.issubdtype(band_values.dtype, np.floating) \
                    else np.zeros(band_values.shape, bool)
                if nodata is not None:
                    # Floats: compare in the band's precision (GDAL stores nodata as a double, a
                    # Float32 band holds it rounded). Integers: promote, so an out-of-range nodata
                    # matches nothing instead of wrapping onto a real value.
                    floating = np.issubdtype(band_values.dtype, np.floating)
                    bad |= band_values == (band_values.dtype.type(nodata) if floating else nodata)
                invalid &= bad
            return ~invalid
        if self.mask_kind in ("alpha", "mask"):
            mask = self._ds.GetRasterBand(self._read_bands[0]).GetMaskBand().ReadAsArray(
                x, y, w, h, buf_xsize=int(out_w), buf_ysize=int(out_h), resample_alg=resample)
            return mask >= 128
        if np.issubdtype(data.dtype, np.floating):
            return np.isfinite(data).all(axis=0)
        return np.ones(data.shape[1:], bool)

    def read(self, src_x, src_y, src_w, src_h, out_w, out_h):
        """Window in scope pixels (floats allowed) -> (uint8 [out_h, out_w, 3], valid bool [out_h, out_w])."""
        values, valid = self._read_raw(src_x, src_y, src_w, src_h, out_w, out_h)
        if self.scope_mask is not None:
            valid = valid & self.scope_mask.inside(src_x, src_y, src_w, src_h, int(out_w), int(out_h))
        if self.palette is not None:
            rgb, valid = self._palette_rgb(values[0], valid)
            rgb[~valid] = 0
            return rgb, valid
        rgb = np.empty(values.shape[1:] + (3,), np.uint8)
        for channel, band in enumerate(self.bands * 3 if len(self.bands) == 1 else self.bands):
            i = self._read_bands.index(band)
            if self.stretch is None:
                rgb[..., channel] = values[i]   # 8-bit data: no arithmetic on the hot path
                continue
            lo, hi = self.stretch[i]
            # Values far outside the stretch (a nodata of -3.4e38, inf) overflow to +-inf: clipped.
            with np.errstate(over="ignore", invalid="ignore"):
                plane = (values[i].astype(np.float32) - lo) * (255.0 / (hi - lo)) + 0.5
            rgb[..., channel] = np.clip(np.nan_to_num(plane, nan=0.0), 0, 255)
        rgb[~valid] = 0
        return rgb, valid

    def _palette_rgb(self, classes: np.ndarray, valid: np.ndarray):
        """Class numbers -> their table's colours; a class outside the table or with alpha 0 (drawn
        transparent by QGIS) is missing."""
        lut = self.palette
        index = classes.astype(np.int64)
        known = (index >= 0) & (index < len(lut))
        rgba = lut[np.clip(index, 0, len(lut) - 1)]
        return np.ascontiguousarray(rgba[..., :3]), valid & known & (rgba[..., 3] > 0)

    def file_list(self) -> List[str]:
        """The files the pixels come from, as GDAL sees them (the raster, its .ovr and .msk, a
        VRT's sources, the overview cache VRT): what must be unchanged for a reuse. Not the
        .aux.xml: QGIS rewrites it with statistics whenever it opens the layer; what the pixels
        take from it (nodata, colour table and interpretation) is in pixel_settings()."""
        files = {os.fspath(self.path)}
        if self._ds is not None:
            files.update(self._ds.GetFileList() or [])
        return sorted(f for f in files if not f.lower().endswith(".aux.xml"))

    def pixel_settings(self) -> tuple:
        """What turns the files' values into this source's RGB and validity, besides the values."""
        palette = None if self.palette is None else hashlib.blake2b(self.palette.tobytes()).hexdigest()
        return ((self.xoff, self.yoff, self.width, self.height), tuple(self.bands), palette,
                self.stretch, tuple(self._nodata), self.mask_kind,
                str(self.overviews.read_path), tuple(self.overviews.open_options))

    def close(self) -> None:
        self._ds = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def describe(path, cache_dir=None) -> dict:
    """What `pyramid --json` prints about the raster itself (nothing is built or written)."""
    ds = open_dataset(path)
    georef = georeference_from_dataset(ds, Path(path).name)
    bands = []
    for i in range(1, ds.RasterCount + 1):
        b = ds.GetRasterBand(i)
        bands.append({"index": i, "type": gdal.GetDataTypeName(b.DataType),
                      "colour": gdal.GetColorInterpretationName(b.GetColorInterpretation()),
                      "nodata": b.GetNoDataValue(), "description": b.GetDescription()})
    info = {
        "path": os.fspath(path),
        "driver": ds.GetDriver().ShortName,
        "width": ds.RasterXSize, "height": ds.RasterYSize,
        "band_count": ds.RasterCount,
        "data_types": sorted({b["type"] for b in bands}),
        "bands": bands,
        "rgb_bands": choose_bands(ds, None, path),
        "rgb_bands_from": choose(ds, None, path).reason,
        "crs": {"wkt": georef.crs_wkt, "epsg": georef.epsg,
                "authority": f"EPSG:{georef.epsg}" if georef.epsg else None,
                "is_geographic": georef.is_geographic},
        "geotransform": list(georef.geotransform),
        "warnings": list(georef.warnings),
    }
    ds = None
    info["overviews"] = inspect_overviews(path, cache_dir).to_dict()
    return info
