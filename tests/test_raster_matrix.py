"""A matrix of odd and bad rasters through the real reader: each reads, or fails with a clear error.

Every case is a real file GDAL writes (GeoTIFF unless the case is about another format); each is
read through RasterSource + PyramidReader (thumbnail and every tile of every level) with the
default model's tile (64 px) and the paper's (336 px). "Reads" means the right shapes, padding
marked, and the validity the case calls for; a raster that cannot be used must raise an InputError
that names the file and says what is wrong.
"""

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from rs_vqa_plugin.engine.errors import InputError
from rs_vqa_plugin.engine.pyramid import plan_pyramid
from rs_vqa_plugin.engine.raster import RasterSource
from rs_vqa_plugin.engine.reader import PyramidReader
from tests.rasters import ROTATED_GEOTRANSFORM, texture, write_geotiff

gdal.UseExceptions()
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

RGB = (gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand)


def _rgb(w, h, seed=0):
    return (texture(w, h, seed) * 255).astype(np.uint8)


def _palette(path, data, dtype):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[1], data.shape[0], 1, dtype, ["TILED=YES"])
    ds.GetRasterBand(1).WriteArray(data)
    table = gdal.ColorTable()
    for i in range(int(data.max()) + 1):
        table.SetColorEntry(i, (i * 40 % 256, i * 90 % 256, i * 150 % 256, 255))
    ds.GetRasterBand(1).SetRasterColorTable(table)
    ds = None
    return path


def _classes(w, h):
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx // 7 + yy // 5) % 6 + 1).astype(np.uint16)


def _jpeg(path):
    mem = gdal.GetDriverByName("MEM").Create("", 90, 70, 3, gdal.GDT_Byte)
    for b in range(3):
        mem.GetRasterBand(b + 1).WriteArray(_rgb(90, 70, seed=b)[b])
    gdal.GetDriverByName("JPEG").CreateCopy(str(path), mem)
    return path


def _missing_source_vrt(path):
    src = write_geotiff(path.parent / "gone.tif", _rgb(40, 40))
    gdal.Translate(str(path), str(src), format="VRT")
    src.unlink()
    return path


def _external_mask(path):
    write_geotiff(path, _rgb(120, 80), colour_interp=RGB)
    ds = gdal.Open(str(path))                    # read-only: GDAL writes path.msk beside it
    ds.CreateMaskBand(gdal.GMF_PER_DATASET)
    mask = np.full((80, 120), 255, np.uint8)
    mask[:, :60] = 0
    ds.GetRasterBand(1).GetMaskBand().WriteArray(mask)
    ds = None
    return path


def _float(w, h, fill=None, seed=0):
    data = (100 + texture(w, h, seed, bands=1) * 50).astype(np.float32)
    if fill is not None:
        data[...] = fill
    return data


