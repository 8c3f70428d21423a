"""`ask --heatmap` and `eval --answers` never lose a file: existing outputs are refused unless
--overwrite, GeoPackages get a new layer, inputs are never written; question files cannot reach
outside --images; hand-written files in another encoding are named with line and byte."""

from __future__ import annotations

import json

import pytest
from osgeo import gdal, ogr

from rs_vqa_plugin.commands import main
from tests.rasters import make_rgb_scene

pytest_plugins = ["tests.fixtures_models"]

QUESTION = "How many ships are in the harbour?"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_rgb_scene(tmp_path_factory.mktemp("scene") / "scene.tif", size=(400, 300), seed=1)


def ask(tiny_bundle, image, *extra):
    return main(["ask", str(image), QUESTION, "--model", str(tiny_bundle), "--device", "cpu",
                 "--max-new-tokens", "1", "--quiet", *map(str, extra)])


def layer_counts(path):
    ds = gdal.OpenEx(str(path), gdal.OF_VECTOR)
    counts = {ds.GetLayer(i).GetName(): ds.GetLayer(i).GetFeatureCount() for i in range(ds.GetLayerCount())}
    ds = None
    return counts


def project_gpkg(path):
    """A GeoPackage with a layer of the user's own, as a QGIS project file would hold."""
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("roads", None, ogr.wkbPoint)
    layer.CreateField(ogr.FieldDefn("name", ogr.OFTString))
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetField("name", "A1")
    feature.SetGeometry(ogr.CreateGeometryFromWkt("POINT (400010 3299990)"))
    layer.CreateFeature(feature)
    layer = ds = None
    return path


def raster_opens(path):
    try:
        return gdal.Open(str(path)).RasterCount > 0
    except RuntimeError:
        return False


# -- ask --heatmap --------------------------------------------------------------------------------
def test_an_existing_geojson_is_refused_unless_overwrite(tiny_bundle, scene, tmp_path, capsys):
    mine = tmp_path / "mine.geojson"
    mine.write_text('{"type": "FeatureCollection", "features": []}')
    assert ask(tiny_bundle, scene, "--heatmap", mine) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert mine.read_text() == '{"type": "FeatureCollection", "features": []}'
    assert ask(tiny_bundle, scene, "--heatmap", mine, "--overwrite") == 0
    assert layer_counts(mine)["heatmap"] > 0


def test_a_geopackage_gets_a_new_layer_and_keeps_the_others(tiny_bundle, scene, tmp_path, capsys):
    project = project_gpkg(tmp_path / "project.gpkg")
    assert ask(tiny_bundle, scene, "--heatmap", project) == 0
    assert ask(tiny_bundle, scene, "--heatmap", project) == 0
    counts = layer_counts(project)
    assert counts["roads"] == 1
    assert counts["heatmap"] > 0 and counts["heatmap_2"] == counts["heatmap"]

    # A named layer that exists is refused, then replaced alone with --overwrite.
    assert ask(tiny_bundle, scene, "--heatmap", project, "--heatmap-layer", "roads") == 2
    assert "already has a layer 'roads'" in capsys.readouterr().err
    assert layer_counts(project) == counts
    assert ask(tiny_bundle, scene, "--heatmap", project, "--heatmap-layer", "heatmap", "--overwrite") == 0
    assert layer_counts(project) == counts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project.gpkg"]   # nothing left behind


def test_a_file_named_gpkg_that_is_not_one_is_kept(tiny_bundle, scene, tmp_path, capsys):
    notes = tmp_path / "notes.gpkg"
    notes.write_text("my notes")
    assert ask(tiny_bundle, scene, "--heatmap", notes) == 2
    assert "not a GeoPackage" in capsys.readouterr().err
    assert notes.read_text() == "my notes"


def test_the_input_is_never_written_even_with_overwrite(tiny_bundle, scene, tmp_path, capsys):
    raster = tmp_path / "raster.gpkg"
    gdal.Translate(str(raster), str(scene), format="GPKG")
    link = tmp_path / "link.gpkg"
    link.symlink_to(raster)
    vrt = tmp_path / "mosaic.vrt"
    gdal.BuildVRT(str(vrt), [str(raster)])
    history = tmp_path / "history.json"
    history.write_text('[["Is it a port?", "yes"]]')
    for image, out in ((raster, raster), (raster, link), (vrt, raster), (raster, tmp_path / "." / "raster.gpkg")):
        assert ask(tiny_bundle, image, "--heatmap", out, "--overwrite") == 2
        assert "is the input raster" in capsys.readouterr().err
    assert ask(tiny_bundle, scene, "--history", history, "--heatmap", history, "--overwrite") == 2
    assert "the --history file" in capsys.readouterr().err
    assert raster_opens(raster) and history.read_text() == '[["Is it a port?", "yes"]]'


@pytest.mark.parametrize("where, message", [("folder", "is a folder"), ("missing", "does not exist"),
                                            ("unwritable", "cannot be written in")])
