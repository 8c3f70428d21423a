"""`pyramid` and `overviews` commands: JSON report, progress on stderr, bad input exits 2 cleanly."""

import json
import os

from rs_vqa_plugin.commands import main
from tests.rasters import make_rgb_scene, make_uint16_4band


def test_pyramid_json_reports_raster_and_levels(tmp_path, capsys):
    path = make_uint16_4band(tmp_path / "u16.tif", size=(1500, 700), epsg=4326)
    assert main(["pyramid", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["width"], report["height"], report["band_count"]) == (1500, 700, 4)
    assert report["data_types"] == ["UInt16"] and report["rgb_bands"] == [1, 2, 3]
    assert report["crs"]["authority"] == "EPSG:4326" and report["crs"]["wkt"]
    assert report["overviews"]["location"] == "none" and report["tile_size"] == 336
    assert report["thumbnail"]["content_size"] == [336, 157]
    levels = report["levels"]
    assert [lv["long_side"] for lv in levels] == [1008, 1500]
    assert levels[0]["tile_grid"] == [2, 3] and levels[1]["tile_grid"] == [3, 5]
    assert levels[1]["scale"] == 1680 / 1500
    assert os.listdir(tmp_path) == ["u16.tif"]                  # describing writes nothing


def test_pyramid_text_and_tile_size(tmp_path, capsys):
    path = make_rgb_scene(tmp_path / "rgb.tif", size=900, epsg=None)
    assert main(["pyramid", str(path), "--tile-size", "224", "--token-grid", "8"]) == 0
    out = capsys.readouterr().out
    assert "900 x 900 px" in out and "no CRS" in out and "warning:" in out
    assert "672 x 672" in out                                          # level 1 = 3 tiles of 224
    assert main(["pyramid", str(path), "--tile-size", "100"]) == 2       # not a multiple of 12
    assert "--tile-size" in capsys.readouterr().err


def test_overviews_command_builds_with_progress(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    path = make_rgb_scene(tmp_path / "in" / "rgb.tif", size=1600)
    cache = tmp_path / "cache"
    assert main(["overviews", str(path), "--cache-dir", str(cache), "--json"]) == 0
    captured = capsys.readouterr()
    state = json.loads(captured.out)
    assert state["location"] == "cache" and state["built"] and state["factors"] == [2, 4, 8]
    assert "100.0%" in captured.err
    assert os.listdir(path.parent) == ["rgb.tif"]
    assert main(["overviews", str(path), "--cache-dir", str(cache)]) == 0
    assert "already present" in capsys.readouterr().out


def test_bad_input_exits_2_with_the_file_named(tmp_path, capsys):
    missing = tmp_path / "nope.tif"
    assert main(["overviews", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert main(["pyramid", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
