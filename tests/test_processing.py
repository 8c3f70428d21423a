"""The rs_vqa Processing algorithms through processing.run in headless QGIS (real GDAL, real models)."""

from __future__ import annotations

import os

import pytest
from qgis.core import QgsProcessingException, QgsProcessingFeedback

from tests.qgis_support import qgis_app, qgis_processing  # noqa: F401 (pytest fixtures)
from tests.rasters import make_rgb_scene

pytestmark = pytest.mark.qgis

pytest_plugins = ["tests.fixtures_models"]  # tiny_bundle: a real (random-weight) model bundle
QUESTIONS = ["How many ships are docked?", "What colour is the roof of the largest building?"]


class CancelAfterFirstProgress(QgsProcessingFeedback):
    """Presses Cancel as soon as the algorithm reports any progress (as a user would, mid-run)."""

    def __init__(self):
        super().__init__()
        self.progress_reports = 0
        self.progressChanged.connect(self._on_progress)

    def _on_progress(self, _value):
        self.progress_reports += 1
        self.cancel()


@pytest.fixture(scope="module")
def rs_vqa_provider(qgis_processing):  # noqa: F811 (fixture)
    from qgis.core import QgsApplication

    from rs_vqa_plugin.processing.provider import RsVqaProvider

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("rs_vqa")
    added = provider is None
    if added:
        provider = RsVqaProvider()
        assert registry.addProvider(provider)
    yield provider
    if added:
        registry.removeProvider(provider)


def run(algorithm, parameters, feedback=None):
    import processing

    return processing.run(algorithm, parameters, feedback=feedback or QgsProcessingFeedback())


def test_provider_lists_three_algorithms_with_help(rs_vqa_provider):
    algorithms = {a.id(): a for a in rs_vqa_provider.algorithms()}
    assert sorted(algorithms) == ["rs_vqa:ask", "rs_vqa:build_pyramid", "rs_vqa:evaluate"]
    for algorithm in algorithms.values():
        assert len(algorithm.shortHelpString()) > 200, algorithm.id()
        assert algorithm.group() and algorithm.groupId()
        # Batch mode and the modeler need a fresh, stateless instance per run.
        assert algorithm.createInstance() is not algorithm
    ask = algorithms["rs_vqa:ask"]
    names = [p.name() for p in ask.parameterDefinitions()]
    for name in ("INPUT", "QUESTIONS", "SCOPE", "MODEL", "MODE", "ALPHA", "N_MAX", "OUTPUT", "HEATMAP"):
        assert name in names
    assert ask.outputDefinition("ANSWERED") is not None


# -- build_pyramid ------------------------------------------------------------------------------
def test_build_pyramid_beside_the_raster_then_reused(rs_vqa_provider, tmp_path):
    raster = make_rgb_scene(tmp_path / "big.tif", size=(1300, 1100))
    before = raster.read_bytes()
    result = run("rs_vqa:build_pyramid", {"INPUT": str(raster)})
    assert result["LOCATION"] == "external"
    assert result["OVERVIEW_FILE"] == str(raster) + ".ovr"
    assert (tmp_path / "big.tif.ovr").is_file()
    assert result["LEVELS"] >= 2
    assert raster.read_bytes() == before, "the user's raster must never be rewritten"
    again = run("rs_vqa:build_pyramid", {"INPUT": str(raster)})
    assert again["LOCATION"] == "external" and again["LEVELS"] == result["LEVELS"]


def test_build_pyramid_into_a_cache_folder(rs_vqa_provider, tmp_path):
    raster = make_rgb_scene(tmp_path / "scene.tif", size=(1200, 1200))
    cache = tmp_path / "cache"
    cache.mkdir()
    result = run("rs_vqa:build_pyramid", {"INPUT": str(raster), "CACHE_DIR": str(cache),
                                          "USE_CACHE": True})
    assert result["LOCATION"] == "cache"
    assert result["OVERVIEW_FILE"].startswith(str(cache)) and result["READ_PATH"].endswith(".vrt")
    assert not (tmp_path / "scene.tif.ovr").exists()
    assert sorted(p.suffix for p in cache.iterdir()) == [".ovr", ".vrt"]


