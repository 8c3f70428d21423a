"""RasterSource on real GDAL files: band choice, 8-bit stretch, validity masks, windows, bad input."""

import os

import numpy as np
import pytest
from osgeo import gdal

from rs_vqa_plugin.engine.errors import InputError
from rs_vqa_plugin.engine.raster import STRETCH_SAMPLE_SIDE, RasterSource, describe, open_dataset
from tests.rasters import make_float_nodata, make_rgb_scene, make_uint16_4band, texture, write_geotiff

gdal.UseExceptions()
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _gdal_rgb(path, bands, x, y, w, h):
    ds = gdal.Open(str(path))
    return np.stack([ds.GetRasterBand(b).ReadAsArray(x, y, w, h) for b in bands], axis=-1)


def test_byte_rgb_reads_exactly_at_full_resolution(tmp_path):
    path = make_rgb_scene(tmp_path / "rgb.tif", size=(300, 200), seed=3)
    with RasterSource(path) as src:
        assert (src.width, src.height, src.bands, src.stretch, src.mask_kind) == (300, 200, [1, 2, 3], None, "none")
        rgb, valid = src.read(10, 20, 50, 40, 50, 40)
    assert rgb.dtype == np.uint8 and rgb.shape == (40, 50, 3) and valid.all()
    np.testing.assert_array_equal(rgb, _gdal_rgb(path, [1, 2, 3], 10, 20, 50, 40))


def test_colour_interpretation_wins_over_band_order(tmp_path):
    data = (texture(64, 64, seed=4, bands=3) * 255).astype(np.uint8)
    path = write_geotiff(tmp_path / "bgr.tif", data,
                         colour_interp=[gdal.GCI_BlueBand, gdal.GCI_GreenBand, gdal.GCI_RedBand])
    with RasterSource(path) as src:
        assert src.bands == [3, 2, 1]
        rgb, _ = src.read(0, 0, 64, 64, 64, 64)
    np.testing.assert_array_equal(rgb[..., 0], data[2])


def test_explicit_bands_override_and_are_checked(tmp_path):
    path = make_uint16_4band(tmp_path / "u16.tif", size=64)
    with RasterSource(path, bands=[4, 3, 2]) as src:
        assert src.bands == [4, 3, 2]
    with RasterSource(path, bands=[4]) as src:
        rgb, _ = src.read(0, 0, 64, 64, 16, 16)
        assert (rgb[..., 0] == rgb[..., 2]).all()                  # one band shown as grey
    with pytest.raises(InputError, match="no band 5"):
        RasterSource(path, bands=[5, 1, 2])
    with pytest.raises(InputError, match="three"):
        RasterSource(path, bands=[1, 2])


def test_uint16_is_stretched_from_a_coarse_sample(tmp_path):
    path = make_uint16_4band(tmp_path / "u16.tif", size=(1500, 1300))
    with RasterSource(path, overview_cache_dir=tmp_path / "cache") as src:
        assert src.bands == [1, 2, 3]                                 # no colour interp: first three
        # The percentiles came from a decimated read, never the whole raster.
        assert src.pixels_read <= STRETCH_SAMPLE_SIDE ** 2
        ds = gdal.Open(str(path))  # keep the dataset alive while its band is read
        full = ds.GetRasterBand(1).ReadAsArray().astype(float)
        lo, hi = np.percentile(full, [2, 98])
        assert src.stretch[0][0] == pytest.approx(lo, rel=0.03)
        assert src.stretch[0][1] == pytest.approx(hi, rel=0.03)
        rgb, valid = src.read(0, 0, 1500, 1300, 300, 260)
    assert valid.all()
    frac_black = (rgb[..., 0] == 0).mean()
    frac_white = (rgb[..., 0] == 255).mean()
    assert 0.005 < frac_black < 0.05 and 0.005 < frac_white < 0.05   # about 2 % clipped each end
    assert rgb[..., 0].std() > 40