def test_unusable_heatmap_paths_fail_before_the_model_loads(tiny_bundle, scene, tmp_path, capsys,
                                                            where, message):
    paths = {"folder": tmp_path / "dir.gpkg", "missing": tmp_path / "missing" / "heat.gpkg",
             # /proc refuses new files even to root (a chmod'ed folder would not stop root).
             "unwritable": "/proc/rs-vqa-heat.gpkg"}
    (tmp_path / "dir.gpkg").mkdir()
    assert ask(tmp_path / "no-model-needed", scene, "--heatmap", paths[where]) == 2
    assert message in capsys.readouterr().err


# -- eval --answers -------------------------------------------------------------------------------
@pytest.fixture
def benchmark(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    make_rgb_scene(images / "a.tif", size=(200, 150), seed=2)
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": "FAIR_1", "image": "a.tif", "text": "How many ships?",
                                     "category": "count", "ground_truth": "2"}) + "\n")
    return questions, images


def evaluate(tiny_bundle, questions, images, answers, *extra):
    return main(["eval", str(questions), "--images", str(images), "--model", str(tiny_bundle),
                 "--mode", "thumbnail", "--max-new-tokens", "1", "--answers", str(answers), "--quiet",
                 *map(str, extra)])


def test_answers_that_are_an_input_or_not_answers_are_refused(tiny_bundle, benchmark, tmp_path, capsys):
    questions, images = benchmark
    text = questions.read_text()
    link = tmp_path / "link.jsonl"
    link.symlink_to(questions)
    for answers, message in ((questions, "is the questions file"), (link, "is the questions file"),
                             (images / "a.tif", "is an image of the questions")):
        assert evaluate(tiny_bundle, questions, images, answers) == 2
        out = capsys.readouterr()
        assert message in out.err and "OA" not in out.out
    notes = tmp_path / "notes.txt"
    other = tmp_path / "records.jsonl"
    copy = tmp_path / "questions-copy.jsonl"
    contents = {notes: "my notes about the run", other: '{"id": 1, "value": "x"}\n', copy: text}
    for path, content in contents.items():
        path.write_text(content)
        assert evaluate(tiny_bundle, questions, images, path) == 2
        assert "choose a new file name" in capsys.readouterr().err
    assert main(["eval", str(questions), "--merge", str(other), "--answers", str(questions)]) == 2
    assert main(["eval", str(questions), "--merge", str(other), "--answers", str(notes)]) == 2
    assert questions.read_text() == text and all(p.read_text() == c for p, c in contents.items())
    assert raster_opens(images / "a.tif")


def test_merge_keeps_the_answers_already_in_its_output(tiny_bundle, benchmark, tmp_path, capsys):
    questions, images = benchmark
    merged = tmp_path / "all.jsonl"
    merged.write_text(json.dumps({"question_id": "FAIR_1", "text": "2", "mode": "dip"}) + "\n")
    shard = tmp_path / "s.jsonl"
    shard.write_text(json.dumps({"question_id": "FAIR_1", "text": "7", "mode": "dip"}) + "\n"
                     + json.dumps({"question_id": "FAIR_2", "text": "3", "mode": "dip"}) + "\n")
    assert main(["eval", str(questions), "--merge", str(shard), "--answers", str(merged), "--json"]) == 0
    assert [json.loads(line)["text"] for line in merged.read_text().splitlines()] == ["2", "3"]
    assert json.loads(capsys.readouterr().out)["overall"]["OA"] == 1.0


@pytest.mark.parametrize("image", ["../outside/x.tif", "ABSOLUTE", "sub/../../outside/x.tif", "link.tif"])
def test_question_images_cannot_leave_the_images_folder(tiny_bundle, benchmark, tmp_path, capsys, image):
    questions, images = benchmark
    outside = tmp_path / "outside"
    outside.mkdir()
    # Large enough that reading it would build overviews beside it.
    make_rgb_scene(outside / "x.tif", size=(1300, 1100), seed=3)
    (images / "link.tif").symlink_to(outside / "x.tif")
    image = str(outside / "x.tif") if image == "ABSOLUTE" else image
    questions.write_text(questions.read_text() + json.dumps(
        {"question_id": "FAIR_2", "image": image, "text": "How many?", "category": "count",
         "ground_truth": "1"}) + "\n")
    answers = tmp_path / "answers.jsonl"
    assert evaluate(tiny_bundle, questions, images, answers) == 2
    err = capsys.readouterr().err
    assert "line 2 (question FAIR_2)" in err and image in err
    assert not answers.exists()
    assert sorted(p.name for p in outside.iterdir()) == ["x.tif"]      # no .ovr written out there


def test_a_latin1_question_file_is_named_with_line_and_byte(tiny_bundle, benchmark, tmp_path, capsys):
    questions, images = benchmark
    questions.write_bytes(questions.read_bytes() + json.dumps(
        {"question_id": "FAIR_2", "image": "a.tif", "text": "Quelle densité ?"},
        ensure_ascii=False).encode("latin-1") + b"\n")
    assert evaluate(tiny_bundle, questions, images, tmp_path / "a.jsonl") == 2
    err = capsys.readouterr().err
    assert "line 2: not UTF-8 text (byte 0xe9) at column" in err and "Save it as UTF-8" in err
    assert "Traceback" not in err