def test_build_pyramid_cancel_leaves_no_file(rs_vqa_provider, tmp_path):
    raster = make_rgb_scene(tmp_path / "cancel.tif", size=(1500, 1500))
    feedback = CancelAfterFirstProgress()
    result = run("rs_vqa:build_pyramid", {"INPUT": str(raster)}, feedback)
    assert feedback.isCanceled() and feedback.progress_reports >= 1
    assert "LOCATION" not in result
    # QGIS itself may leave cancel.tif.aux.xml (GDAL PAM) when it opens the layer; that is not ours.
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".aux.xml"))
    assert left == ["cancel.tif"], "a cancelled build left files"


# -- bad parameters are rejected before any heavy work ------------------------------------------
def polygon_file(path, epsg, wkt):
    """A one-feature GeoPackage layer (any geometry type) written with OGR."""
    from osgeo import ogr, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    geometry = ogr.CreateGeometryFromWkt(wkt)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer(path.stem, srs, geometry.GetGeometryType())
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(geometry)
    layer.CreateFeature(feature)
    ds = None
    return path


@pytest.fixture
def vector_file(tmp_path):
    return polygon_file(tmp_path / "points.gpkg", 32617, "POINT (400010 3299990)")


def rejected(algorithm, parameters) -> str:
    with pytest.raises(QgsProcessingException) as caught:
        run(algorithm, parameters)
    return str(caught.value)


def test_ask_rejects_a_vector_layer_as_input(rs_vqa_provider, vector_file, tmp_path):
    message = rejected("rs_vqa:ask", {"INPUT": str(vector_file), "QUESTIONS": "How many ships?",
                                      "OUTPUT": str(tmp_path / "a.csv")})
    assert "vector layer" in message and "raster" in message


def test_build_pyramid_rejects_a_vector_layer(rs_vqa_provider, vector_file):
    assert "vector layer" in rejected("rs_vqa:build_pyramid", {"INPUT": str(vector_file)})


def test_ask_rejects_no_questions(rs_vqa_provider, tmp_path):
    raster = make_rgb_scene(tmp_path / "r.tif", size=64)
    for questions in ("", "  \n \n"):
        message = rejected("rs_vqa:ask", {"INPUT": str(raster), "QUESTIONS": questions,
                                          "OUTPUT": str(tmp_path / "a.csv")})
        assert "question" in message.lower()
    empty = tmp_path / "empty.csv"
    empty.write_text("question\n")
    assert "No questions" in rejected("rs_vqa:ask", {"INPUT": str(raster), "QUESTIONS": str(empty),
                                                     "OUTPUT": str(tmp_path / "a.csv")})
    message = rejected("rs_vqa:ask", {"INPUT": str(raster), "QUESTIONS": str(tmp_path / "nope.jsonl"),
                                      "OUTPUT": str(tmp_path / "a.csv")})
    assert "nope.jsonl does not exist" in message


def test_ask_rejects_a_missing_model_folder(rs_vqa_provider, tmp_path):
    raster = make_rgb_scene(tmp_path / "r.tif", size=64)
    message = rejected("rs_vqa:ask", {"INPUT": str(raster), "QUESTIONS": "How many ships?",
                                      "MODEL": str(tmp_path / "no-model"),
                                      "OUTPUT": str(tmp_path / "a.csv")})
    assert "no-model does not exist" in message
    not_a_bundle = tmp_path / "folder"
    not_a_bundle.mkdir()
    message = rejected("rs_vqa:ask", {"INPUT": str(raster), "QUESTIONS": "How many ships?",
                                      "MODEL": str(not_a_bundle), "OUTPUT": str(tmp_path / "a.csv")})
    assert "no manifest.json" in message
    assert not (tmp_path / "a.csv").exists()


# -- ask with a real (tiny) model -----------------------------------------------------------------
def vector_layer(path, name=None):
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(str(path) if name is None else f"{path}|layername={name}", "out", "ogr")
    assert layer.isValid(), path
    return layer


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_rgb_scene(tmp_path_factory.mktemp("scene") / "scene.tif", size=(700, 500))