# name -> (builder(path) -> path, expectation): "all" every content pixel valid, "none" no pixel
# valid, "some" a part valid, or ("error", text the InputError must hold).
CASES = {
    "1x1 RGB": (lambda p: write_geotiff(p, _rgb(1, 1), colour_interp=RGB), "all"),
    "1x2000 strip": (lambda p: write_geotiff(p, _rgb(1, 2000), colour_interp=RGB), "all"),
    "2000x1 strip": (lambda p: write_geotiff(p, _rgb(2000, 1), colour_interp=RGB), "all"),
    "4000x3 aspect 1333": (lambda p: write_geotiff(p, _rgb(4000, 3), colour_interp=RGB), "all"),
    "3x4000 aspect 1333": (lambda p: write_geotiff(p, _rgb(3, 4000), colour_interp=RGB), "all"),
    "111x111 float DEM with nodata": (
        lambda p: write_geotiff(p, np.where(np.arange(111) < 9, -9999, _float(111, 111)).astype(np.float32),
                                nodata=-9999), "some"),
    "337x671 odd sizes": (lambda p: write_geotiff(p, _rgb(337, 671), colour_interp=RGB), "all"),
    "nodata everywhere": (lambda p: write_geotiff(p, _float(90, 60, fill=-9999), nodata=-9999), "none"),
    "NaN everywhere": (lambda p: write_geotiff(p, _float(90, 60, fill=np.nan)), "none"),
    "NaN as nodata, half NaN": (
        lambda p: write_geotiff(p, np.where(np.arange(90) < 45, np.nan, _float(90, 60)).astype(np.float32),
                                nodata=float("nan")), "some"),
    "+-inf and NaN in Float64": (
        lambda p: write_geotiff(p, np.where(np.arange(90) % 3 == 0, np.inf, _float(90, 60)).astype(np.float64)),
        "some"),
    "constant value": (lambda p: write_geotiff(p, np.full((1, 50, 70), 7, np.uint16)), "all"),
    "rotated geotransform": (
        lambda p: write_geotiff(p, _rgb(150, 100), colour_interp=RGB, geotransform=ROTATED_GEOTRANSFORM), "all"),
    "south-up geotransform": (
        lambda p: write_geotiff(p, _rgb(150, 100), colour_interp=RGB, geotransform=(0, 1, 0, 0, 0, 1)), "all"),
    "no CRS, no geotransform": (lambda p: write_geotiff(p, _rgb(150, 100), epsg=None), "all"),
    "1-band Byte": (lambda p: write_geotiff(p, _rgb(150, 100)[:1]), "all"),
    "2-band (grey + data)": (lambda p: write_geotiff(p, _rgb(150, 100)[:2]), "all"),
    "2-band grey + alpha, half transparent": (
        lambda p: write_geotiff(p, np.concatenate([_rgb(150, 100)[:1],
                                                   np.where(np.arange(150) < 75, 0, 255)[None, None]
                                                   .repeat(100, 1).astype(np.uint8)]),
                                colour_interp=(gdal.GCI_GrayIndex, gdal.GCI_AlphaBand)), "some"),
    "4-band RGBA": (
        lambda p: write_geotiff(p, np.concatenate([_rgb(150, 100), np.full((1, 100, 150), 255, np.uint8)]),
                                colour_interp=RGB + (gdal.GCI_AlphaBand,)), "all"),
    "alpha all zero": (
        lambda p: write_geotiff(p, np.concatenate([_rgb(20, 20), np.zeros((1, 20, 20), np.uint8)]),
                                colour_interp=RGB + (gdal.GCI_AlphaBand,)), "none"),
    "5 bands, no metadata": (lambda p: write_geotiff(p, (texture(150, 100, bands=5) * 4000).astype(np.uint16)), "all"),
    "palette Byte": (lambda p: _palette(p, _classes(150, 100).astype(np.uint8), gdal.GDT_Byte), "all"),
    "palette UInt16": (lambda p: _palette(p, _classes(150, 100), gdal.GDT_UInt16), "all"),
    "Int16 negative (bathymetry)": (lambda p: write_geotiff(p, (-5000 + texture(150, 100, bands=1) * 4000)
                                                              .astype(np.int16), nodata=-32768), "all"),
    "Int32 and UInt32 extremes": (lambda p: write_geotiff(p, np.array([[[0, 2**31 - 1] * 20] * 30], np.int64)
                                                          .astype(np.int32)), "all"),
    "internal mask band": (lambda p: write_geotiff(p, _rgb(120, 80), colour_interp=RGB,
                                                   mask=np.arange(120)[None].repeat(80, 0) < 80), "some"),
    "external .msk mask": (_external_mask, "some"),
    "nodata outside the type (Byte, -9999)": (lambda p: write_geotiff(p, _rgb(60, 40), colour_interp=RGB,
                                                                      nodata=-9999), "all"),
    "JPEG (no georeference)": (lambda p: _jpeg(p.with_suffix(".jpg")), "all"),
    "strip layout, no tiling": (lambda p: write_geotiff(p, _rgb(700, 300), colour_interp=RGB, tiled=False), "all"),
    "complex CInt16": (lambda p: _complex(p), ("error", "complex numbers")),
    "VRT whose source is gone": (lambda p: _missing_source_vrt(p.with_suffix(".vrt")), ("error", "gone.tif")),
    "1x1 whose pixel is nodata": (lambda p: write_geotiff(p, np.zeros((1, 1, 1), np.uint8), nodata=0), "none"),
    "6000x5 strip (overviews)": (lambda p: write_geotiff(p, _rgb(6000, 5), colour_interp=RGB), "all"),
    "signed byte (Int8)": (lambda p: _signed_byte(p), "all"),
    "Float32 nodata at the type's lowest": (
        lambda p: write_geotiff(p, np.where(np.arange(90) < 30, np.finfo(np.float32).min, _float(90, 60))
                                .astype(np.float32), nodata=float(np.finfo(np.float32).min)), "some"),
    "VRT mixing Byte and UInt16 bands": (lambda p: _mixed_vrt(p.with_suffix(".vrt")), "all"),
    "single band marked alpha": (lambda p: write_geotiff(p, _rgb(40, 30)[:1], colour_interp=(gdal.GCI_AlphaBand,)),
                                 "all"),     # nothing else to show: the band is the data
    "palette classes beyond the table": (lambda p: _palette_short(p), "some"),
    "stale .ovr of another raster": (lambda p: _stale_ovr(p), "all"),
    "truncated .ovr": (lambda p: _truncated_ovr(p), "all"),
}

