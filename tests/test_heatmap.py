"""Heatmap files (GeoPackage / GeoJSON via OGR), Answer JSON round trip, and scope windows."""

from __future__ import annotations

import json
import os

import pytest
from osgeo import ogr, osr

from rs_vqa_plugin.engine.answer import Answer, HeatCell, answer_from_dict, answer_to_dict
from rs_vqa_plugin.engine.errors import InputError
from rs_vqa_plugin.engine.geo import GeoReference
from rs_vqa_plugin.engine.heatmap import copy_heatmap_layer, write_heatmap, write_heatmap_layer
from rs_vqa_plugin.engine.scope import scope_vertices, scope_window, window_from_vertices
from tests.rasters import ROTATED_GEOTRANSFORM, UTM_GEOTRANSFORM, make_rgb_scene


def _utm_wkt():
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32617)
    return srs.ExportToWkt()


def _answer(question="Where are the ships?"):
    ring = [(400000.0, 3300000.0), (400010.0, 3300000.0), (400010.0, 3299990.0),
            (400000.0, 3299990.0), (400000.0, 3300000.0)]
    cells = [HeatCell(ring=ring, score=0.7, level=2, tile=(1, 3), rank=1, kind="token"),
             HeatCell(ring=ring, score=0.2, level=1, tile=(0, 0), rank=2, kind="tile")]
    return Answer(question=question, text="three", mode="dip", trace={"levels": [1, 2]},
                  heat_cells=cells, crs_wkt=_utm_wkt(), raster="scene.tif")


def test_answer_json_round_trip():
    answer = _answer()
    data = json.loads(json.dumps(answer_to_dict(answer)))
    assert data["heat_cells"][0]["tile"] == [1, 3]
    back = answer_from_dict(data)
    assert back == answer


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson"])
def test_heatmap_fields_and_crs(tmp_path, suffix):
    path = write_heatmap([_answer("q1"), _answer("q2")], tmp_path / f"heat{suffix}")
    assert sorted(os.listdir(tmp_path)) == [path.name]           # no temporary left behind
    ds = ogr.Open(str(path))
    layer = ds.GetLayer(0)
    assert layer.GetFeatureCount() == 4
    names = [layer.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(layer.GetLayerDefn().GetFieldCount())]
    assert names == ["question", "score", "level", "tile", "rank", "kind"]
    feature = layer.GetNextFeature()
    assert (feature.GetField("question"), feature.GetField("tile"), feature.GetField("rank"),
            feature.GetField("kind")) == ("q1", "1,3", 1, "token")
    assert feature.GetField("score") == pytest.approx(0.7)
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "32617"
    assert feature.GetGeometryRef().GetArea() == pytest.approx(100.0)


def test_heatmap_failure_leaves_nothing(tmp_path):
    broken = _answer()
    broken.heat_cells.append(HeatCell(ring=[("x", "y")], score=0, level=1, tile=(0, 0), rank=1))
    with pytest.raises(ValueError):
        write_heatmap([broken], tmp_path / "heat.gpkg")
    assert os.listdir(tmp_path) == []


def _layers(path):
    ds = ogr.Open(str(path))
    return {ds.GetLayer(i).GetName(): ds.GetLayer(i).GetFeatureCount() for i in range(ds.GetLayerCount())}


def test_a_layer_added_to_a_geopackage_takes_a_free_name_or_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "project.gpkg"
    first = write_heatmap_layer([_answer("q1")], path, base="heat_q")
    second = write_heatmap_layer([_answer("q1"), _answer("q2")], path, base="heat_q")
    assert (first.action, first.layer, second.action, second.layer) == (
        "new-file", "heat_q", "add-layer", "heat_q_2")
    assert _layers(path) == {"heat_q": 2, "heat_q_2": 4}
    # A failure half-way through the cells: rolled back, no half-written layer, nothing replaced.
    broken = _answer()
    broken.heat_cells.append(HeatCell(ring=[("x", "y")], score=0, level=1, tile=(0, 0), rank=1))
    with pytest.raises(ValueError):
        write_heatmap_layer([broken], path, base="heat_q")
    assert _layers(path) == {"heat_q": 2, "heat_q_2": 4}
    assert sorted(os.listdir(tmp_path)) == ["project.gpkg"]


def test_a_heatmap_layer_is_copied_under_a_free_name(tmp_path):
    source, target = tmp_path / "profile.gpkg", tmp_path / "project.gpkg"
    write_heatmap_layer([_answer("q1")], source, base="heat_q")
    write_heatmap_layer([_answer("q2"), _answer("q3")], target, base="heat_q")
    copied = copy_heatmap_layer(source, "heat_q", target, base="heat_q")
    assert (copied.path, copied.layer) == (target, "heat_q_2")
    assert _layers(target) == {"heat_q": 4, "heat_q_2": 2}
    ds = ogr.Open(str(target))
    assert ds.GetLayerByName("heat_q_2").GetSpatialRef().GetAuthorityCode(None) == "32617"
    ds = None
    with pytest.raises(InputError, match="no layer 'gone'"):
        copy_heatmap_layer(source, "gone", target)
    assert _layers(target) == {"heat_q": 4, "heat_q_2": 2}


def test_heatmap_refuses_other_formats(tmp_path):
    with pytest.raises(InputError, match="gpkg"):
        write_heatmap([_answer()], tmp_path / "heat.shp")
    with pytest.raises(InputError, match="does not exist"):
        write_heatmap([_answer()], tmp_path / "missing" / "heat.gpkg")


def test_extent_to_window_north_up():
    georef = GeoReference(UTM_GEOTRANSFORM)      # 0.5 m pixels from (400000, 3300000)
    vertices = scope_vertices((400050.0, 3299880.0, 400150.0, 3299980.0))
    assert window_from_vertices(vertices, georef, 700, 500) == (100, 40, 200, 200)


def test_window_is_clipped_to_the_raster():
    georef = GeoReference(UTM_GEOTRANSFORM)
    vertices = scope_vertices((399990.0, 3299900.0, 400020.0, 3300100.0))
    assert window_from_vertices(vertices, georef, 700, 500) == (0, 0, 40, 200)


def test_rotated_polygon_window_covers_its_vertices():
    georef = GeoReference(ROTATED_GEOTRANSFORM)
    pixel_corners = [(50, 60), (150, 70), (120, 180), (50, 60)]
    ring = [georef.pixel_to_map(x, y) for x, y in pixel_corners]
    wkt = "POLYGON ((" + ", ".join(f"{x!r} {y!r}" for x, y in ring) + "))"
    assert window_from_vertices(scope_vertices(wkt), georef, 400, 300) == (50, 60, 100, 120)


def test_scope_errors():
    georef = GeoReference(UTM_GEOTRANSFORM)
    with pytest.raises(InputError, match="outside the raster"):
        window_from_vertices(scope_vertices((0.0, 0.0, 10.0, 10.0)), georef, 700, 500)
    with pytest.raises(InputError, match="empty or invalid"):
        scope_vertices((5.0, 5.0, 1.0, 1.0))
    with pytest.raises(InputError, match="not a polygon"):
        scope_vertices("POINT (1 2)")
    with pytest.raises(InputError, match="WKT"):
        scope_vertices("POLYGON ((broken")


def test_scope_window_reads_the_raster_geotransform(tmp_path):
    path = make_rgb_scene(tmp_path / "s.tif", size=(300, 200))
    assert scope_window(path, None) is None
    assert scope_window(path, (400000.0, 3299950.0, 400050.0, 3300000.0)) == (0, 0, 100, 100)
