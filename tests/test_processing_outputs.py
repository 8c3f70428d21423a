"""rs_vqa:ask / rs_vqa:evaluate outputs in headless QGIS: written answer by answer (a cancelled run
fails and keeps them), never into an input, spreadsheet-safe CSV; bad question files refused."""

from __future__ import annotations

import csv
import json
import re

import pytest
from osgeo import gdal, ogr
from qgis.core import QgsProcessingException, QgsProcessingFeedback

from tests.qgis_support import qgis_app, qgis_processing  # noqa: F401 (pytest fixtures)
from tests.rasters import make_rgb_scene
from tests.test_processing import (QUESTIONS, CancelAfterAnswers, rejected, rs_vqa_provider,  # noqa: F401
                                   run, vector_layer)

pytestmark = pytest.mark.qgis

pytest_plugins = ["tests.fixtures_models"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_rgb_scene(tmp_path_factory.mktemp("scene") / "scene.tif", size=(500, 400), seed=5)


def ask_parameters(scene, tiny_bundle, **extra):
    return dict({"INPUT": str(scene), "QUESTIONS": QUESTIONS[0], "MODEL": str(tiny_bundle),
                 "MODE": "dip", "MAX_TOKENS": 1}, **extra)


def test_csv_and_shapefile_outputs_keep_the_answers_of_a_cancelled_run(rs_vqa_provider, tiny_bundle,
                                                                        scene, tmp_path):
    with pytest.raises(QgsProcessingException, match="Cancelled after 2 of 4"):
        run("rs_vqa:ask", ask_parameters(scene, tiny_bundle, QUESTIONS="\n".join(QUESTIONS * 2),
                                         OUTPUT=str(tmp_path / "answers.csv"),
                                         HEATMAP=str(tmp_path / "heat.shp")), CancelAfterAnswers(2))
    with (tmp_path / "answers.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["question"] for r in rows] == QUESTIONS and all(r["answer"] for r in rows)
    heat = vector_layer(tmp_path / "heat.shp")
    assert heat.featureCount() > 0 and heat.crs().authid() == "EPSG:32617"
    assert {f["question"] for f in heat.getFeatures()} == set(QUESTIONS)


def test_two_outputs_in_one_geopackage_each_get_their_layer(rs_vqa_provider, tiny_bundle, scene, tmp_path):
    out = tmp_path / "run.gpkg"
    result = run("rs_vqa:ask", ask_parameters(
        scene, tiny_bundle, QUESTIONS="\n".join(QUESTIONS),
        OUTPUT=f"ogr:dbname='{out}' table=\"answers\" (geom)",
        HEATMAP=f"ogr:dbname='{out}' table=\"heat\" (geom)"))
    assert result["ANSWERED"] == 2
    assert vector_layer(out, "answers").featureCount() == 2
    assert vector_layer(out, "heat").featureCount() > 0


def test_outputs_never_write_into_the_inputs(rs_vqa_provider, tiny_bundle, scene, tmp_path):
    raster = tmp_path / "raster.gpkg"
    gdal.Translate(str(raster), str(scene), format="GPKG")
    questions = tmp_path / "questions.csv"
    questions.write_text("question\nHow many ships?\n")
    both = tmp_path / "both.gpkg"
    cases = [
        (dict(INPUT=str(raster), OUTPUT=str(raster)), "OUTPUT .* is the input raster"),
        (dict(INPUT=str(raster), OUTPUT=str(tmp_path / "a.csv"),
              HEATMAP=f"ogr:dbname='{raster}' table=\"heat\" (geom)"), "HEATMAP .* is the input raster"),
        (dict(QUESTIONS=str(questions), OUTPUT=str(questions)), "OUTPUT .* is the question file"),
        (dict(OUTPUT=str(both), HEATMAP=str(both)), "OUTPUT and HEATMAP are the same file"),
    ]
    for extra, message in cases:
        with pytest.raises(QgsProcessingException, match=message):
            run("rs_vqa:ask", ask_parameters(scene, tiny_bundle, **extra))
    assert gdal.Open(str(raster)).RasterCount == 3
    assert questions.read_text() == "question\nHow many ships?\n"
    assert not both.exists()


def test_csv_cells_never_run_as_formulas(rs_vqa_provider, tiny_bundle, scene, tmp_path):
    questions = tmp_path / "questions.csv"
    questions.write_text('question_id,question\n"=HYPERLINK(""http://example.com"")",=1+2 ships?\n'
                         "@q2,-How many?\n+q3,\tWhat is it?\n")
    out = tmp_path / "answers.csv"
    run("rs_vqa:ask", ask_parameters(scene, tiny_bundle, MODE="thumbnail", QUESTIONS=str(questions),
                                     OUTPUT=str(out)))
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["question_id"], r["question"]) for r in rows] == [
        ("'=HYPERLINK(\"http://example.com\")", "'=1+2 ships?"), ("'@q2", "'-How many?"),
        ("'+q3", "What is it?")]    # the tab is stripped from the question text before asking
    assert all(not r["answer"].startswith(("=", "+", "-", "@")) for r in rows)