def test_ask_answers_every_question_with_table_and_heatmap(rs_vqa_provider, tiny_bundle, scene, tmp_path):
    from qgis.core import QgsRasterLayer

    result = run("rs_vqa:ask", {"INPUT": str(scene), "QUESTIONS": "\n".join(QUESTIONS),
                                "MODEL": str(tiny_bundle), "MODE": "dip", "MAX_TOKENS": 3,
                                "OUTPUT": str(tmp_path / "answers.gpkg"),
                                "HEATMAP": str(tmp_path / "heat.gpkg")})
    assert result["ANSWERED"] == 2
    table = vector_layer(result["OUTPUT"])
    rows = list(table.getFeatures())
    assert [r["question"] for r in rows] == QUESTIONS
    for row in rows:
        assert row["answer"] and row["seconds"] > 0 and row["mode"] == "dip"
        assert row["tiles_read"] > 0 and row["llm_vision_tokens"] > 0
        levels = [int(v) for v in row["levels"].split(",")]
        assert levels[0] == 1 and levels == sorted(levels)
    heat = vector_layer(result["HEATMAP"])
    raster = QgsRasterLayer(str(scene), "scene")
    assert heat.crs().authid() == "EPSG:32617" == raster.crs().authid()
    cells = list(heat.getFeatures())
    assert {c["question"] for c in cells} == set(QUESTIONS)
    extent = raster.extent().buffered(raster.rasterUnitsPerPixelX())
    assert all(extent.contains(c.geometry().boundingBox()) for c in cells)
    assert all(c.geometry().area() > 0 and c["kind"] in ("token", "tile") for c in cells)


class RecordingFeedback(QgsProcessingFeedback):
    """Keeps what the algorithm tells the user (the log of the Processing dialog)."""

    def __init__(self):
        super().__init__()
        self.infos = []

    def pushInfo(self, info):  # noqa: N802 (QGIS API name)
        self.infos.append(info)
        super().pushInfo(info)


def test_ask_without_model_uses_the_configured_else_the_bundled_model(rs_vqa_provider, tiny_bundle,
                                                                      scene, tmp_path):
    # The README's batch example names no MODEL; QGIS 3.22 used to refuse it ("Incorrect
    # parameter value for MODEL"). The dock's chosen model (RS-VQA settings) comes first.
    import shutil

    from qgis.core import QgsSettings

    from rs_vqa_plugin.paths import default_model_dir
    from rs_vqa_plugin.processing import engine_cache

    configured = shutil.copytree(tiny_bundle, tmp_path / "configured")
    store, key = QgsSettings(), "rs_vqa/model_dir"
    saved = store.value(key, None)
    try:
        for index, (chosen, expected) in enumerate(((str(configured), configured),
                                                    ("", default_model_dir()))):
            store.setValue(key, chosen)
            engine_cache.release()   # so the log says which model was loaded
            feedback = RecordingFeedback()
            result = run("rs_vqa:ask", {"INPUT": str(scene), "QUESTIONS": QUESTIONS[0],
                                        "MAX_TOKENS": 2, "OUTPUT": str(tmp_path / f"a{index}.csv")},
                         feedback)
            assert result["ANSWERED"] == 1
            assert any(f"Loading the model from {expected} " in info for info in feedback.infos), \
                feedback.infos
    finally:
        if saved is None:
            store.remove(key)
        else:
            store.setValue(key, saved)
        engine_cache.release()


def test_ask_questions_from_jsonl_inside_a_scope_to_csv(rs_vqa_provider, tiny_bundle, scene, tmp_path):
    import json

    from qgis.core import QgsRectangle

    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question_id": f"q{i}", "text": q}) + "\n"
                                 for i, q in enumerate(QUESTIONS[:1])))
    # The scene is 350 x 250 m from (400000, 3300000) downwards; ask about its north-west corner.
    scope = QgsRectangle(400000, 3299900, 400120, 3300000)
    result = run("rs_vqa:ask", {"INPUT": str(scene), "QUESTIONS": str(questions),
                                "SCOPE": f"{scope.xMinimum()},{scope.xMaximum()},{scope.yMinimum()},"
                                         f"{scope.yMaximum()} [EPSG:32617]",
                                "MODEL": str(tiny_bundle), "MODE": "dip", "MAX_TOKENS": 2,
                                "OUTPUT": str(tmp_path / "answers.csv"),
                                "HEATMAP": str(tmp_path / "heat.geojson")})
    rows = list(vector_layer(result["OUTPUT"]).getFeatures())
    assert [(r["question_id"], r["mode"]) for r in rows] == [("q0", "dip")]
    assert (tmp_path / "answers.csv").read_text().splitlines()[0].startswith("question_id,question,answer")
    cells = list(vector_layer(result["HEATMAP"]).getFeatures())
    assert cells
    for cell in cells:
        assert scope.buffered(1.0).contains(cell.geometry().boundingBox())


