"""Tile encodings reused between questions: only new tiles are encoded, the answer is the one a
cold engine gives, and a changed file, band choice, stretch, scope or model is never served stale.
Real GeoTIFFs, the real tiny bundle through ONNX Runtime."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from rs_vqa_plugin.engine import raster as raster_module
from rs_vqa_plugin.engine.errors import InputError
from rs_vqa_plugin.engine.pipeline import AskOptions, Engine
from rs_vqa_plugin.engine.tile_cache import DEFAULT_MB, TileCache, check_megabytes
from tests.rasters import UTM_GEOTRANSFORM, make_rgb_scene, texture, write_geotiff

pytest_plugins = ["tests.fixtures_models"]

SIZE = (700, 500)   # tile 112: levels of 3x3, 4x3 and 7x5 tiles
FIRST, SECOND = "How many ships are in the harbour?", "What colour is the largest roof?"


@pytest.fixture(scope="module")
def shared_engine(tiny_bundle):
    return Engine(tiny_bundle, device="cpu")


@pytest.fixture
def engine(shared_engine):
    """The module's engine with an empty cache of the default size."""
    shared_engine.set_tile_cache_mb(DEFAULT_MB)
    shared_engine.tile_cache.clear()
    return shared_engine


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_rgb_scene(tmp_path_factory.mktemp("cache") / "scene.tif", size=SIZE, seed=3)


def _ask(engine, raster, question, **options):
    return engine.ask(raster, question, AskOptions(max_new_tokens=3, **options))


def _cold(engine, raster, question, **options):
    """The answer of an engine without a cache (the cache is left empty afterwards)."""
    engine.set_tile_cache_mb(0)
    try:
        return _ask(engine, raster, question, **options)
    finally:
        engine.set_tile_cache_mb(DEFAULT_MB)


def _tile_set(trace):
    return {(int(level), r, c) for level, tiles in trace["tiles"].items() for r, c in tiles}


def _same_answer(a, b):
    assert a.text == b.text
    assert a.trace["tiles"] == b.trace["tiles"] and a.trace["levels"] == b.trace["levels"]
    assert [(c.kind, c.level, c.tile, c.rank) for c in a.heat_cells] == \
        [(c.kind, c.level, c.tile, c.rank) for c in b.heat_cells]
    np.testing.assert_allclose([c.score for c in a.heat_cells], [c.score for c in b.heat_cells],
                               rtol=1e-5, atol=1e-7)


# -- the cache itself ----------------------------------------------------------------------------
def test_lru_by_bytes_within_the_bound():
    cache = TileCache(1.0)                      # 1 MB: four 256 KB arrays
    quarter = np.zeros(2 ** 16, np.float32)
    for key in "abcd":
        cache.put(key, quarter + ord(key))
    assert len(cache) == 4 and cache.nbytes == 2 ** 20
    cache.get("a")                              # a is now the most recently used
    cache.put("e", quarter)
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 4
    cache.put("big", np.zeros(2 ** 19, np.float32))    # 2 MB never fits: nothing is evicted
    assert cache.get("big") is None and len(cache) == 4
    cache.resize(0.5)
    assert cache.nbytes <= 2 ** 19 and len(cache) == 2 and cache.get("e") is not None
    stored = cache.get("e")
    with pytest.raises(ValueError):
        stored[0] = 1.0                         # shared between questions: read-only
    cache.resize(0)
    cache.put("f", quarter)
    assert len(cache) == 0 and cache.nbytes == 0 and not cache.enabled


@pytest.mark.parametrize("bad", [-1, float("nan"), "lots", None])
def test_a_bad_size_is_refused(bad):
    with pytest.raises(InputError, match="tile cache size"):
        check_megabytes(bad)


# -- the engine ----------------------------------------------------------------------------------
def test_second_question_encodes_only_new_tiles_and_answers_as_without_cache(engine, scene):
    cold = _cold(engine, scene, SECOND)
    assert cold.trace["tiles_from_cache"] == 0 and len(engine.tile_cache) == 0
    first = _ask(engine, scene, FIRST)
    assert first.trace["tiles_from_cache"] == 0 and not first.trace["thumbnail_from_cache"]
    assert first.trace["tiles_encoded"] == len(_tile_set(first.trace))
    second = _ask(engine, scene, SECOND)
    t = second.trace
    new = _tile_set(t) - _tile_set(first.trace)
    assert t["tiles_from_cache"] > 0 and t["thumbnail_from_cache"]
    assert t["tiles_encoded"] == len(new)
    assert t["tiles_encoded"] + t["tiles_from_cache"] == sum(t["tiles_per_level"].values())
    assert t["pixels_read"] < cold.trace["pixels_read"]    # cached tiles are not read again
    _same_answer(second, cold)


