"""The pyramid on a real aerial GeoTIFF (NEON OSBS_029 from the deepforest wheel, UTM 17N, 0.1 m)."""

import json

import numpy as np
import pytest
from osgeo import gdal

from rs_vqa_plugin.commands import main
from rs_vqa_plugin.engine.pyramid import plan_pyramid
from rs_vqa_plugin.engine.raster import RasterSource
from rs_vqa_plugin.engine.reader import PyramidReader
from tests.data_fetch import real_geotiff

gdal.UseExceptions()


@pytest.fixture(scope="module")
def osbs():
    return real_geotiff()


def test_real_geotiff_geometry_and_bands(osbs, tmp_path):
    with RasterSource(osbs, overview_cache_dir=tmp_path) as src:
        assert (src.width, src.height, src.bands, src.epsg) == (400, 400, [1, 2, 3], 32617)
        # The tile declares NoData=255 on every band: saturated white pixels become invalid.
        assert src.mask_kind == "nodata" and src.stretch is None
        full, full_valid = src.read(0, 0, 400, 400, 400, 400)
        ring = src.georef.footprint(0, 0, 400, 400)
        # The corners gdalinfo reports for this tile (0.1 m pixels).
        assert ring[0] == pytest.approx((404211.9, 3285142.9))
        assert ring[2] == pytest.approx((404251.9, 3285102.9))
        plan = plan_pyramid(src.width, src.height)
        assert len(plan.levels) == 1 and (plan.level(1).rows, plan.level(1).cols) == (2, 2)
        reader = PyramidReader(src, plan)
        thumb, tvalid = reader.read_thumbnail()
        tiles, valid = reader.read_level(1)
    ds = gdal.Open(str(osbs))
    data = ds.ReadAsArray()
    np.testing.assert_array_equal(full_valid, ~(data == 255).all(axis=0))
    np.testing.assert_array_equal(full[full_valid], data.transpose(1, 2, 0)[full_valid])
    assert tvalid.mean() > 0.99 and 0.99 < valid.mean() < 1.0      # upsampled: holes stay holes
    direct = np.stack([ds.GetRasterBand(b).ReadAsArray(buf_xsize=336, buf_ysize=336,
                                                       resample_alg=gdal.GRIORA_Average) for b in (1, 2, 3)], -1)
    np.testing.assert_array_equal(thumb[tvalid], direct[tvalid])
    # Real imagery (trees, shadows) is not flat: a sanity check that we did read the pixels.
    assert thumb.std() > 20 and tiles.mean() > 20


def test_real_geotiff_pyramid_json(osbs, capsys):
    assert main(["pyramid", str(osbs), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["crs"]["authority"] == "EPSG:32617" and report["data_types"] == ["Byte"]
    assert report["levels"][0]["tile_grid"] == [2, 2]