def test_ask_results_loaded_into_the_project_are_styled_and_grouped_as_the_dock_does(
        rs_vqa_provider, tiny_bundle, scene, tmp_path):
    # The heatmap used to keep the .qml's fixed labels ("0.0 - 0.2", ...) and land wherever
    # Processing put it; now it has the dock's style and place (one results module for both).
    import re

    import processing
    from qgis.core import QgsProject, QgsRasterLayer

    from rs_vqa_plugin.heat_layer import GROUP_PREFIX, HEAT_PROPERTY

    project = QgsProject.instance()
    raster = QgsRasterLayer(str(scene), "harbour")
    project.addMapLayer(raster)
    try:
        result = processing.runAndLoadResults("rs_vqa:ask", {
            "INPUT": raster.id(), "QUESTIONS": QUESTIONS[0], "MODEL": str(tiny_bundle),
            "MODE": "grid", "MAX_TOKENS": 1, "OUTPUT": "TEMPORARY_OUTPUT",
            "HEATMAP": str(tmp_path / "heat.gpkg")})
        heat = [layer for layer in project.mapLayers().values()
                if layer.source().startswith(str(tmp_path / "heat.gpkg"))]
        assert len(heat) == 1 and heat[0].featureCount() > 0
        renderer = heat[0].renderer()
        assert renderer.type() == "graduatedSymbol" and renderer.classAttribute() == "score"
        labels = [r.label() for r in renderer.ranges()]
        assert labels and all(re.match(r"^(\d+(\.\d)?%|<0\.1%|0%) of the model's attention$", label)
                              for label in labels), labels
        assert "attention" in heat[0].title() and heat[0].customProperty(HEAT_PROPERTY, False)
        group = project.layerTreeRoot().findGroup(GROUP_PREFIX + "harbour")
        assert group is not None and group.findLayer(heat[0].id()) is not None
        assert project.mapLayer(result["OUTPUT"]).featureCount() == 1  # a memory layer, by id
    finally:
        project.removeAllMapLayers()
        project.clear()


class CancelAfterAnswers(QgsProcessingFeedback):
    """Presses Cancel once `count` answers have been reported (the algorithm logs "-> answer")."""

    def __init__(self, count):
        super().__init__()
        self.count = count

    def pushInfo(self, info):  # noqa: N802 (QGIS API name)
        super().pushInfo(info)
        if info.lstrip().startswith("->"):
            self.count -= 1
            if self.count == 0:
                self.cancel()


@pytest.mark.parametrize("cancel_after", [0, 1])
def test_ask_cancel_fails_the_run_and_keeps_what_was_answered(rs_vqa_provider, tiny_bundle, scene,
                                                              tmp_path, cancel_after):
    feedback = CancelAfterFirstProgress() if cancel_after == 0 else CancelAfterAnswers(cancel_after)
    with pytest.raises(QgsProcessingException, match=f"Cancelled after {cancel_after} of 6 questions; "
                                                     "the answers so far are kept in OUTPUT"):
        run("rs_vqa:ask", {"INPUT": str(scene), "QUESTIONS": "\n".join(QUESTIONS * 3),
                           "MODEL": str(tiny_bundle), "MAX_TOKENS": 2,
                           "OUTPUT": str(tmp_path / "answers.gpkg"),
                           "HEATMAP": str(tmp_path / "heat.gpkg")}, feedback)
    assert feedback.isCanceled()
    rows = list(vector_layer(str(tmp_path / "answers.gpkg")).getFeatures())
    assert [r["question"] for r in rows] == QUESTIONS[:cancel_after]
    heat = vector_layer(str(tmp_path / "heat.gpkg"))
    assert (heat.featureCount() > 0) == (cancel_after > 0)