# -- evaluate ---------------------------------------------------------------------------------------
@pytest.fixture
def benchmark(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    make_rgb_scene(images / "a.tif", size=(200, 150), seed=3)
    questions = tmp_path / "questions.jsonl"
    records = [{"question_id": f"FAIR_{i}", "image": "a.tif", "text": "How many ships?",
                "category": "=cmd|' /C calc'!A0", "ground_truth": "2"} for i in range(3)]
    questions.write_text("".join(json.dumps(r) + "\n" for r in records))
    return questions, images


def evaluate_parameters(benchmark, tiny_bundle, tmp_path, **extra):
    questions, images = benchmark
    return dict({"QUESTIONS": str(questions), "IMAGES": str(images), "MODEL": str(tiny_bundle),
                 "MODE": "thumbnail", "MAX_TOKENS": 1, "ANSWERS": str(tmp_path / "answers.jsonl"),
                 "OUTPUT": str(tmp_path / "scores.csv")}, **extra)


def test_evaluate_refuses_answers_that_are_inputs_or_not_answers(rs_vqa_provider, tiny_bundle, benchmark,
                                                                 tmp_path):
    questions, images = benchmark
    text = questions.read_text()
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    for extra, message in ((dict(ANSWERS=str(questions)), "is the questions file"),
                           (dict(ANSWERS=str(notes)), "is not an answers file"),
                           (dict(OUTPUT=str(questions)), "OUTPUT .* is the question file"),
                           (dict(OUTPUT=str(images / "a.tif")), "OUTPUT .* is an image of the questions")):
        parameters = evaluate_parameters(benchmark, tiny_bundle, tmp_path, **extra)
        assert re.search(message, rejected("rs_vqa:evaluate", parameters))
    assert questions.read_text() == text and notes.read_text() == "my notes"
    assert gdal.Open(str(images / "a.tif")).RasterCount == 3


def test_evaluate_refuses_images_outside_the_folder(rs_vqa_provider, tiny_bundle, benchmark, tmp_path):
    questions, images = benchmark
    make_rgb_scene(tmp_path / "x.tif", size=(1300, 1100), seed=4)
    questions.write_text(questions.read_text() + json.dumps(
        {"question_id": "FAIR_9", "image": "../x.tif", "text": "How many?"}) + "\n")
    message = rejected("rs_vqa:evaluate", evaluate_parameters(benchmark, tiny_bundle, tmp_path))
    assert "line 4 (question FAIR_9)" in message and "outside the images folder" in message
    assert not (tmp_path / "x.tif.ovr").exists()


def test_evaluate_cancel_fails_the_run_keeps_the_answers_and_scores_safely(rs_vqa_provider, tiny_bundle,
                                                                           benchmark, tmp_path):
    class CancelAfterFirstAnswer(QgsProcessingFeedback):
        def pushInfo(self, info):  # noqa: N802 (QGIS API name): evaluate logs "[1/3] id: answer"
            super().pushInfo(info)
            if info.startswith("[1/"):
                self.cancel()

    parameters = evaluate_parameters(benchmark, tiny_bundle, tmp_path)
    with pytest.raises(QgsProcessingException, match="Cancelled; the answers so far are kept"):
        run("rs_vqa:evaluate", parameters, CancelAfterFirstAnswer())
    answers = tmp_path / "answers.jsonl"
    assert [json.loads(line)["question_id"] for line in answers.read_text().splitlines()] == ["FAIR_0"]
    result = run("rs_vqa:evaluate", parameters)        # resumes: two more answers
    assert result["ANSWERED"] == 3 and len(answers.read_text().splitlines()) == 3
    with (tmp_path / "scores.csv").open(newline="") as handle:
        categories = {row["category"] for row in csv.DictReader(handle)}
    assert categories == {"'=cmd|' /C calc'!A0", "OA", "AA"}


def test_gpkg_rows_are_committed_one_answer_at_a_time(rs_vqa_provider, tiny_bundle, scene, tmp_path):
    # While the run goes on, another reader already sees every finished answer.
    seen = []

    class Watch(CancelAfterAnswers):
        def pushInfo(self, info):  # noqa: N802 (QGIS API name)
            if info.lstrip().startswith("[2/"):
                ds = ogr.Open(str(tmp_path / "answers.gpkg"))
                seen.append(ds.GetLayer(0).GetFeatureCount())
                ds = None
            super().pushInfo(info)

    run("rs_vqa:ask", ask_parameters(scene, tiny_bundle, QUESTIONS="\n".join(QUESTIONS),
                                     OUTPUT=str(tmp_path / "answers.gpkg")), Watch(99))
    assert seen == [1]


def test_a_cancel_says_which_outputs_keep_the_answers(rs_vqa_provider, tiny_bundle, scene, tmp_path):
    # A GeoJSON cannot be appended to in place: QGIS writes it when its sink closes, which a
    # cancelled run still does; a temporary layer is dropped by QGIS when the run fails.
    heat = tmp_path / "heat.geojson"
    with pytest.raises(QgsProcessingException) as caught:
        run("rs_vqa:ask", ask_parameters(scene, tiny_bundle, QUESTIONS="\n".join(QUESTIONS * 2),
                                         OUTPUT="TEMPORARY_OUTPUT", HEATMAP=str(heat)),
            CancelAfterAnswers(1))
    message = str(caught.value)
    assert f"Cancelled after 1 of 4 questions; the answers so far are kept in HEATMAP {heat}" in message
    assert "OUTPUT: temporary layers are dropped when a run fails" in message
    cells = list(vector_layer(heat).getFeatures())
    assert cells and {c["question"] for c in cells} == {QUESTIONS[0]}
