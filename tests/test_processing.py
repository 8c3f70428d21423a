"""The rs_vqa Processing algorithms through processing.run in headless QGIS (real GDAL, real models)."""

from __future__ import annotations

import pytest
from qgis.core import QgsProcessingException, QgsProcessingFeedback

from tests.qgis_support import qgis_app, qgis_processing  # noqa: F401 (pytest fixtures)
from tests.rasters import make_rgb_scene


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
@pytest.fixture
def vector_file(tmp_path):
    from osgeo import ogr, osr

    path = tmp_path / "points.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32617)
    layer = ds.CreateLayer("points", srs, ogr.wkbPoint)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(ogr.CreateGeometryFromWkt("POINT (400010 3299990)"))
    layer.CreateFeature(feature)
    ds = None
    return path


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