def test_float_nodata_becomes_invalid_and_grey(tmp_path):
    path = make_float_nodata(tmp_path / "dem.tif", size=200, hole=(0, 0, 100, 100))
    with RasterSource(path) as src:
        assert src.mask_kind == "nodata" and src.bands == [1]
        rgb, valid = src.read(0, 0, 200, 200, 50, 50)
    assert not valid[:25, :25].any() and valid[25:, :].all() and valid[:, 25:].all()
    assert (rgb[~valid] == 0).all()
    assert (rgb[..., 0] == rgb[..., 1]).all()
    # The nodata value (-9999) must not leak into the stretch of the valid pixels.
    assert rgb[valid].std() > 30


def test_nan_pixels_are_invalid(tmp_path):
    data = np.full((1, 32, 32), 5.0, np.float32)
    data[0, :, :8] = np.nan
    path = write_geotiff(tmp_path / "nan.tif", data)
    with RasterSource(path) as src:
        _, valid = src.read(0, 0, 32, 32, 32, 32)
    assert not valid[:, :8].any() and valid[:, 8:].all()


def test_alpha_band_is_validity_not_colour(tmp_path):
    rgb = (texture(64, 64, seed=5) * 255).astype(np.uint8)
    alpha = np.full((1, 64, 64), 255, np.uint8)
    alpha[0, 32:, :] = 0
    path = write_geotiff(tmp_path / "rgba.tif", np.concatenate([rgb, alpha]),
                         colour_interp=[gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand,
                                        gdal.GCI_AlphaBand])
    with RasterSource(path) as src:
        assert src.bands == [1, 2, 3] and src.mask_kind == "alpha"
        _, valid = src.read(0, 0, 64, 64, 64, 64)
    assert valid[:32].all() and not valid[32:].any()


def test_internal_mask_band(tmp_path):
    data = (texture(64, 64, seed=6) * 255).astype(np.uint8)
    mask = np.ones((64, 64), bool)
    mask[:, 48:] = False
    path = write_geotiff(tmp_path / "masked.tif", data, mask=mask)
    with RasterSource(path) as src:
        assert src.mask_kind == "mask"
        _, valid = src.read(0, 0, 64, 64, 32, 32)
    assert valid[:, :24].all() and not valid[:, 24:].any()


def test_window_scopes_the_source_and_georef(tmp_path):
    path = make_rgb_scene(tmp_path / "rgb.tif", size=(300, 200), seed=3)
    with RasterSource(path, window=(100, 50, 120, 80)) as src:
        assert (src.width, src.height) == (120, 80)
        rgb, _ = src.read(0, 0, 120, 80, 120, 80)
        assert src.georef.pixel_to_map(0, 0) == pytest.approx((400000 + 100 * 0.5, 3300000 - 50 * 0.5))
        with pytest.raises(ValueError):
            src.read(100, 0, 30, 10, 10, 10)
    np.testing.assert_array_equal(rgb, _gdal_rgb(path, [1, 2, 3], 100, 50, 120, 80))
    with pytest.raises(InputError, match="outside"):
        RasterSource(path, window=(250, 0, 100, 10))


@pytest.mark.parametrize("size", [(1, 1), (200, 120)])
def test_tiny_rasters_work(tmp_path, size):
    path = make_rgb_scene(tmp_path / "tiny.tif", size=size)
    with RasterSource(path) as src:
        rgb, valid = src.read(0, 0, size[0], size[1], 336, 336)
    assert rgb.shape == (336, 336, 3) and valid.all()
    assert not list(tmp_path.glob("*.ovr"))                 # too small to need overviews


