"""One raster-source check and one scope resolver for the chat dock and Processing
(rs_vqa_plugin/ask_inputs.py), on the cases where the two used to disagree: a GDAL virtual path
(/vsizip/ accepted by both, /vsicurl/ left to GDAL by both) and a scope that misses the raster
(the dock refused it, Processing went on and failed mid-run). Real QGIS, real GDAL, a real model."""

from __future__ import annotations

import zipfile

import pytest
from qgis.core import QgsProcessingException, QgsProcessingFeedback

from tests.qgis_support import qgis_app, qgis_processing  # noqa: F401 (pytest fixtures)
from tests.rasters import make_rgb_scene

pytest_plugins = ["tests.fixtures_models"]
pytestmark = pytest.mark.qgis


@pytest.fixture(scope="module")
def provider(qgis_processing):  # noqa: F811 (fixture)
    from qgis.core import QgsApplication

    from rs_vqa_plugin.processing.provider import RsVqaProvider

    registry = QgsApplication.processingRegistry()
    existing = registry.providerById("rs_vqa")
    if existing is not None:
        yield existing
        return
    provider = RsVqaProvider()
    assert registry.addProvider(provider)
    yield provider
    registry.removeProvider(provider)


@pytest.fixture(scope="module")
def zipped_raster(tmp_path_factory):
    """A GeoTIFF inside a zip whose name has a space, in a folder of the archive."""
    folder = tmp_path_factory.mktemp("zipped")
    tif = make_rgb_scene(folder / "scene.tif", size=(300, 200))
    archive = folder / "tiles 2024.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(tif, "north/scene.tif")
    return archive


def both_checks(layer):
    """(the dock's verdict, Processing's verdict) on one layer: the problem message or None."""
    from rs_vqa_plugin.gui.dock_controller import DockController
    from rs_vqa_plugin.processing.common import raster_path

    dock = DockController.layer_problem(None, layer)
    try:
        raster_path(layer)
        processing = None
    except QgsProcessingException as exc:
        processing = str(exc)
    return dock, processing


def test_a_raster_in_a_zip_is_accepted_by_the_dock_and_processing_alike(qgis_app, zipped_raster):
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(f"/vsizip/{zipped_raster}/north/scene.tif", "zipped")
    assert layer.isValid()
    assert both_checks(layer) == (None, None)
    gone = QgsRasterLayer(f"/vsizip/{zipped_raster}/north/scene.tif", "gone")
    gone.setDataSource(f"/vsizip/{zipped_raster}/south/scene.tif", "gone", "gdal")
    dock, processing = both_checks(gone)
    assert dock and "The raster of gone is missing" in dock and "south/scene.tif" in dock
    assert processing == f"INPUT: {dock}"


def test_network_paths_are_left_to_gdal_and_missing_files_are_named(qgis_app, tmp_path):
    from rs_vqa_plugin.ask_inputs import gdal_source_problem

    for source in ("/vsicurl/https://example.com/cog.tif", "/vsis3/bucket/scene.tif"):
        assert gdal_source_problem("cog", source) is None, source
    message = gdal_source_problem("harbour", str(tmp_path / "harbour.tif"))
    assert "The file of harbour is missing" in message and "harbour.tif" in message
    assert gdal_source_problem("harbour", str(make_rgb_scene(tmp_path / "ok.tif", 64))) is None


def test_a_scope_off_the_raster_is_refused_by_both_before_any_output(provider, tiny_bundle,
                                                                     tmp_path):
    import processing
    from qgis.core import (QgsCoordinateReferenceSystem, QgsFeature, QgsGeometry, QgsProject,
                           QgsRasterLayer, QgsVectorLayer)

    from rs_vqa_plugin.ask_inputs import ScopeError
    from rs_vqa_plugin.gui.scope import POLYGON, resolve_scope

    raster = QgsRasterLayer(str(make_rgb_scene(tmp_path / "harbour.tif", (300, 200))), "harbour")
    box = raster.extent()
    far = (f"POLYGON(({box.xMaximum() + 1000} {box.yMaximum()}, {box.xMaximum() + 1100} "
           f"{box.yMaximum()}, {box.xMaximum() + 1100} {box.yMinimum()}, {box.xMaximum() + 1000} "
           f"{box.yMaximum()}))")
    parcels = QgsVectorLayer("Polygon?crs=EPSG:32617", "parcels", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromWkt(far))
    parcels.dataProvider().addFeatures([feature])
    parcels.selectAll()
    QgsProject.instance().addMapLayers([raster, parcels])
    try:
        with pytest.raises(ScopeError, match="The selected polygon does not overlap harbour"):
            resolve_scope(POLYGON, raster, None, parcels)
        base = {"INPUT": raster.id(), "QUESTIONS": "How many ships?", "MODEL": str(tiny_bundle),
                "MODE": "thumbnail", "MAX_TOKENS": 1, "OUTPUT": str(tmp_path / "a.csv")}
        with pytest.raises(QgsProcessingException,
                           match="The scope layer 'parcels' does not overlap harbour"):
            processing.run("rs_vqa:ask", {**base, "SCOPE": parcels.id()},
                           feedback=QgsProcessingFeedback())
        extent = (f"{box.xMaximum() + 1000},{box.xMaximum() + 1100},{box.yMinimum()},"
                  f"{box.yMaximum()} [EPSG:32617]")
        with pytest.raises(QgsProcessingException, match="The SCOPE extent does not overlap harbour"):
            processing.run("rs_vqa:ask", {**base, "SCOPE": extent}, feedback=QgsProcessingFeedback())
        assert not (tmp_path / "a.csv").exists()
        # An extent reaching past the raster is clipped to it, as the dock clips the canvas extent.
        half = (f"{box.center().x()},{box.xMaximum() + 500},{box.yMinimum() - 500},"
                f"{box.center().y()} [EPSG:32617]")
        assert QgsCoordinateReferenceSystem("EPSG:32617") == raster.crs()
        result = processing.run("rs_vqa:ask", {**base, "SCOPE": half, "MODE": "grid"},
                                feedback=QgsProcessingFeedback())
        assert result["ANSWERED"] == 1
    finally:
        QgsProject.instance().removeAllMapLayers()


def test_processing_answers_about_a_raster_in_a_zip(provider, tiny_bundle, zipped_raster, tmp_path):
    # As the toolbox passes it: a project layer (QGIS 3.22's Processing cannot load a /vsizip/
    # path given as text: "not found", before any algorithm runs).
    import processing
    from qgis.core import QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(f"/vsizip/{zipped_raster}/north/scene.tif", "zipped")
    QgsProject.instance().addMapLayer(layer)
    try:
        result = processing.run("rs_vqa:ask", {
            "INPUT": layer.id(), "QUESTIONS": "How many ships?", "MODEL": str(tiny_bundle),
            "MODE": "grid", "MAX_TOKENS": 1, "OUTPUT": str(tmp_path / "a.csv"),
            "HEATMAP": str(tmp_path / "h.gpkg")}, feedback=QgsProcessingFeedback())
    finally:
        QgsProject.instance().removeAllMapLayers()
    assert result["ANSWERED"] == 1 and (tmp_path / "h.gpkg").is_file()