@pytest.mark.parametrize("mode", ["grid", "prune-only", "full", "thumbnail"])
def test_every_mode_reuses_the_tiles_it_encoded(engine, scene, mode):
    first = _ask(engine, scene, FIRST, mode=mode, level=2)
    second = _ask(engine, scene, SECOND, mode=mode, level=2)
    assert second.trace["tiles_encoded"] == 0 and second.trace["thumbnail_from_cache"]
    assert second.trace["tiles_from_cache"] == first.trace["tiles_encoded"]
    _same_answer(second, _cold(engine, scene, SECOND, mode=mode, level=2))


def test_a_rewritten_file_is_not_served_stale(engine, tmp_path):
    # Same path, same size (no compression), same modification time: only what GDAL reads differs.
    path = write_geotiff(tmp_path / "r.tif", (texture(*SIZE, seed=1) * 255).astype(np.uint8),
                         compress="NONE")
    _ask(engine, path, FIRST, mode="grid")
    before = os.stat(path)
    write_geotiff(path, (texture(*SIZE, seed=2) * 255).astype(np.uint8), compress="NONE")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_size == before.st_size
    again = _ask(engine, path, FIRST, mode="grid")
    assert again.trace["tiles_from_cache"] == 0 and not again.trace["thumbnail_from_cache"]
    _same_answer(again, _cold(engine, path, FIRST, mode="grid"))


def test_a_nodata_set_in_the_aux_xml_is_not_served_stale(engine, tmp_path):
    from osgeo import gdal

    path = write_geotiff(tmp_path / "r.tif", (texture(*SIZE, seed=5) * 255).astype(np.uint8))
    _ask(engine, path, FIRST, mode="grid")
    ds = gdal.Open(str(path))            # read-only: GDAL keeps the nodata in r.tif.aux.xml
    for i in (1, 2, 3):
        ds.GetRasterBand(i).SetNoDataValue(0)
    ds = None
    assert (tmp_path / "r.tif.aux.xml").is_file()
    again = _ask(engine, path, FIRST, mode="grid")
    assert again.trace["tiles_from_cache"] == 0
    assert _ask(engine, path, SECOND, mode="grid").trace["tiles_from_cache"] > 0


def test_other_bands_stretch_or_scope_are_not_served_stale(engine, tmp_path, monkeypatch):
    path = write_geotiff(tmp_path / "u16.tif", (texture(*SIZE, seed=4) * 4000).astype(np.uint16))
    _ask(engine, path, FIRST, mode="grid")
    assert _ask(engine, path, SECOND, mode="grid").trace["tiles_from_cache"] > 0
    assert _ask(engine, path, FIRST, mode="grid", bands=[3, 2, 1]).trace["tiles_from_cache"] == 0
    x0, y0 = UTM_GEOTRANSFORM[0], UTM_GEOTRANSFORM[3]
    extent = (x0 + 50.0, y0 - 200.0, x0 + 300.0, y0 - 20.0)      # a 500 x 360 px window
    scoped = _ask(engine, path, FIRST, mode="grid", scope=extent)
    assert scoped.trace["tiles_from_cache"] == 0
    assert _ask(engine, path, SECOND, mode="grid", scope=extent).trace["tiles_from_cache"] > 0
    # A polygon with the same bounding box: the same window, but its outside is masked.
    polygon = (f"POLYGON (({extent[0]} {extent[1]}, {extent[2]} {extent[1]}, "
               f"{extent[0]} {extent[3]}, {extent[0]} {extent[1]}))")
    assert _ask(engine, path, FIRST, mode="grid", scope=polygon).trace["tiles_from_cache"] == 0
    monkeypatch.setattr(raster_module, "STRETCH_PERCENTILES", (10.0, 90.0))
    restretched = _ask(engine, path, FIRST, mode="grid")
    assert restretched.trace["tiles_from_cache"] == 0
    _same_answer(restretched, _cold(engine, path, FIRST, mode="grid"))


def test_another_model_is_not_served_from_the_same_cache(engine, tiny_bundle, scene, tmp_path):
    _ask(engine, scene, FIRST, mode="grid")
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    other = Engine(copy, device="cpu")
    other.tile_cache = engine.tile_cache        # even a shared cache keys tiles by model
    answer = _ask(other, scene, FIRST, mode="grid")
    assert answer.trace["tiles_from_cache"] == 0 and not answer.trace["thumbnail_from_cache"]


def test_eviction_keeps_the_bound(engine, scene):
    m = engine.manifest
    tile_bytes = m.pooled_grid ** 2 * m.hidden_size * 4
    engine.set_tile_cache_mb(4.5 * tile_bytes / 2 ** 20)      # four tiles, no thumbnail
    first = _ask(engine, scene, FIRST, mode="full")
    cache = engine.tile_cache
    assert cache.nbytes <= cache.limit_bytes and len(cache) == 4
    assert first.trace["tile_cache"]["entries"] == 4
    second = _ask(engine, scene, SECOND, mode="full")
    assert second.trace["tiles_from_cache"] <= 4 and cache.nbytes <= cache.limit_bytes
    engine.set_tile_cache_mb(0)
    assert len(cache) == 0
    off = _ask(engine, scene, SECOND, mode="full")
    assert off.trace["tiles_from_cache"] == 0 and off.trace["tiles_encoded"] == 35