def test_describe_reports_bands_crs_and_overviews(tmp_path):
    path = make_uint16_4band(tmp_path / "u16.tif", size=64, epsg=4326)
    info = describe(path)
    assert (info["width"], info["height"], info["band_count"]) == (64, 64, 4)
    assert info["data_types"] == ["UInt16"]
    assert info["crs"]["authority"] == "EPSG:4326" and info["crs"]["is_geographic"]
    assert "GEOGCRS" in info["crs"]["wkt"] or "GEOGCS" in info["crs"]["wkt"]
    assert info["overviews"]["location"] == "none"


# -- bad input: a clear InputError naming the file, and nothing written -----------------------

def _truncated(tmp_path):
    good = make_rgb_scene(tmp_path / "good.tif", size=600, seed=9, compress="NONE")
    bad = tmp_path / "truncated.tif"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    good.unlink()
    return bad


def _zero_band_vrt(tmp_path):
    path = tmp_path / "empty.vrt"
    path.write_text('<VRTDataset rasterXSize="10" rasterYSize="10"></VRTDataset>')
    return path


def _subdataset_container(tmp_path):
    path = tmp_path / "two.gpkg"
    driver = gdal.GetDriverByName("GPKG")
    for table, extra in (("a", []), ("b", ["APPEND_SUBDATASET=YES"])):
        ds = driver.Create(str(path), 8, 8, 3, gdal.GDT_Byte, [f"RASTER_TABLE={table}"] + extra)
        ds.SetGeoTransform((0, 1, 0, 0, 0, -1))
        ds = None
    return path


def _complex(tmp_path):
    path = tmp_path / "slc.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 16, 16, 1, gdal.GDT_CFloat32)
    ds = None
    return path


def _text_file(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("not an image\n")
    return path


@pytest.mark.parametrize("make,expect", [
    (lambda d: d / "missing.tif", "no such file"),
    (lambda d: d, "is a folder"),
    (_text_file, "cannot open it as a raster"),
    (_truncated, "truncated or corrupt"),
    (_zero_band_vrt, "no raster bands"),
    (_subdataset_container, "no raster bands"),
    (_complex, "complex numbers"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, make, expect):
    folder = tmp_path / "in"
    folder.mkdir()
    path = make(folder)
    before = sorted(os.listdir(folder))
    cache = tmp_path / "cache"
    with pytest.raises(InputError) as err:
        RasterSource(path, overview_cache_dir=cache)
    message = str(err.value)
    assert expect in message and str(path) in message
    assert sorted(os.listdir(folder)) == before
    assert not cache.exists()
    with pytest.raises(InputError):
        open_dataset(path)


@pytest.mark.parametrize("dtype,nodata", [(np.float32, 0.1), (np.uint16, 0)])
def test_nodata_matches_in_the_band_precision(tmp_path, dtype, nodata):
    data = np.full((1, 16, 16), 7, dtype)
    data[0, :4] = nodata        # a Float32 band holds 0.1 rounded; GDAL reports the double 0.1
    path = write_geotiff(tmp_path / "nd.tif", data, nodata=nodata)
    with RasterSource(path) as src:
        _, valid = src.read(0, 0, 16, 16, 16, 16)
    assert not valid[:4].any() and valid[4:].all()


@pytest.mark.parametrize("fmt", ["VRT", "COG"])
def test_vrt_and_cog_read_like_the_geotiff(tmp_path, fmt):
    tif = make_rgb_scene(tmp_path / "src.tif", size=(1100, 700), seed=8)
    other = tmp_path / f"copy.{fmt.lower()}"
    gdal.Translate(str(other), str(tif), format=fmt)
    with RasterSource(tif, overview_cache_dir=tmp_path / "c1") as a, \
            RasterSource(other, overview_cache_dir=tmp_path / "c2") as b:
        if fmt == "COG":
            assert b.overviews.location == "internal"      # COGs carry their overviews
        assert (b.width, b.height, b.epsg, b.bands) == (1100, 700, 32617, [1, 2, 3])
        np.testing.assert_array_equal(a.read(100, 50, 336, 336, 336, 336)[0],
                                      b.read(100, 50, 336, 336, 336, 336)[0])
