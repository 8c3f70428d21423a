"""Pixel <-> map geometry: rotated geotransforms, lon/lat, no CRS, level/tile/token footprints."""

import warnings

import numpy as np
import pytest
from osgeo import gdal

from rs_vqa_plugin.engine.geo import (NoCrsWarning, PIXEL_GEOTRANSFORM, GeoReference,
                                      georeference_from_dataset, level_cell_to_source, tile_footprint,
                                      token_cell_footprint)
from rs_vqa_plugin.engine.pyramid import plan_pyramid
from rs_vqa_plugin.engine.raster import RasterSource
from tests.rasters import ROTATED_GEOTRANSFORM, make_rgb_scene

gdal.UseExceptions()


@pytest.mark.parametrize("kwargs", [dict(), dict(epsg=4326), dict(geotransform=ROTATED_GEOTRANSFORM)])
def test_pixel_map_round_trip_matches_gdal(tmp_path, kwargs):
    path = make_rgb_scene(tmp_path / "g.tif", size=(90, 60), **kwargs)
    ds = gdal.Open(str(path))
    geo = georeference_from_dataset(ds)
    assert geo.has_crs and not geo.warnings
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 90, 50), rng.uniform(0, 60, 50)
    X, Y = geo.pixel_to_map(x, y)
    for i in range(5):
        assert (X[i], Y[i]) == pytest.approx(gdal.ApplyGeoTransform(ds.GetGeoTransform(), x[i], y[i]))
    back_x, back_y = geo.map_to_pixel(X, Y)
    np.testing.assert_allclose(back_x, x, atol=1e-6)
    np.testing.assert_allclose(back_y, y, atol=1e-6)
    if kwargs.get("epsg") == 4326:
        assert geo.is_geographic and geo.epsg == 4326
        assert -83 < X.min() < X.max() < -82 and 29 < Y.min() < Y.max() < 30


def test_footprint_ring_in_raster_crs_round_trips():
    geo = GeoReference(ROTATED_GEOTRANSFORM, "WKT", 32617)
    ring = geo.footprint(10, 20, 30, 50)
    assert len(ring) == 5 and ring[0] == ring[-1]
    px, py = geo.map_to_pixel(np.array([p[0] for p in ring]), np.array([p[1] for p in ring]))
    np.testing.assert_allclose(px, [10, 30, 30, 10, 10], atol=1e-6)
    np.testing.assert_allclose(py, [20, 20, 50, 50, 20], atol=1e-6)
    # Rotated grid: the ring is not axis-aligned in map coordinates.
    assert len({round(p[0], 6) for p in ring[:4]}) == 4


def test_level_tile_and_token_footprints(tmp_path):
    path = make_rgb_scene(tmp_path / "g.tif", size=(1200, 500), geotransform=ROTATED_GEOTRANSFORM)
    with RasterSource(path) as src:
        plan = plan_pyramid(src.width, src.height)
        # Tile (1, 2) of level 1 holds content rows 336..420 only; it maps back to the image corner.
        ring = tile_footprint(src.georef, plan, 1, 1, 2)
        px, py = src.georef.map_to_pixel(*map(np.array, zip(*ring)))
        np.testing.assert_allclose([px.min(), px.max()], [800, 1200], atol=1e-6)
        np.testing.assert_allclose([py.min(), py.max()], [400, 500], atol=1e-6)
        # A token of the finest level covers B/g = 28 content px = 28 / scale source px.
        scale = plan.finest.scale
        token = token_cell_footprint(src.georef, plan, len(plan.levels), 0, 1)
        tx, ty = src.georef.map_to_pixel(*map(np.array, zip(*token)))
        np.testing.assert_allclose([tx.min(), tx.max()], [28 / scale, 56 / scale], atol=1e-6)
    # level 0 is the thumbnail
    assert level_cell_to_source(plan, 0, 0, 0, 336, 140) == pytest.approx((0, 0, 1200, 500))


def test_window_offset_keeps_rotation(tmp_path):
    geo = GeoReference(ROTATED_GEOTRANSFORM)
    win = geo.offset(100, 40)
    assert win.pixel_to_map(5, 7) == pytest.approx(geo.pixel_to_map(105, 47))
    assert win.geotransform[1:3] == geo.geotransform[1:3]


def test_no_crs_no_geotransform_uses_pixels_with_a_warning(tmp_path):
    path = make_rgb_scene(tmp_path / "plain.tif", size=40, epsg=None)
    ds = gdal.Open(str(path))
    with pytest.warns(NoCrsWarning, match="no CRS"):
        geo = georeference_from_dataset(ds, "plain.tif")
    assert not geo.has_crs and geo.geotransform == PIXEL_GEOTRANSFORM
    assert any("no CRS" in w for w in geo.warnings)
    assert geo.pixel_to_map(10, 5) == (10.0, -5.0)
    assert geo.map_to_pixel(10.0, -5.0) == pytest.approx((10, 5))


def test_geotransform_without_crs_is_kept(tmp_path):
    path = make_rgb_scene(tmp_path / "local.tif", size=40, epsg=None, geotransform=(1000, 2, 0, 500, 0, -2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with RasterSource(path) as src:
            assert src.georef.pixel_to_map(1, 1) == (1002.0, 498.0)
            assert src.crs_wkt == "" and src.epsg is None
    assert [w for w in caught if issubclass(w.category, NoCrsWarning)]


def test_singular_geotransform_is_refused():
    with pytest.raises(ValueError):
        GeoReference((0, 0, 0, 0, 0, 0))