def test_ask_batch_over_several_rasters(rs_vqa_provider, tiny_bundle, tmp_path):
    # What the batch dialog does: one fresh algorithm instance per raster, same parameters.
    from qgis.core import QgsApplication

    from rs_vqa_plugin.processing import engine_cache

    engine_cache.release()
    loads = engine_cache.loads
    algorithm = QgsApplication.processingRegistry().algorithmById("rs_vqa:ask")
    # One lon/lat polygon as the scope of both: reprojected to each raster's CRS.
    scope = polygon_file(tmp_path / "scope.gpkg", 4326,
                         "POLYGON ((-82.29999 29.64999, -82.2985 29.64999, -82.2985 29.6485, "
                         "-82.29999 29.6485, -82.29999 29.64999))")
    counts = []
    for i, (epsg, geotransform) in enumerate(((32617, (374150.0, 0.5, 0, 3280720.0, 0, -0.5)),
                                              (4326, None))):
        raster = make_rgb_scene(tmp_path / f"r{i}.tif", size=(300, 200), seed=i, epsg=epsg,
                                geotransform=geotransform)
        result = run(algorithm.create(), {"INPUT": str(raster), "QUESTIONS": QUESTIONS[0],
                                          "SCOPE": str(scope),
                                          "MODEL": str(tiny_bundle), "MODE": "thumbnail", "MAX_TOKENS": 2,
                                          "OUTPUT": str(tmp_path / f"a{i}.csv"),
                                          "HEATMAP": str(tmp_path / f"h{i}.gpkg")})
        counts.append(result["ANSWERED"])
        assert vector_layer(result["HEATMAP"]).crs().authid() == f"EPSG:{epsg}"
    assert counts == [1, 1]
    assert engine_cache.loads == loads + 1, "each batch row loaded the model again"
    # a bundle rebuilt in place is reloaded, not served stale
    manifest = tiny_bundle / "manifest.json"
    stat = manifest.stat()
    os.utime(manifest, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
    result = run(algorithm.create(), {"INPUT": str(raster), "QUESTIONS": QUESTIONS[0],
                                      "MODEL": str(tiny_bundle), "MODE": "thumbnail", "MAX_TOKENS": 2,
                                      "OUTPUT": str(tmp_path / "again.csv")})
    assert result["ANSWERED"] == 1 and engine_cache.loads == loads + 2


# -- evaluate: LRS-VQA questions, answers file resumed, accuracy table -------------------------
def test_evaluate_scores_per_subset_and_resumes(rs_vqa_provider, tiny_bundle, tmp_path):
    import json

    images = tmp_path / "images"
    images.mkdir()
    make_rgb_scene(images / "a.tif", size=(300, 200), seed=3)
    make_rgb_scene(images / "b.tif", size=(200, 300), seed=4)
    suffix = " Answer the question using a single word or phrase."
    records = [
        {"question_id": "FAIR_1", "image": "a.tif", "text": "How many ships?" + suffix,
         "category": "count", "ground_truth": "3"},
        {"question_id": "FAIR_2", "image": "b.tif", "text": "What colour is the car?" + suffix,
         "category": "object color", "ground_truth": "red"},
        {"question_id": "STAR_3", "image": "a.tif", "text": "Is this rural or urban?" + suffix,
         "category": "rural or urban", "ground_truth": "urban"},
    ]
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in records))
    answers = tmp_path / "answers.jsonl"
    # An earlier, interrupted run answered FAIR_1 correctly: it must be kept, not asked again.
    earlier = {"question_id": "FAIR_1", "text": "3", "image": "a.tif"}
    answers.write_text(json.dumps(earlier) + "\n")
    parameters = {"QUESTIONS": str(questions), "IMAGES": str(images), "MODEL": str(tiny_bundle),
                  "MODE": "thumbnail", "MAX_TOKENS": 2, "ANSWERS": str(answers),
                  "OUTPUT": str(tmp_path / "scores.csv")}

    first = run("rs_vqa:evaluate", dict(parameters, LIMIT=2))
    assert first["ANSWERED"] == 2
    lines = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [line["question_id"] for line in lines] == ["FAIR_1", "FAIR_2"]
    assert lines[0] == earlier

    second = run("rs_vqa:evaluate", dict(parameters, OUTPUT=str(tmp_path / "scores2.gpkg")))
    lines = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [line["question_id"] for line in lines] == ["FAIR_1", "FAIR_2", "STAR_3"]
    assert second["ANSWERED"] == 3
    table = {(f["subset"], f["category"]): f for f in vector_layer(second["OUTPUT"]).getFeatures()}
    assert {"FAIR", "STAR", "all"} == {subset for subset, _ in table}
    assert table[("FAIR", "count")]["accuracy"] == 1.0 and table[("FAIR", "count")]["total"] == 1
    for subset in ("FAIR", "STAR", "all"):
        assert (subset, "OA") in table and (subset, "AA") in table
    assert table[("all", "OA")]["total"] == 3
    assert second["OA"] == pytest.approx(table[("all", "OA")]["accuracy"])
    assert second["AA"] == pytest.approx(table[("all", "AA")]["accuracy"])
    assert second["OA"] >= 1 / 3  # FAIR_1 at least