# Extra checks on what the model is shown: (bands chosen, thumbnail, validity, path) -> None.


def _table_colours_only(bands, thumb, valid, path):
    ds = gdal.Open(str(path))
    table = ds.GetRasterBand(1).GetColorTable()
    colours = {table.GetColorEntry(i)[:3] for i in range(table.GetCount())}
    assert {tuple(int(v) for v in c) for c in thumb[valid]} <= colours, "palette shown as grey class numbers"


def _same_as_fresh(bands, thumb, valid, path):
    ds = gdal.OpenEx(str(path), gdal.OF_RASTER, open_options=["OVERVIEW_LEVEL=NONE"])
    t = thumb.shape[0]
    w, h = (t, max(1, round(ds.RasterYSize * t / ds.RasterXSize)))
    fresh = ds.ReadAsArray(buf_xsize=w, buf_ysize=h, resample_alg=gdal.GRIORA_Average).transpose(1, 2, 0)
    assert np.abs(thumb[:h, :w].astype(int) - fresh).mean() < 3, "read through overviews of another raster"


CHECKS = {
    "palette Byte": _table_colours_only,
    "palette UInt16": _table_colours_only,
    "stale .ovr of another raster": _same_as_fresh,
    "truncated .ovr": _same_as_fresh,
    "Landsat 5 bands named Blue, Green, Red, ...": lambda bands, *_: _assert_equal(bands, [3, 2, 1]),
    "Sentinel-2 bands B1..B12, B8A": lambda bands, *_: _assert_equal(bands, [4, 3, 2]),
}
CASES["Landsat 5 bands named Blue, Green, Red, ..."] = (
    lambda p: _named(p, ["Blue", "Green", "Red", "Near infrared", "SWIR 1", "Thermal", "SWIR 2"]), "all")
CASES["Sentinel-2 bands B1..B12, B8A"] = (
    lambda p: _named(p, ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]), "all")


def _assert_equal(got, expected):
    assert list(got) == expected, f"bands {list(got)} shown as R, G, B; expected {expected}"


def _named(path, names):
    path = write_geotiff(path, (texture(80, 60, bands=len(names)) * 4000).astype(np.uint16))
    ds = gdal.Open(str(path), gdal.GA_Update)
    for i, name in enumerate(names):
        ds.GetRasterBand(i + 1).SetDescription(name)
    ds = None
    return path


