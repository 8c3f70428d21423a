"""End-to-end engine tests on the tiny bundle and small real GeoTIFFs: modes, trace, heat cells, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from rs_vqa_plugin.engine.cost import keep_count
from rs_vqa_plugin.engine.errors import BundleError, Cancelled, InputError
from rs_vqa_plugin.engine.pipeline import AskOptions, Engine
from rs_vqa_plugin.engine.progress import CancelToken
from rs_vqa_plugin.engine.pyramid import level_valid_token_shape, plan_pyramid, tile_content_rect
from tests.rasters import LONLAT_GEOTRANSFORM, ROTATED_GEOTRANSFORM, make_rgb_scene, write_geotiff

pytest_plugins = ["tests.fixtures_models"]

MODES = ("dip", "prune-only", "grid", "thumbnail", "full")
QUESTION = "How many ships are in the harbour?"
SIZE = (700, 500)   # tile 112: levels of long side 336, 350, 700 (3x3, 4x3, 7x5 tiles)


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    # No tile cache: every mode here is checked as a first question (tiles and pixels it reads);
    # reuse between questions is tested in test_tile_cache.py.
    return Engine(tiny_bundle, device="cpu", tile_cache_mb=0)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_rgb_scene(tmp_path_factory.mktemp("scene") / "scene.tif", size=SIZE, seed=3)


@pytest.fixture(scope="module")
def answers(engine, scene):
    return {mode: engine.ask(scene, QUESTION, AskOptions(mode=mode, max_new_tokens=2)) for mode in MODES}


def _plan(engine, answer):
    w, h = answer.trace["image_size"]
    m = engine.manifest
    return plan_pyramid(w, h, tile_size=m.tile_size, token_grid=m.pooled_grid)


def _valid_tokens_in(plan, level, tiles):
    """Tokens of these tiles that are not entirely padding, counted from the plan alone."""
    g = plan.token_grid
    vr, vc = level_valid_token_shape(plan, level)
    return sum(max(0, min(vr - r * g, g)) * max(0, min(vc - c * g, g)) for r, c in tiles)


def test_every_mode_answers(answers):
    for mode, answer in answers.items():
        assert answer.mode == mode and isinstance(answer.text, str)
        trace = answer.trace
        assert trace["seconds"]["generate"] > 0
        assert trace["llm_tokens"] == (trace["text_tokens"] + trace["llm_vision_tokens"]
                                       + (1 if trace["kept_tokens"] else 0))   # + separator
        assert trace["providers"]["vision"] and trace["providers"]["rfm"]
        assert trace["flops"]["total"] == trace["flops"]["llm"] + trace["flops"]["rfm"]
        assert trace["bands"] == {"bands": [1, 2, 3], "shown_as": "R, G, B",
                                  "from": "the colour interpretation", "names": ["", "", ""]}


def test_llm_vision_tokens_identity_and_counts(engine, answers):
    thumb = engine.manifest.thumbnail_tokens
    for mode, answer in answers.items():
        t = answer.trace
        assert t["llm_vision_tokens"] == thumb + t["kept_tokens"] + t["kept_rows"], mode
    plan = _plan(engine, answers["grid"])
    vr, vc = level_valid_token_shape(plan, 1)
    assert (answers["grid"].trace["kept_tokens"], answers["grid"].trace["kept_rows"]) == (vr * vc, vr)
    fr, fc = level_valid_token_shape(plan, len(plan.levels))
    assert answers["full"].trace["kept_tokens"] == fr * fc
    assert answers["full"].trace["tiles_encoded"] == plan.finest.tile_count()
    assert answers["thumbnail"].trace["kept_tokens"] == 0
    assert answers["thumbnail"].trace["tiles_encoded"] == 0
    assert answers["prune-only"].trace["kept_tokens"] == keep_count(vr * vc, 0.25)
    dip = answers["dip"].trace
    last = dip["levels"][-1]
    assert dip["kept_tokens"] == keep_count(_valid_tokens_in(plan, last, dip["tiles"][str(last)]), 0.25)
    assert dip["levels"][0] == 1 and dip["levels"] == sorted(dip["levels"])
    # The RFM ran once per visited level on thumbnail + separator + that level's tiles + text.
    assert len(dip["rfm_tokens"]) == len(dip["levels"])


def test_only_selected_tiles_are_read(engine, answers):
    """Pixels read = thumbnail content + the content of exactly the tiles in the trace."""
    for mode in ("dip", "grid", "prune-only"):
        answer = answers[mode]
        plan = _plan(engine, answer)
        expected = plan.thumbnail.content_width * plan.thumbnail.content_height
        for level, tiles in answer.trace["tiles"].items():
            for r, c in tiles:
                x0, y0, x1, y1 = tile_content_rect(plan, int(level), r, c)
                expected += (x1 - x0) * (y1 - y0)
        assert answer.trace["pixels_read"] == expected, mode
        assert sum(answer.trace["tiles_per_level"].values()) == answer.trace["tiles_encoded"]
        tile_cells = [c for c in answer.heat_cells if c.kind == "tile"]
        assert len(tile_cells) == answer.trace["tiles_encoded"]
        token_cells = [c for c in answer.heat_cells if c.kind == "token"]
        assert len(token_cells) == (answer.trace["kept_tokens"] if mode != "grid" else 0)


def test_zoom_follows_the_kept_tokens(engine, scene):
    """With alpha tiny one token is kept per level: the next level reads only the tiles under it."""
    answer = engine.ask(scene, QUESTION, AskOptions(mode="dip", alpha=0.001, max_new_tokens=1))
    t = answer.trace
    assert t["stop_reason"] == "finest-level" and t["levels"] == [1, 2, 3]
    for level in ("2", "3"):
        assert 1 <= t["tiles_per_level"][level] <= 4     # a token's footprint spans <= 2x2 tiles
    assert t["kept_tokens"] == 1
    from osgeo import ogr

    token = next(c for c in answer.heat_cells if c.kind == "token")
    union = ogr.Geometry(ogr.wkbMultiPolygon)
    for cell in answer.heat_cells:
        if cell.kind == "tile" and cell.level == 3:
            union.AddGeometry(_polygon(cell.ring))
    assert union.UnionCascaded().Buffer(1e-6).Contains(_polygon(token.ring))


def test_n_max_stops_zooming(engine, scene, answers):
    answer = engine.ask(scene, QUESTION, AskOptions(mode="dip", n_max=1, max_new_tokens=1))
    t = answer.trace
    assert t["stop_reason"] == "n_max" and t["levels"] == [1]
    plan = _plan(engine, answer)
    vr, vc = level_valid_token_shape(plan, 1)
    assert t["kept_tokens"] == keep_count(vr * vc, 0.25)
    dip = answers["dip"].trace
    assert all(n <= dip["n_max"] for level, n in dip["tiles_per_level"].items() if level != "1")


def _polygon(ring):
    from osgeo import ogr

    lr = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in ring:
        lr.AddPoint_2D(x, y)
    poly = ogr.Geometry(ogr.wkbPolygon)
    poly.AddGeometry(lr)
    return poly


def _raster_footprint(path):
    from osgeo import gdal

    ds = gdal.Open(str(path))
    g = ds.GetGeoTransform()
    w, h = ds.RasterXSize, ds.RasterYSize
    corners = [(0, 0), (w, 0), (w, h), (0, h), (0, 0)]
    return _polygon([(g[0] + x * g[1] + y * g[2], g[3] + x * g[4] + y * g[5]) for x, y in corners])


@pytest.mark.parametrize("kind", ["utm", "rotated", "geographic"])
def test_heat_cells_lie_inside_the_raster(engine, tmp_path, kind):
    kwargs = {"utm": {}, "rotated": {"geotransform": ROTATED_GEOTRANSFORM},
              "geographic": {"epsg": 4326, "geotransform": LONLAT_GEOTRANSFORM}}[kind]
    path = make_rgb_scene(tmp_path / f"{kind}.tif", size=(400, 300), seed=5, **kwargs)
    answer = engine.ask(path, "Where is the bridge?", AskOptions(mode="dip", max_new_tokens=1))
    footprint = _raster_footprint(path)
    pixel = abs(LONLAT_GEOTRANSFORM[1]) if kind == "geographic" else 0.5
    inside = footprint.Buffer(pixel * 1e-6)
    assert answer.heat_cells
    for cell in answer.heat_cells:
        poly = _polygon(cell.ring)
        assert inside.Contains(poly), (kind, cell)
        assert poly.GetArea() > 0
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.ImportFromWkt(answer.crs_wkt)
    assert bool(srs.IsGeographic()) == (kind == "geographic")


def test_runs_are_deterministic(engine, scene, answers):
    again = engine.ask(scene, QUESTION, AskOptions(mode="dip", max_new_tokens=2))
    first = answers["dip"]
    assert again.text == first.text
    assert again.trace["tiles"] == first.trace["tiles"]
    assert [(c.score, c.rank) for c in again.heat_cells] == [(c.score, c.rank) for c in first.heat_cells]


def test_cancel_during_scoring(engine, scene, tmp_path):
    token = CancelToken()
    stages = []

    def on_event(event):
        if event.get("type") == "progress":
            stages.append(event["stage"])
            if event["stage"] == "score":
                token.cancel()

    before = set(os.listdir(scene.parent))
    with pytest.raises(Cancelled):
        engine.ask(scene, QUESTION, AskOptions(mode="dip"), events=on_event, cancel=token)
    assert "score" in stages and "generate" not in stages
    assert set(os.listdir(scene.parent)) == before


def test_cancel_inside_the_prefill_keeps_the_engine_warm(engine, scene, answers):
    """A cancel during the LLM's first forward ends it before its next decoder layer; the same Engine
    (the worker's warm model) then answers the next question as before."""
    token, forwards = CancelToken(), []

    def cancel_on_first_forward(_module, _args):
        forwards.append(1)
        token.cancel()

    handle = engine.llm.model.register_forward_pre_hook(cancel_on_first_forward)
    try:
        with pytest.raises(Cancelled):
            engine.ask(scene, QUESTION, AskOptions(mode="dip", max_new_tokens=2), cancel=token)
    finally:
        handle.remove()
    assert forwards == [1]
    again = engine.ask(scene, QUESTION, AskOptions(mode="dip", max_new_tokens=2), cancel=CancelToken())
    assert again.text == answers["dip"].text and again.trace["tiles"] == answers["dip"].trace["tiles"]


def test_history_goes_into_the_prompt(engine, scene, answers):
    answer = engine.ask(scene, "And how many cars?", AskOptions(
        mode="thumbnail", history=((QUESTION, "three"),), max_new_tokens=1))
    single = engine.ask(scene, "And how many cars?", AskOptions(mode="thumbnail", max_new_tokens=1))
    assert answer.trace["text_tokens"] > single.trace["text_tokens"]


def test_scope_extent_reads_only_the_window(engine, scene):
    # UTM scene at 0.5 m from (400000, 3300000): this extent is pixels x 100..300, y 40..240.
    extent = (400050.0, 3299880.0, 400150.0, 3299980.0)
    answer = engine.ask(scene, QUESTION, AskOptions(mode="dip", scope=extent, max_new_tokens=1))
    assert answer.trace["window"] == [100, 40, 200, 200]
    assert answer.trace["image_size"] == [200, 200]
    box = _polygon([(extent[0], extent[1]), (extent[2], extent[1]), (extent[2], extent[3]),
                    (extent[0], extent[3]), (extent[0], extent[1])]).Buffer(1e-6)
    assert all(box.Contains(_polygon(c.ring)) for c in answer.heat_cells)


def test_full_is_refused_above_the_token_limit(engine, scene):
    with pytest.raises(InputError, match="full_token_limit"):
        engine.ask(scene, QUESTION, AskOptions(mode="full", full_token_limit=100))


@pytest.mark.parametrize("question", ["", "   \n\t "])
def test_empty_question_is_refused(engine, scene, question):
    with pytest.raises(InputError, match="empty"):
        engine.ask(scene, question)


def test_question_longer_than_the_context(engine, scene):
    long_question = "ships " * (engine.llm.max_context + 10)
    with pytest.raises(InputError, match="at most"):
        engine.ask(scene, long_question)


def test_all_nodata_raster(engine, tmp_path):
    path = write_geotiff(tmp_path / "empty.tif", np.zeros((3, 200, 300), np.uint8), nodata=0)
    before = set(os.listdir(tmp_path))
    with pytest.raises(InputError, match="no valid pixels"):
        engine.ask(path, QUESTION)
    assert set(os.listdir(tmp_path)) == before


def test_scope_outside_the_raster(engine, scene):
    with pytest.raises(InputError, match="outside the raster"):
        engine.ask(scene, QUESTION, AskOptions(scope=(500000.0, 3200000.0, 500100.0, 3200100.0)))


def test_bad_options(engine, scene):
    with pytest.raises(InputError, match="Unknown mode"):
        engine.ask(scene, QUESTION, AskOptions(mode="zoom"))
    with pytest.raises(InputError, match="Level 9"):
        engine.ask(scene, QUESTION, AskOptions(mode="grid", level=9))


def test_missing_model(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        Engine(tmp_path / "no-model", device="cpu")


def test_real_geotiff_answer(engine, tmp_path):
    """NEON OSBS_029 (0.1 m aerial RGB, UTM 17N, nodata 255) from the deepforest wheel."""
    import shutil

    from tests.data_fetch import real_geotiff

    path = shutil.copy(real_geotiff(), tmp_path / "osbs.tif")
    answer = engine.ask(path, "How many trees are there?", AskOptions(mode="dip", max_new_tokens=2))
    t = answer.trace
    assert t["image_size"] == [400, 400] and t["levels"][0] == 1
    assert t["llm_vision_tokens"] == t["thumbnail_tokens"] + t["kept_tokens"] + t["kept_rows"]
    inside = _raster_footprint(path).Buffer(1e-6)
    assert all(inside.Contains(_polygon(c.ring)) for c in answer.heat_cells)


@pytest.fixture(scope="module")
def reference_rules_engine(tiny_bundle, tmp_path_factory):
    """The tiny bundle with a converted checkpoint's settings: reference unpad and keep count,
    verbatim question text and a trained context of 1,000 tokens."""
    import json
    import shutil

    copy = tmp_path_factory.mktemp("reference-rules") / "bundle"
    shutil.copytree(tiny_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["pyramid"] = {"unpad": "floor", "skip_equal_grids": True}
    manifest["selection"] = {"keep_rounding": "floor"}
    manifest["chat"]["question_text"] = "verbatim"
    manifest["llm"]["max_context"] = 1000
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return Engine(copy, device="cpu")


def test_reference_rules_count_and_unpad_as_the_reference(reference_rules_engine, scene):
    answer = reference_rules_engine.ask(scene, QUESTION, AskOptions(mode="prune-only", level=2,
                                                                    max_new_tokens=1))
    m = reference_rules_engine.manifest
    w, h = answer.trace["image_size"]
    plan = plan_pyramid(w, h, tile_size=m.tile_size, token_grid=m.pooled_grid, unpad="floor")
    candidates = _valid_tokens_in(plan, 2, plan.level(2).tiles())
    assert answer.trace["rfm_tokens"]      # scored
    assert answer.trace["kept_tokens"] == int(0.25 * candidates) == keep_count(candidates, 0.25, "floor")
    ours = plan_pyramid(w, h, tile_size=m.tile_size, token_grid=m.pooled_grid)
    assert _valid_tokens_in(ours, 2, ours.level(2).tiles()) >= candidates


def test_trained_context_is_the_budget_and_the_question_is_never_cut(reference_rules_engine, scene):
    with pytest.raises(InputError, match=r"at most 1000"):
        reference_rules_engine.ask(scene, QUESTION + " and" * 1200, AskOptions(mode="thumbnail"))
