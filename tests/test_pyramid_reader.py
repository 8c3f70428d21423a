"""PyramidReader: thumbnail and level tiles from real GeoTIFFs, padding masks, overview equality."""

import numpy as np
import pytest
from osgeo import gdal

from rs_vqa_plugin.engine.pyramid import plan_pyramid
from rs_vqa_plugin.engine.raster import RasterSource
from rs_vqa_plugin.engine.reader import PyramidReader
from tests.rasters import make_float_nodata, make_rgb_scene

gdal.UseExceptions()


@pytest.fixture(scope="module")
def scene_2688(tmp_path_factory):
    """8 x 336 px square: level 2 (1344) is exactly the factor-2 overview."""
    return make_rgb_scene(tmp_path_factory.mktemp("dip") / "scene.tif", size=2688, seed=11)


def test_level_window_read_equals_the_overview(scene_2688):
    with RasterSource(scene_2688) as src:
        assert src.overviews.location == "external" and 2 in src.overviews.factors
        plan = plan_pyramid(src.width, src.height)
        assert [lv.long_side for lv in plan.levels] == [1008, 1344, 2688]
        assert plan.level(2).scale == 0.5
        reader = PyramidReader(src, plan)
        tiles, valid = reader.read_tiles(2, [(1, 2), (3, 3)])
        finest, _ = reader.read_tiles(3, [(5, 6)])
    assert valid.all()
    ds = gdal.Open(str(scene_2688))
    for tile, (row, col) in zip(tiles, [(1, 2), (3, 3)]):
        for b in range(3):
            overview = ds.GetRasterBand(b + 1).GetOverview(0)
            expected = overview.ReadAsArray(col * 336, row * 336, 336, 336)
            np.testing.assert_array_equal(tile[..., b], expected)
    full = np.stack([ds.GetRasterBand(b).ReadAsArray(6 * 336, 5 * 336, 336, 336) for b in (1, 2, 3)], -1)
    np.testing.assert_array_equal(finest[0], full)      # the finest level is the original pixels


def test_thumbnail_and_level1_tiles_read_little(scene_2688):
    with RasterSource(scene_2688) as src:
        plan = plan_pyramid(src.width, src.height)
        reader = PyramidReader(src, plan)
        before = src.pixels_read
        thumb, tvalid = reader.read_thumbnail()
        level1, lvalid = reader.read_level(1)
        # One buffer-sized read per tile: pixels read == pixels returned.
        assert src.pixels_read - before == 336 * 336 + 9 * 336 * 336
    assert thumb.shape == (336, 336, 3) and tvalid.all()
    assert level1.shape == (9, 336, 336, 3) and lvalid.all()
    # The thumbnail is the image at 1/8: compare with the factor-8 overview of GDAL (average).
    ds = gdal.Open(str(scene_2688))
    ov8 = [ds.GetRasterBand(1).GetOverview(i) for i in range(ds.GetRasterBand(1).GetOverviewCount())]
    ov8 = next(o for o in ov8 if o.XSize == 336)
    np.testing.assert_array_equal(thumb[..., 0], ov8.ReadAsArray())


def test_padding_is_marked_invalid(tmp_path):
    path = make_rgb_scene(tmp_path / "wide.tif", size=(1200, 500), seed=2)
    with RasterSource(path) as src:
        plan = plan_pyramid(src.width, src.height)
        lv = plan.level(1)                          # 1008 x 420 content in 2 x 3 tiles
        assert (lv.rows, lv.cols, lv.content_height) == (2, 3, 420)
        reader = PyramidReader(src, plan)
        thumb, tvalid = reader.read_thumbnail()
        tiles, valid = reader.read_tiles(1, [(1, 0), (0, 2)])
    assert tvalid[:140].all() and not tvalid[140:].any() and (thumb[140:] == 0).all()
    assert valid[0, :84].all() and not valid[0, 84:].any()      # 420 - 336 = 84 rows of content
    assert valid[1].all()


def test_nodata_survives_resampling(tmp_path):
    path = make_float_nodata(tmp_path / "dem.tif", size=(700, 700), hole=(0, 0, 350, 700))
    with RasterSource(path) as src:
        reader = PyramidReader(src, plan_pyramid(src.width, src.height))
        _, valid = reader.read_thumbnail()
    assert not valid[:, :166].any() and valid[:, 170:].all()


def test_one_pixel_image_gives_one_tile(tmp_path):
    path = make_rgb_scene(tmp_path / "dot.tif", size=1)
    with RasterSource(path) as src:
        plan = plan_pyramid(src.width, src.height)
        reader = PyramidReader(src, plan)
        thumb, tvalid = reader.read_thumbnail()
        tiles, valid = reader.read_level(1)
        ds = gdal.Open(str(path))
        value = [ds.GetRasterBand(b).ReadAsArray()[0, 0] for b in (1, 2, 3)]
    assert tiles.shape == (1, 336, 336, 3) and valid.all()
    assert (tiles[0] == np.array(value, np.uint8)).all()
    # The thumbnail never enlarges (the reference pastes a small image as it is): one pixel.
    assert tvalid[0, 0] and tvalid.sum() == 1 and (thumb[0, 0] == np.array(value, np.uint8)).all()


def test_plan_must_match_source(tmp_path):
    path = make_rgb_scene(tmp_path / "a.tif", size=100)
    with RasterSource(path) as src, pytest.raises(ValueError):
        PyramidReader(src, plan_pyramid(200, 100))
