"""Small synthetic GeoTIFFs for tests (real GDAL files in tmp dirs), importable by every stream.

    from tests.rasters import write_geotiff, make_rgb_scene
    write_geotiff(tmp_path / "a.tif", array)            # array (bands, h, w), dtype from the array
    make_rgb_scene(tmp_path / "rgb.tif", size=(600, 400), seed=1)
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from osgeo import gdal, osr

gdal.UseExceptions()

# A UTM 17N scene at 0.5 m and a lon/lat one at ~1 m, both north-up.
UTM_GEOTRANSFORM = (400000.0, 0.5, 0.0, 3300000.0, 0.0, -0.5)
LONLAT_GEOTRANSFORM = (-82.3, 1e-5, 0.0, 29.65, 0.0, -1e-5)
# A rotated grid (about 10 degrees) in UTM: the affine terms are all non-zero.
ROTATED_GEOTRANSFORM = (400000.0, 0.4924, 0.0868, 3300000.0, 0.0868, -0.4924)

Size = Union[int, Tuple[int, int]]


def _size(size: Size) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def write_geotiff(path, array: np.ndarray, dtype=None, epsg: Optional[int] = 32617,
                  geotransform: Optional[Sequence[float]] = None, nodata=None, tiled: bool = True,
                  colour_interp: Optional[Sequence[int]] = None, compress: str = "DEFLATE",
                  block: int = 256, mask: Optional[np.ndarray] = None) -> Path:
    """Write `array` (bands, h, w) or (h, w) as a GeoTIFF and return its path.

    epsg=None writes no CRS; geotransform=None uses UTM_GEOTRANSFORM (or LONLAT_GEOTRANSFORM for
    EPSG:4326) unless epsg is None too, then no geotransform at all. colour_interp: one
    gdal.GCI_* per band. mask: bool (h, w), written as an internal per-dataset mask band.
    """
    path = Path(path)
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    array = array.astype(dtype) if dtype is not None else array
    bands, height, width = array.shape
    from osgeo import gdal_array

    gdal_type = gdal_array.NumericTypeCodeToGDALTypeCode(array.dtype)
    options = [f"COMPRESS={compress}"]
    if tiled:
        options += ["TILED=YES", f"BLOCKXSIZE={block}", f"BLOCKYSIZE={block}"]
    ds = gdal.GetDriverByName("GTiff").Create(str(path), width, height, bands, gdal_type, options)
    if geotransform is None and epsg is not None:
        geotransform = LONLAT_GEOTRANSFORM if epsg == 4326 else UTM_GEOTRANSFORM
    if geotransform is not None:
        ds.SetGeoTransform(tuple(geotransform))
    if epsg is not None:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        ds.SetProjection(srs.ExportToWkt())
    for i in range(bands):
        band = ds.GetRasterBand(i + 1)
        if nodata is not None:
            band.SetNoDataValue(float(nodata))
        if colour_interp is not None:
            band.SetColorInterpretation(colour_interp[i])
        band.WriteArray(array[i])
    if mask is not None:
        ds.CreateMaskBand(gdal.GMF_PER_DATASET)
        ds.GetRasterBand(1).GetMaskBand().WriteArray(np.where(mask, 255, 0).astype(np.uint8))
    ds.FlushCache()
    ds = None
    return path


def texture(width: int, height: int, seed: int = 0, bands: int = 3, x0: int = 0, y0: int = 0) -> np.ndarray:
    """Smooth but detailed float pattern in 0..1, (bands, h, w); windows of one big scene tile exactly."""
    rng = np.random.default_rng(seed)
    freqs = rng.uniform(0.003, 0.08, size=(bands, 4, 2))
    phases = rng.uniform(0, 2 * np.pi, size=(bands, 4))
    yy, xx = np.mgrid[y0:y0 + height, x0:x0 + width].astype(np.float32)
    out = np.empty((bands, height, width), np.float32)
    for b in range(bands):
        acc = np.zeros((height, width), np.float32)
        for k in range(4):
            acc += np.sin(xx * freqs[b, k, 0] + yy * freqs[b, k, 1] + phases[b, k])
        out[b] = 0.5 + acc / 8.0
    return np.clip(out, 0.0, 1.0)


def make_rgb_scene(path, size: Size = 512, seed: int = 0, **kwargs) -> Path:
    """Byte RGB (colour interpretation set), UTM 17N unless kwargs say otherwise."""
    w, h = _size(size)
    data = (texture(w, h, seed) * 255).astype(np.uint8)
    kwargs.setdefault("colour_interp", (gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand))
    return write_geotiff(path, data, **kwargs)


def make_uint16_4band(path, size: Size = 400, seed: int = 1, **kwargs) -> Path:
    """UInt16 4-band (B, G, R, NIR-like order, no colour interpretation), values in 300..3300."""
    w, h = _size(size)
    data = (300 + texture(w, h, seed, bands=4) * 3000).astype(np.uint16)
    return write_geotiff(path, data, **kwargs)


def make_float_nodata(path, size: Size = 300, nodata: float = -9999.0, seed: int = 2,
                      hole: Tuple[int, int, int, int] = None, **kwargs) -> Path:
    """Float32 single band (e.g. elevation) with a nodata rectangle hole=(x0, y0, x1, y1)."""
    w, h = _size(size)
    data = (100.0 + texture(w, h, seed, bands=1) * 50.0).astype(np.float32)
    x0, y0, x1, y1 = hole if hole is not None else (0, 0, w // 2, h // 2)
    data[0, y0:y1, x0:x1] = nodata
    return write_geotiff(path, data, nodata=nodata, **kwargs)
