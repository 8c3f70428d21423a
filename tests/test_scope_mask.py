"""A polygon scope masks what lies outside it (engine/scope_mask.py): the model sees only the polygon."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal

from rs_vqa_plugin.engine.geo import GeoReference
from rs_vqa_plugin.engine.pipeline import AskOptions, Engine
from rs_vqa_plugin.engine.scope_mask import ScopeMask, scope_mask
from tests.rasters import ROTATED_GEOTRANSFORM, UTM_GEOTRANSFORM, texture, write_geotiff

pytest_plugins = ["tests.fixtures_models"]

RGB = (gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand)


def test_even_odd_rule_with_holes_and_several_parts():
    triangle = ScopeMask([np.array([(0, 0), (10, 0), (0, 10), (0, 0)])])
    inside = triangle.inside(0, 0, 10, 10, 10, 10)
    i, j = np.mgrid[0:10, 0:10]
    assert np.array_equal(inside, (i + 0.5) + (j + 0.5) < 10)         # centres under x + y = 10
    holed = ScopeMask([np.array([(0, 0), (10, 0), (10, 10), (0, 10)]),
                       np.array([(3, 3), (7, 3), (7, 7), (3, 7)])])
    assert holed.inside(0, 0, 10, 10, 10, 10).sum() == 100 - 16
    parts = ScopeMask([np.array([(0, 0), (2, 0), (2, 2), (0, 2)]),
                       np.array([(8, 8), (10, 8), (10, 10), (8, 10)])])
    assert parts.inside(0, 0, 10, 10, 10, 10).sum() == 8
    # a coarser read of the same window asks about its own (larger) pixels' centres
    assert triangle.inside(0, 0, 10, 10, 5, 5).sum() == 10


def _ring_wkt(georef, pixel_points):
    ring = [georef.pixel_to_map(float(x), float(y)) for x, y in pixel_points]
    ring.append(ring[0])
    return "POLYGON ((" + ", ".join(f"{float(x)!r} {float(y)!r}" for x, y in ring) + "))"


def test_only_polygons_and_rotated_extents_need_a_mask():
    north_up = GeoReference(UTM_GEOTRANSFORM)
    extent = (400050.0, 3299880.0, 400150.0, 3299980.0)
    assert scope_mask(extent, north_up, (100, 40, 200, 200)) is None
    assert scope_mask(None, north_up, None) is None
    triangle = _ring_wkt(north_up, [(100, 40), (300, 40), (100, 240)])
    mask = scope_mask(triangle, north_up, (100, 40, 200, 200))
    assert 0.45 < mask.inside(0, 0, 200, 200, 100, 100).mean() < 0.55
    rotated = GeoReference(ROTATED_GEOTRANSFORM)
    assert scope_mask(extent, rotated, (0, 0, 400, 300)) is not None


@pytest.fixture(scope="module")
def twin_scenes(tmp_path_factory):
    """Two rasters equal everywhere except, inside the triangle's bounding-box window, the far
    corner outside the triangle (at least 40 px from its edge, beyond any resampling kernel)."""
    folder = tmp_path_factory.mktemp("twins")
    a = (texture(400, 300, seed=5) * 255).astype(np.uint8)
    b = a.copy()
    yy, xx = np.mgrid[0:300, 0:400]
    wx, wy = xx - 40, yy - 30                      # window-relative pixels (window at 40, 30)
    far = (wx >= 0) & (wx < 200) & (wy >= 0) & (wy < 200) & (wx + wy > 300)
    b[:, far] = 255 - b[:, far]
    return (write_geotiff(folder / "a.tif", a, colour_interp=RGB),
            write_geotiff(folder / "b.tif", b, colour_interp=RGB))


def test_the_model_does_not_see_outside_the_polygon(tiny_bundle, twin_scenes):
    engine = Engine(tiny_bundle, device="cpu")
    georef = GeoReference(UTM_GEOTRANSFORM)
    triangle = _ring_wkt(georef, [(40, 30), (240, 30), (40, 230)])
    xs, ys = georef.pixel_to_map(np.array([40.0, 240.0]), np.array([30.0, 230.0]))
    bbox = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))

    def scores(path, scope):
        answer = engine.ask(path, "How many ships are in the harbour?",
                            AskOptions(mode="dip", scope=scope, max_new_tokens=1))
        assert answer.trace["window"] == [40, 30, 200, 200]
        return [round(c.score, 12) for c in answer.heat_cells]

    a, b = twin_scenes
    # Through the bounding box the model sees the changed corner ...
    assert scores(a, bbox) != scores(b, bbox)
    # ... through the triangle it does not: identical inputs, identical scores.
    assert scores(a, triangle) == scores(b, triangle)
