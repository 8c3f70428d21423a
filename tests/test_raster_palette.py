"""Palette (class) rasters: shown in their table's colours, read with nearest, fast even at 16 bits."""

import time

import numpy as np
import pytest
from osgeo import gdal

from rs_vqa_plugin.engine.bands import palette_lut
from rs_vqa_plugin.engine.overview_checks import STAMP_DOMAIN
from rs_vqa_plugin.engine.pyramid import plan_pyramid
from rs_vqa_plugin.engine.raster import RasterSource
from rs_vqa_plugin.engine.reader import PyramidReader

gdal.UseExceptions()
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _colour(i):
    return (i * 37 % 256, i * 91 % 256, i * 53 % 256, 255)


def _land_cover(path, size, dtype=gdal.GDT_Byte, entries=256, nodata=0, transparent=None):
    """Blocky class map (classes 1..12, class 0 = nodata in the top-left corner) with a colour table.
    A GeoTIFF keeps only RGB tables of 2^bits entries: short, grey or transparent ones need a VRT."""
    tif = path.with_suffix(".tif")
    ds = gdal.GetDriverByName("GTiff").Create(str(tif), size, size, 1, dtype, ["TILED=YES", "COMPRESS=DEFLATE"])
    ds.SetGeoTransform((400000, 10, 0, 3300000, 0, -10))
    yy, xx = np.mgrid[0:size, 0:size]
    data = ((xx // 37 + yy // 53) % 12 + 1).astype(np.uint16)
    data[:size // 8, :size // 8] = 0
    ds.GetRasterBand(1).WriteArray(data)
    if path.suffix == ".vrt":
        ds = None
        ds = gdal.Translate(str(path), str(tif), format="VRT")
    band = ds.GetRasterBand(1)
    table = gdal.ColorTable(gdal.GPI_RGB)
    for i in range(entries):
        entry = _colour(i)
        if transparent is not None and i == transparent:
            entry = entry[:3] + (0,)
        table.SetColorEntry(i, entry)
    band.SetRasterColorTable(table)
    band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
    if nodata is not None:
        band.SetNoDataValue(nodata)
    ds = None
    return path, data


def _expected_rgb(classes):
    lut = np.array([_colour(i)[:3] for i in range(int(classes.max()) + 1)], np.uint8)
    return lut[classes]


@pytest.mark.parametrize("name", ["lc.tif", "lc.vrt"])
def test_palette_band_is_shown_in_its_colours(tmp_path, name):
    path, data = _land_cover(tmp_path / name, 300)
    with RasterSource(path) as src:
        assert src.band_choice.palette and src.stretch is None
        assert src.band_choice.to_dict()["shown_as"] == "palette colours"
        rgb, valid = src.read(0, 0, 300, 300, 300, 300)
    np.testing.assert_array_equal(valid, data != 0)
    np.testing.assert_array_equal(rgb[valid], _expected_rgb(data)[valid])
    assert (rgb[~valid] == 0).all()


def test_grey_and_cmyk_tables_become_rgb():
    ds = gdal.GetDriverByName("MEM").Create("", 2, 2, 1, gdal.GDT_Byte)
    for kind, entry, expected in ((gdal.GPI_Gray, (90, 0, 0, 0), (90, 90, 90, 255)),
                                  (gdal.GPI_CMYK, (255, 0, 0, 0), (0, 255, 255, 255)),
                                  (gdal.GPI_RGB, (1, 2, 3, 0), (1, 2, 3, 0))):
        table = gdal.ColorTable(kind)
        table.SetColorEntry(0, entry)
        ds.GetRasterBand(1).SetRasterColorTable(table)
        assert tuple(palette_lut(ds.GetRasterBand(1))[0]) == expected


def test_resampled_palette_reads_hold_only_table_colours(tmp_path):
    """Nearest, never an average: every pixel of the thumbnail and of every tile is a class colour."""
    path, data = _land_cover(tmp_path / "lc.tif", 700)
    colours = {tuple(c) for c in _expected_rgb(np.arange(1, 13))}
    with RasterSource(path) as src:
        reader = PyramidReader(src, plan_pyramid(700, 700, 64, 4))
        thumb, tvalid = reader.read_thumbnail()
        tiles, valid = reader.read_level(2)
    for pixels, ok in ((thumb, tvalid), (tiles, valid)):
        assert ok.any() and {tuple(c) for c in pixels[ok].reshape(-1, 3)} <= colours


def test_transparent_and_unknown_classes_are_missing(tmp_path):
    path, data = _land_cover(tmp_path / "lc.vrt", 120, entries=8, nodata=None, transparent=3)
    with RasterSource(path) as src:
        _, valid = src.read(0, 0, 120, 120, 120, 120)
    # Class 3 has alpha 0 and classes 8..12 have no entry: QGIS draws neither.
    np.testing.assert_array_equal(valid, (data != 3) & (data < 8))


def test_sixteen_bit_palette_is_fast_and_gets_nearest_overviews(tmp_path):
    """A 16-bit table of 65536 entries made GDAL's colour-matching average take minutes
    (profiled: 194 s in the stretch sample, 68 s building overviews, 0.85 s per tile)."""
    path, data = _land_cover(tmp_path / "lc16.tif", 1100, dtype=gdal.GDT_UInt16, entries=65536)
    started = time.perf_counter()
    with RasterSource(path, overview_cache_dir=tmp_path / "cache") as src:
        assert src.overviews.built and src.band_choice.palette
        reader = PyramidReader(src, plan_pyramid(1100, 1100, 64, 4))
        thumb, tvalid = reader.read_thumbnail()
        for lv in reader.plan.levels[:2]:
            reader.read_level(lv.index)
    assert time.perf_counter() - started < 30
    ovr = gdal.Open(str(src.overviews.ovr_path))
    assert ovr.GetMetadata(STAMP_DOMAIN)["RESAMPLING"] == "NEAREST"
    assert set(np.unique(ovr.ReadAsArray())) <= set(range(13))      # classes, never blends
    colours = {tuple(c) for c in _expected_rgb(np.arange(1, 13))}
    assert {tuple(c) for c in thumb[tvalid]} <= colours


def test_an_explicit_palette_band_is_shown_in_colour_too(tmp_path):
    path, data = _land_cover(tmp_path / "lc.tif", 100)
    with RasterSource(path, bands=[1]) as src:
        rgb, valid = src.read(0, 0, 100, 100, 100, 100)
        assert src.band_choice.reason == "the bands asked for" and src.band_choice.palette
    np.testing.assert_array_equal(rgb[valid], _expected_rgb(data)[valid])