def _signed_byte(path):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 60, 40, 1, gdal.GDT_Byte, ["PIXELTYPE=SIGNEDBYTE"])
    ds.GetRasterBand(1).WriteArray((texture(60, 40, bands=1)[0] * 255).astype(np.uint8))
    ds = None
    return path


def _mixed_vrt(path):
    a = write_geotiff(path.parent / "a.tif", _rgb(80, 60)[:2])
    b = write_geotiff(path.parent / "b.tif", (texture(80, 60, bands=1) * 4000).astype(np.uint16))
    gdal.BuildVRT(str(path), [str(a), str(b)], separate=True)
    return path


def _palette_short(path):
    """A table of 4 entries (in a VRT: a GeoTIFF pads it to 256) over classes 1..6."""
    tif = _palette(path, _classes(150, 100).astype(np.uint8), gdal.GDT_Byte)
    vrt = path.with_suffix(".vrt")
    ds = gdal.Translate(str(vrt), str(tif), format="VRT")
    table = gdal.ColorTable()
    for i in range(4):
        table.SetColorEntry(i, (i * 60, 255 - i * 60, 100, 255))
    ds.GetRasterBand(1).SetRasterColorTable(table)
    ds = None
    return vrt


def _stale_ovr(path):
    write_geotiff(path, _rgb(1300, 1100, seed=1), colour_interp=RGB)
    ds = gdal.Open(str(path))
    ds.BuildOverviews("AVERAGE", [2, 4, 8])
    ds = None
    write_geotiff(path.parent / "new.tif", _rgb(1300, 1100, seed=2), colour_interp=RGB).replace(path)
    return path


def _truncated_ovr(path):
    write_geotiff(path, _rgb(1300, 1100, seed=1), colour_interp=RGB)
    ds = gdal.Open(str(path))
    ds.BuildOverviews("AVERAGE", [2, 4, 8])
    ds = None
    ovr = Path(str(path) + ".ovr")
    ovr.write_bytes(ovr.read_bytes()[: ovr.stat().st_size // 2])
    return path


def _complex(path):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 16, 16, 1, gdal.GDT_CInt16)
    ds = None
    return path


def _read_all(path, tile, grid):
    """Thumbnail + every level; returns (content validity fraction, pixels) or raises."""
    valid_total, content_total = 0, 0
    with RasterSource(path, overview_cache_dir=Path(path).parent / "cache") as src:
        plan = plan_pyramid(src.width, src.height, tile, grid)
        reader = PyramidReader(src, plan)
        thumb, tvalid = reader.read_thumbnail()
        t = plan.thumbnail
        assert thumb.shape == (tile, tile, 3) and not tvalid[t.content_height:].any() \
            and not tvalid[:, t.content_width:].any()
        assert (thumb[~tvalid] == 0).all()
        for lv in plan.levels:
            tiles, valid = reader.read_level(lv.index)
            assert tiles.shape == (lv.tile_count(), tile, tile, 3)
            assert valid.sum() <= lv.content_width * lv.content_height
            valid_total += int(valid.sum())
            content_total += lv.content_width * lv.content_height
        return valid_total / content_total, thumb, tvalid, list(src.bands)


@pytest.mark.parametrize("tile,grid", [(64, 4), (336, 12)], ids=["tile64", "tile336"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_odd_raster(tmp_path, name, tile, grid):
    build, expect = CASES[name]
    path = build(tmp_path / "case.tif")
    if isinstance(expect, tuple):
        with pytest.raises(InputError) as err:
            _read_all(path, tile, grid)
        assert expect[1] in str(err.value) and Path(path).name in str(err.value)
        return
    fraction, thumb, tvalid, bands = _read_all(path, tile, grid)
    if expect == "all":
        assert fraction == 1.0 and tvalid.any()
    elif expect == "none":
        assert fraction == 0.0 and not tvalid.any()
    else:
        assert 0.0 < fraction < 1.0
    if name in CHECKS:
        CHECKS[name](bands, thumb, tvalid, path)
