"""Every raster size reads: level windows stay inside the raster under GDAL's window rounding.

Real GeoTIFFs of every size in a range (square and not), both tile sizes (the default model's 64
and the paper's 336), read through RasterSource + PyramidReader: the thumbnail and every tile of
every level. The stitched tiles of a level must also match one read of the whole raster resized
to the level's content size (the reference's "resize, then cut into tiles"), so a window that
was kept inside by shifting it would be caught too.
"""

import math
import os

import numpy as np
import pytest
from osgeo import gdal

from rs_vqa_plugin.engine.geo import level_cell_to_source, level_scales
from rs_vqa_plugin.engine.pyramid import plan_pyramid
from rs_vqa_plugin.engine.raster import RasterSource, gdal_window
from rs_vqa_plugin.engine.reader import PyramidReader
from tests.rasters import texture, write_geotiff

gdal.UseExceptions()
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# The default model's tile (models/default: 64 px, 4 x 4 pooled tokens) and the paper's (336, 12).
TILES = {"default": (64, 4), "paper": (336, 12)}


@pytest.fixture(scope="module")
def scene():
    """One textured Byte scene; each size is its top-left corner (smooth, so resampling is stable)."""
    return (texture(1100, 1100, seed=7) * 255).astype(np.uint8)


def _stitch(tiles, rows, cols, b):
    return tiles.reshape(rows, cols, b, b, 3).transpose(0, 2, 1, 3, 4).reshape(rows * b, cols * b, 3)


def _read_everything(path, w, h, tile, grid, cache):
    """Thumbnail + all levels; returns the worst (max, mean) |tiles - whole-level read| over levels."""
    worst_max, worst_mean = 0, 0.0
    with RasterSource(path, overview_cache_dir=cache) as src:
        plan = plan_pyramid(w, h, tile, grid)
        reader = PyramidReader(src, plan)
        thumb, tvalid = reader.read_thumbnail()
        t = plan.thumbnail
        assert tvalid[:t.content_height, :t.content_width].all() and tvalid.sum() == t.content_width * t.content_height
        for lv in plan.levels:
            tiles, valid = reader.read_level(lv.index)
            canvas = _stitch(tiles, lv.rows, lv.cols, tile)
            ok = _stitch(np.repeat(valid[..., None], 3, -1), lv.rows, lv.cols, tile)[..., 0]
            assert ok[:lv.content_height, :lv.content_width].all(), (w, h, lv.index)
            assert ok.sum() == lv.content_width * lv.content_height, (w, h, lv.index)   # padding is padding
            whole, _ = src.read(0, 0, w, h, lv.content_width, lv.content_height)
            diff = np.abs(canvas[:lv.content_height, :lv.content_width].astype(int) - whole)
            worst_max, worst_mean = max(worst_max, int(diff.max())), max(worst_mean, float(diff.mean()))
    return worst_max, worst_mean


def _sweep(tmp_path, scene, sizes, tile, grid):
    failures, worst = [], (0, 0.0)
    for w, h in sizes:
        path = write_geotiff(tmp_path / f"s{w}x{h}.tif", scene[:, :h, :w], compress="NONE")
        try:
            got = _read_everything(path, w, h, tile, grid, tmp_path / "cache")
            worst = (max(worst[0], got[0]), max(worst[1], got[1]))
        except Exception as exc:   # collect them all: the report names every failing size
            failures.append(((w, h), str(exc)[:160]))
        finally:
            os.unlink(path)
            for ovr in tmp_path.glob(f"s{w}x{h}.tif*"):
                ovr.unlink()
    assert not failures, f"{len(failures)} of {len(sizes)} sizes failed, e.g. {failures[:3]}"
    # Tiles line up with the whole-level read: a few grey levels at most where GDAL's averaging
    # kernel of a tile window starts at another phase; a shifted window would cost far more.
    assert worst[0] <= 12 and worst[1] < 0.3, worst