def test_evaluate_rejects_missing_images_before_loading(rs_vqa_provider, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question_id": "FAIR_1", "image": "gone.tif", "text": "How many?"}\n')
    message = rejected("rs_vqa:evaluate", {"QUESTIONS": str(questions), "IMAGES": str(tmp_path),
                                           "ANSWERS": str(tmp_path / "a.jsonl"),
                                           "OUTPUT": str(tmp_path / "s.csv")})
    assert "gone.tif" in message and not (tmp_path / "a.jsonl").exists()


def test_ask_rejects_a_point_layer_as_scope(rs_vqa_provider, tiny_bundle, scene, vector_file, tmp_path):
    message = rejected("rs_vqa:ask", {"INPUT": str(scene), "QUESTIONS": "How many ships?",
                                      "SCOPE": str(vector_file), "MODEL": str(tiny_bundle),
                                      "OUTPUT": str(tmp_path / "a.csv")})
    assert "Point" in message and "polygons or an extent" in message


def test_ask_selection_is_an_advanced_parameter(rs_vqa_provider, tiny_bundle, scene, tmp_path):
    from qgis.core import QgsApplication

    algorithm = QgsApplication.processingRegistry().algorithmById("rs_vqa:ask")
    parameter = algorithm.parameterDefinition("SELECTION")
    assert parameter.flags() & parameter.FlagAdvanced and parameter.flags() & parameter.FlagOptional
    message = rejected("rs_vqa:ask", {"INPUT": str(scene), "QUESTIONS": QUESTIONS[0],
                                      "MODEL": str(tiny_bundle), "SELECTION": "zoom-everywhere",
                                      "OUTPUT": str(tmp_path / "bad.csv")})
    assert "unknown selection 'zoom-everywhere'" in message and "paper, mass" in message
    result = run("rs_vqa:ask", {"INPUT": str(scene), "QUESTIONS": QUESTIONS[0],
                                "MODEL": str(tiny_bundle), "MODE": "dip", "MAX_TOKENS": 1,
                                "SELECTION": "mass:tile_budget=4",
                                "OUTPUT": str(tmp_path / "mass.csv")})
    assert result["ANSWERED"] == 1


def test_tile_cache_is_an_advanced_parameter_kept_with_the_engine(rs_vqa_provider, tiny_bundle,
                                                                 scene, tmp_path):
    from qgis.core import QgsApplication

    from rs_vqa_plugin.processing import engine_cache

    for name in ("rs_vqa:ask", "rs_vqa:evaluate"):
        parameter = QgsApplication.processingRegistry().algorithmById(name).parameterDefinition(
            "TILE_CACHE_MB")
        assert parameter.flags() & parameter.FlagAdvanced and parameter.defaultValue() == 512
    parameters = {"INPUT": str(scene), "QUESTIONS": QUESTIONS[0], "MODEL": str(tiny_bundle),
                  "MODE": "grid", "MAX_TOKENS": 1, "TILE_CACHE_MB": 2}
    run("rs_vqa:ask", {**parameters, "OUTPUT": str(tmp_path / "a.csv")})
    with engine_cache.shared_engine(tiny_bundle, "auto") as engine:
        cache = engine.tile_cache
        held = len(cache)
    assert cache.megabytes == 2 and held > 0
    # The next run (a batch's next row) asks about the same raster: its tiles come from the cache.
    run("rs_vqa:ask", {**parameters, "QUESTIONS": QUESTIONS[1], "OUTPUT": str(tmp_path / "b.csv")})
    assert len(cache) == held
    run("rs_vqa:ask", {**parameters, "TILE_CACHE_MB": 0, "OUTPUT": str(tmp_path / "c.csv")})
    assert len(cache) == 0


def test_memory_limit_is_an_advanced_parameter_that_reaches_the_engine(rs_vqa_provider, tiny_bundle,
                                                                       scene, tmp_path):
    from qgis.core import QgsApplication

    for name in ("rs_vqa:ask", "rs_vqa:evaluate"):
        parameter = QgsApplication.processingRegistry().algorithmById(name).parameterDefinition(
            "MEMORY_LIMIT_MB")
        assert parameter.flags() & parameter.FlagAdvanced and parameter.defaultValue() == 0
    # Far below what even the tiny model needs: the engine refuses the question before reading.
    with pytest.raises(QgsProcessingException, match="raise memory_limit_mb"):
        run("rs_vqa:ask", {"INPUT": str(scene), "QUESTIONS": QUESTIONS[0], "MODEL": str(tiny_bundle),
                           "MAX_TOKENS": 1, "MEMORY_LIMIT_MB": 0.05,
                           "OUTPUT": str(tmp_path / "a.csv")})


class PluginSettingsSet:
    """RS-VQA's QgsSettings keys set for a block, then put back as they were."""

    def __init__(self, **values):
        from qgis.core import QgsSettings

        self.store, self.values = QgsSettings(), {f"rs_vqa/{k}": v for k, v in values.items()}
        self.saved = {}

    def __enter__(self):
        for key, value in self.values.items():
            self.saved[key] = self.store.value(key, None)
            self.store.setValue(key, value)

    def __exit__(self, *_exc):
        for key, value in self.saved.items():
            if value is None:
                self.store.remove(key)
            else:
                self.store.setValue(key, value)


def test_ask_puts_overviews_where_the_plugin_settings_say(rs_vqa_provider, tiny_bundle, tmp_path):
    # Large enough to need overviews (images under 1024 px need none).
    (tmp_path / "big").mkdir()
    raster = make_rgb_scene(tmp_path / "big" / "big.tif", size=(1400, 1100), seed=3)
    cache = tmp_path / "overview-cache"
    with PluginSettingsSet(overviews="cache", overview_cache_dir=str(cache)):
        result = run("rs_vqa:ask", {"INPUT": str(raster), "QUESTIONS": QUESTIONS[0],
                                    "MODEL": str(tiny_bundle), "MODE": "thumbnail", "MAX_TOKENS": 1,
                                    "OUTPUT": str(tmp_path / "a.csv")})
    assert result["ANSWERED"] == 1
    assert not list(raster.parent.glob("*.ovr")), list(raster.parent.iterdir())   # none beside it
    assert [p for p in cache.rglob("*.ovr")], list(cache.rglob("*"))


def test_a_heatmap_of_a_raster_given_as_a_file_is_grouped_under_the_files_name(
        rs_vqa_provider, tiny_bundle, scene, tmp_path):
    import processing
    from qgis.core import QgsProject

    from rs_vqa_plugin.heat_layer import GROUP_PREFIX, HEAT_PROPERTY

    project = QgsProject.instance()
    try:
        processing.runAndLoadResults("rs_vqa:ask", {
            "INPUT": str(scene), "QUESTIONS": QUESTIONS[0], "MODEL": str(tiny_bundle),
            "MODE": "grid", "MAX_TOKENS": 1, "OUTPUT": "TEMPORARY_OUTPUT",
            "HEATMAP": str(tmp_path / "heat.gpkg")})
        heat = [layer for layer in project.mapLayers().values()
                if layer.source().startswith(str(tmp_path / "heat.gpkg"))]
        assert len(heat) == 1 and heat[0].customProperty(HEAT_PROPERTY, False)
        group = project.layerTreeRoot().findGroup(GROUP_PREFIX + scene.stem)
        assert group is not None and group.findLayer(heat[0].id()) is not None
        assert heat[0].renderer().type() == "graduatedSymbol"
    finally:
        project.removeAllMapLayers()
        project.clear()