def test_every_square_size_with_the_default_tile(tmp_path, scene):
    # 1..400: one and two levels, every odd/even rounding case of 64-px tiles (111 x 111 among them).
    _sweep(tmp_path, scene, [(s, s) for s in range(1, 401)], *TILES["default"])


def test_every_odd_size_between_one_and_two_tiles_of_336(tmp_path, scene):
    _sweep(tmp_path, scene, [(s, s) for s in range(337, 672, 2)], *TILES["paper"])


@pytest.mark.parametrize("name", sorted(TILES))
def test_non_square_sizes_strips_and_overview_backed_sizes(tmp_path, scene, name):
    tile, grid = TILES[name]
    rng = np.random.default_rng(5)
    sizes = [(int(a), int(b)) for a, b in rng.integers(2, 700, size=(60, 2))]
    sizes += [(1, n) for n in (1, 2, 3, 63, 65, 337, 1100)] + [(n, 1) for n in (2, 65, 671, 1100)]
    sizes += [(n, 3) for n in (111, 673)] + [(111, 1100), (1100, 111), (1025, 1031)]  # last: overviews
    _sweep(tmp_path, scene, sizes, tile, grid)


def test_the_111_px_dem_reads_in_every_level(tmp_path):
    """The real case: a 111 x 111 Float32 DEM with nodata failed in every mode but thumbnail."""
    data = (100 + texture(111, 111, seed=2, bands=1) * 50).astype(np.float32)
    data[0, :10, :10] = -9999
    path = write_geotiff(tmp_path / "dem.tif", data, nodata=-9999)
    for tile, grid in TILES.values():
        with RasterSource(path) as src:
            plan = plan_pyramid(111, 111, tile, grid)
            reader = PyramidReader(src, plan)
            for lv in plan.levels:
                tiles, valid = reader.read_level(lv.index)
                assert valid.any() and tiles[valid].std() > 10


def test_level_scales_are_per_axis():
    plan = plan_pyramid(200, 77, 64, 4)
    for index in range(len(plan.levels) + 1):
        geometry = plan.thumbnail if index == 0 else plan.level(index)
        sx, sy = level_scales(plan, index)
        # The content's far corner maps exactly onto the source's far corner on both axes.
        corner = level_cell_to_source(plan, index, 0, 0, geometry.content_width, geometry.content_height)
        assert corner == pytest.approx((0, 0, 200, 77))
        assert sx * 200 == pytest.approx(geometry.content_width) and sy * 77 == pytest.approx(geometry.content_height)


def _gdal_int_window(offset, size):
    """What GDAL's Python bindings hand to RasterIO for a float window (see gdal_window)."""
    return int(offset + 0.5), int(size + 0.5)


def test_gdal_window_stays_inside_and_keeps_the_geometry():
    rng = np.random.default_rng(0)
    cases = [(55.5, 55.5, 0, 111), (0.0, 111.0, 0, 111), (110.8, 0.1, 0, 111), (10.25, 0.0, 10, 11),
             (1000.5, 24.5, 1000, 1025)]
    cases += [(float(o), float(s), 0, int(math.ceil(o + s))) for o, s in rng.uniform(0, 500, (2000, 2))]
    cases += [(k + 0.5, n - k - 0.5, 0, n) for n in range(1, 200) for k in range(0, n - 1)]
    for offset, size, start, end in cases:
        o, s = gdal_window(offset, size, start, end)
        n_off, n_size = _gdal_int_window(o, s)
        assert start <= o and o + s <= end + 1e-9 and n_off + n_size <= end and n_size >= 1, (offset, size, end)
        if size >= 0.5:
            assert abs(o - offset) < 1e-9 and abs(s - min(size, end - start)) < 1e-9   # sub-pixel kept
        else:
            assert s == pytest.approx(0.5) and o <= offset and o + s >= offset + size - 1e-9
