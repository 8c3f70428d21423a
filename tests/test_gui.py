"""The chat dock in headless QGIS with the real worker process (issue 8, "Must show")."""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from pathlib import Path

import pytest

from tests.qgis_support import flush_deletes, qgis_app  # noqa: F401 (fixture)
from tests.rasters import make_rgb_scene

pytestmark = [pytest.mark.qgis, pytest.mark.subprocess]

# Registered once per session as a plugin, so both modules share one tiny bundle build.
pytest_plugins = ["tests.fixtures_models"]

HEAVY = ("torch", "transformers", "onnxruntime", "rs_vqa_plugin.engine.pipeline",
         "rs_vqa_plugin.engine.vision", "rs_vqa_plugin.engine.rfm", "rs_vqa_plugin.engine.llm")


def spin_until(predicate, timeout=60.0):
    """Run the Qt event loop until predicate() is true (worker events arrive through it)."""
    from qgis.PyQt.QtCore import QCoreApplication

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QCoreApplication.processEvents()
        if predicate():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def project(qgis_app):
    from qgis.core import QgsProject

    project = QgsProject.instance()
    project.clear()
    yield project
    project.clear()


@pytest.fixture
def raster_layer(project, tmp_path):
    from qgis.core import QgsRasterLayer

    path = make_rgb_scene(tmp_path / "harbour.tif", size=(640, 480), seed=5)
    layer = QgsRasterLayer(str(path), "harbour")
    assert layer.isValid()
    project.addMapLayer(layer)
    return layer


@pytest.fixture(scope="module")
def shared_controller(qgis_app):
    """One dock (and so one warm worker) for the module: a model loads in seconds, not instantly."""
    from tests.qgis_support import make_recording_iface

    from rs_vqa_plugin.gui.dock_controller import DockController

    iface = make_recording_iface()
    ctrl = DockController(iface)
    yield ctrl
    ctrl.unload()
    iface.mainWindow().close()
    iface.mainWindow().deleteLater()
    flush_deletes()


@pytest.fixture
def controller(shared_controller, raster_layer):
    from rs_vqa_plugin.gui.history import Conversations
    from rs_vqa_plugin.settings import PluginSettings

    ctrl = shared_controller
    assert ctrl.current is None
    # Explicit settings (never the developer's saved ones): the repo venv's Python runs the worker.
    ctrl.settings = PluginSettings(python=sys.executable, model_dir="", device="cpu",
                                   max_new_tokens=6)
    ctrl.conversations = Conversations()
    ctrl.show(raster_layer)
    return ctrl


def make_broken_bundle(folder: Path) -> Path:
    folder.mkdir()
    (folder / "manifest.json").write_text("{ truncated")
    return folder


def test_the_gui_side_never_imports_the_ml_stack(tmp_path):
    # In a fresh process: this pytest process may already hold torch from other tests' fixtures.
    import subprocess

    script = tmp_path / "probe.py"
    script.write_text(
        "import pkgutil, importlib, sys\n"
        "from tests.qgis_support import start_qgis\n"
        "start_qgis()\n"
        "import rs_vqa_plugin.gui as gui\n"
        "for m in pkgutil.iter_modules(gui.__path__):\n"
        "    importlib.import_module('rs_vqa_plugin.gui.' + m.name)\n"
        "from rs_vqa_plugin.gui.dock_controller import DockController\n"
        "DockController(None).unload()\n"
        f"print([n for n in {HEAVY!r} if n in sys.modules])\n")
    repo = str(Path(__file__).resolve().parent.parent)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=repo,
                            env=dict(os.environ, PYTHONPATH=repo), timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_clear_messages_for_bad_inputs(controller, project, tmp_path):
    from qgis.core import QgsVectorLayer

    vector = QgsVectorLayer("Polygon?crs=EPSG:32617", "parcels", "memory")
    project.addMapLayer(vector)
    controller.show(vector)
    status = controller.dock.status_label.text()
    assert "parcels is not a raster layer" in status and "Choose a raster" in status

    bundle = make_broken_bundle(tmp_path / "broken")
    controller.settings.model_dir = str(bundle)
    problem = controller.ask("How many ships?")
    assert "manifest.json cannot be read" in problem and str(bundle) in problem
    assert controller.dock.status_label.text() == problem and controller.current is None

    controller.settings.model_dir = str(tmp_path / "gone")
    assert "does not exist" in controller.ask("How many ships?")

    (bundle / "manifest.json").write_text("{}")
    for part in ("vision.onnx", "rfm.onnx", "llm"):
        (bundle / part).mkdir()
    controller.settings.model_dir = str(bundle)
    controller.settings.python = ""
    problem = controller.ask("How many ships?")
    assert "No runtime Python is set" in problem and "Set up runtime" in problem
    controller.settings.python = str(tmp_path / "nowhere" / "python")
    assert "does not exist" in controller.ask("How many ships?")
    assert controller.current is None and not controller.current_turns()


def test_polygon_scope_needs_a_selection(controller, project):
    from qgis.core import QgsFeature, QgsGeometry, QgsVectorLayer

    from rs_vqa_plugin.gui.scope import POLYGON, ScopeError, resolve_scope

    parcels = QgsVectorLayer("Polygon?crs=EPSG:32617", "parcels", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromWkt(
        "POLYGON((400010 3299990, 400100 3299990, 400100 3299900, 400010 3299900, 400010 3299990))"))
    parcels.dataProvider().addFeatures([feature])
    project.addMapLayer(parcels)
    raster = controller.dock.layer_combo.currentLayer()
    with pytest.raises(ScopeError, match="Select a polygon in parcels"):
        resolve_scope(POLYGON, raster, None, parcels)
    parcels.selectAll()
    wkt = resolve_scope(POLYGON, raster, None, parcels)
    assert wkt.startswith("Polygon") and "400010" in wkt


def test_visible_extent_scope_is_clipped_to_the_raster_in_its_crs(controller, raster_layer):
    from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle

    from rs_vqa_plugin.gui.scope import EXTENT, ScopeError, resolve_scope

    canvas = controller.iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:32617"))
    full = raster_layer.extent()
    canvas.resize(400, 400)
    canvas.setExtent(QgsRectangle(full.xMinimum() - 50, full.yMinimum() + 10,
                                  full.center().x(), full.center().y()))
    xmin, ymin, xmax, ymax = resolve_scope(EXTENT, raster_layer, canvas)
    assert xmin == pytest.approx(full.xMinimum()) and ymin >= full.yMinimum() + 9
    assert xmax < full.xMaximum() and ymax < full.yMaximum()
    canvas.setExtent(QgsRectangle(0, 0, 100, 100))   # far away from the raster
    with pytest.raises(ScopeError, match="does not overlap harbour"):
        resolve_scope(EXTENT, raster_layer, canvas)


def test_model_picker_lists_bundles_and_flags_broken_ones(tmp_path):
    from rs_vqa_plugin.gui.models import find_bundles

    good = tmp_path / "user" / "good"
    for part in ("vision.onnx", "rfm.onnx", "llm"):
        (good / part).mkdir(parents=True)
    (good / "manifest.json").write_text('{"format_version": 1}')
    make_broken_bundle(tmp_path / "user" / "broken")
    found = {b.name: b for b in find_bundles([str(tmp_path / "user")])}
    assert found["good"].problem is None and found["good"].label == "good"
    assert "cannot be read" in found["broken"].problem and found["broken"].label.endswith("(unusable)")


def test_worker_death_is_reported_and_the_next_start_is_fresh(controller):
    client = controller.client
    client.python = sys.executable
    assert client.start() is None
    first_pid = client.process.processId()
    deaths = []
    client.died.connect(deaths.append)
    client.kill()
    assert spin_until(lambda: deaths, 15)
    assert "crashed or was killed" in deaths[0] and "next question starts a fresh" in deaths[0]
    assert "crashed or was killed" in controller.dock.status_label.text()
    assert client.start() is None and client.process.processId() != first_pid

    # A hung worker (here frozen with SIGSTOP) stops its heartbeats and is ended by the watchdog.
    import signal

    client.heartbeat_timeout_s = 1.5
    spin_until(lambda: False, 0.5)   # let the fresh worker start talking
    os.kill(client.process.processId(), signal.SIGSTOP)
    assert spin_until(lambda: len(deaths) == 2, 15)
    assert "stopped responding" in deaths[1]
    client.heartbeat_timeout_s = 30.0


def test_history_is_saved_with_the_project_and_exported(controller, project, raster_layer,
                                                        tmp_path):
    from rs_vqa_plugin.gui.history import Turn

    layer_id = raster_layer.id()   # the layer object is re-created when the project is read
    turns = controller.conversations.turns(layer_id)
    turns.append(Turn(question="How many ships?", text="three", status="answered",
                      stats={"seconds": 1.5, "tiles": 12, "llm_tokens": 400, "levels": [1, 2]}))
    turns.append(Turn(question="Where?", status="stopped", message="Stopped"))
    controller.conversations.save_to_project(project)
    path = tmp_path / "saved.qgz"
    assert project.write(str(path))
    controller.conversations.by_layer.clear()
    assert project.read(str(path))   # readProject -> the dock restores the conversation
    restored = controller.conversations.turns(layer_id)
    assert [(t.question, t.status, t.text) for t in restored] == [
        ("How many ships?", "answered", "three"), ("Where?", "stopped", "")]
    assert "three" in controller.dock.conversation.toPlainText()
    md = controller.export_history("markdown", str(tmp_path / "h.md")).read_text()
    assert "**Q:** How many ships?" in md and "12 tiles read" in md
    rows = list(csv.DictReader(io.StringIO(
        controller.export_history("csv", str(tmp_path / "h.csv")).read_text())))
    assert rows[0]["answer"] == "three" and rows[0]["levels"] == "1 2" and rows[1]["status"] == "stopped"


def test_settings_round_trip_through_qgssettings(qgis_app, tmp_path):
    from qgis.core import QgsSettings
    from qgis.PyQt.QtCore import QSettings

    from rs_vqa_plugin.settings import PluginSettings, load_settings, save_settings

    store = QgsSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    wanted = PluginSettings(python="/opt/rt/bin/python", model_dir="/data/bundles/a",
                            model_folders=["/data/bundles", "/mnt/models"], device="cuda",
                            alpha=0.3, n_max=40, max_new_tokens=64)
    save_settings(wanted, store)
    assert load_settings(store) == wanted
    save_settings(PluginSettings(python="", model_dir=""), store)   # cleared stays cleared
    again = load_settings(store)
    assert again.python == "" and again.alpha is None and again.n_max is None
    assert again.ask_options() == {"max_new_tokens": 32}


def test_settings_dialog_checks_the_runtime_and_copies_redacted_diagnostics(qgis_app):
    from qgis.PyQt.QtWidgets import QApplication

    from rs_vqa_plugin.settings import PluginSettings
    from rs_vqa_plugin.gui.settings_dialog import SettingsDialog

    model = Path.home() / "rs-vqa-models" / "demo"
    dialog = SettingsDialog(PluginSettings(python=sys.executable, model_dir=str(model)))
    dialog.check_runtime()   # doctor --json in the background: the dialog stays responsive
    assert not dialog.check_button.isEnabled()
    assert spin_until(dialog.check_button.isEnabled, 90)
    report = dialog.log.toPlainText()
    assert "torch device: cpu" in report and "ONNX Runtime provider: CPUExecutionProvider" in report
    assert "onnxruntime: 1." in report
    dialog.copy_diagnostics()
    copied = QApplication.clipboard().text()
    assert "~/rs-vqa-models/demo" in copied and "torch device: cpu" in copied
    assert str(Path.home()) + "/" not in copied
    dialog.reject()


# ---- with the real worker and a tiny bundle ------------------------------------------------
def test_ask_streams_an_answer_and_adds_the_heat_layer(controller, project, raster_layer,
                                                       tiny_bundle, tmp_path):
    from qgis.core import QgsApplication, QgsGeometry

    controller.settings.model_dir = str(tiny_bundle)
    project.setFileName(str(tmp_path / "survey.qgz"))   # heatmaps go next to a saved project
    texts = []
    controller.client.token.connect(lambda _rid, _t: texts.append(
        controller.dock.conversation.toPlainText()))
    controller.dock.question_edit.setText("Where are the ships?")
    controller.dock.question_edit.returnPressed.emit()       # Enter sends
    assert controller.current is not None and controller.dock.stop_button.isEnabled()
    assert spin_until(lambda: controller.current is None, 120), controller.dock.status_label.text()
    turn = controller.current_turns()[-1]
    assert turn.status == "answered", (turn.message, controller.dock.status_label.text())
    assert texts, "no token was streamed into the dock"
    assert turn.stats["tiles"] > 0 and turn.stats["levels"]
    assert "tiles read" in controller.dock.conversation.toPlainText()

    heat = project.mapLayer(turn.heat_layer_id)
    assert heat is not None and heat.name() == "Where are the ships?"
    assert heat.crs() == raster_layer.crs()
    assert heat.featureCount() > 0
    raster_box = QgsGeometry.fromRect(raster_layer.extent()).buffer(1e-6, 1)
    assert all(raster_box.contains(f.geometry()) for f in heat.getFeatures())
    assert heat.renderer().type() == "graduatedSymbol" and heat.opacity() < 1.0
    assert heat in controller.dock.polygon_combo.exceptedLayerList()   # not offered as a scope
    group = project.layerTreeRoot().findGroup("RS-VQA: harbour")
    assert group is not None and group.findLayer(heat.id()) is not None
    assert Path(turn.heat_path).parent == tmp_path / "rs_vqa_heatmaps"
    assert Path(turn.heat_path).suffix == ".gpkg" and Path(turn.heat_path).exists()
    assert project.write()
    assert project.read(str(tmp_path / "survey.qgz"))   # reopened: layer and conversation back
    reopened = project.mapLayer(turn.heat_layer_id)
    assert reopened is not None and reopened.isValid() and reopened.featureCount() > 0
    turn = controller.current_turns()[-1]
    assert turn.question == "Where are the ships?" and turn.status == "answered"

    # Follow-up: the earlier turn travels as history; the model stays warm.
    sent = []
    original = controller.client.request
    controller.client.request = lambda cmd, **f: (sent.append(f), original(cmd, **f))[1]
    controller.ask("And the boats?")
    assert controller.current.task in QgsApplication.taskManager().tasks()
    assert sent[0]["options"]["history"] == [["Where are the ships?", turn.text]]
    assert spin_until(lambda: controller.current is None, 120)
    assert controller.current_turns()[-1].status == "answered"


def test_stop_and_a_killed_worker_leave_nothing_half_added(controller, project, tiny_bundle):
    controller.settings.model_dir = str(tiny_bundle)
    controller.settings.max_new_tokens = 400
    layers_before = set(project.mapLayers())

    def on_first_pixels(action):
        # Acts from the worker's first "read"/"encode" progress, as a person clicking mid-run.
        def slot(_rid, stage, _fraction, _message):
            if stage in ("read", "encode") and not fired:
                fired.append(time.monotonic())
                action()
        fired = []
        controller.client.progress.connect(slot)
        return fired, slot

    fired, slot = on_first_pixels(controller.dock.stop_button.click)
    controller.ask("Describe everything in detail.")
    pid = controller.client.process.processId()
    assert spin_until(lambda: controller.current is None, 120)
    controller.client.progress.disconnect(slot)
    assert fired and time.monotonic() - fired[0] < 2.5   # Stop is prompt
    assert controller.current_turns()[-1].status == "stopped"
    assert "Stopped" in controller.dock.status_label.text()
    # Cancelled by the worker itself, which stays warm for the next question.
    assert controller.client.is_running() and controller.client.process.processId() == pid
    assert set(project.mapLayers()) == layers_before

    fired, slot = on_first_pixels(controller.client.kill)   # as the OOM killer would
    controller.ask("Describe everything again.")
    assert spin_until(lambda: controller.current is None, 120)
    controller.client.progress.disconnect(slot)
    turn = controller.current_turns()[-1]
    assert fired and turn.status == "failed" and "crashed or was killed" in turn.message
    assert set(project.mapLayers()) == layers_before

    controller.settings.max_new_tokens = 4
    controller.ask("Is there water?")   # a fresh worker answers
    assert spin_until(lambda: controller.current is None, 120)
    assert controller.current_turns()[-1].status == "answered"


# ---- what desktop use found broken or misleading -------------------------------------------
def answered_turn_with_heat(controller, project, raster_layer, folder, question="Where are the ships?"):
    """An answered turn whose heat layer was added by the real add_heat_layer (no worker needed)."""
    from rs_vqa_plugin.heat_layer import add_heat_layer
    from rs_vqa_plugin.gui.history import Turn

    box = raster_layer.extent()
    x, y = box.xMinimum(), box.yMaximum()
    answer = {"question": question, "crs_wkt": raster_layer.crs().toWkt(),
              "heat_cells": [{"ring": [[x, y], [x + 50, y], [x + 50, y - 50], [x, y - 50], [x, y]],
                              "score": 0.9, "level": 1, "tile": [0, 0], "rank": 1,
                              "kind": "tile"}]}
    heat = add_heat_layer(project, raster_layer, answer, folder=folder)
    turn = Turn(question=question, text="two", status="answered", heat_layer_id=heat.id(),
                stats={"seconds": 0.5, "tiles": 3, "llm_tokens": 40, "levels": [1]})
    controller.conversations.turns(raster_layer.id()).append(turn)
    controller.refresh()
    return turn, project.layerTreeRoot().findLayer(heat.id())


def click_link(dock, text):
    """A real left click on the link showing `text` in the conversation (as a person clicks it)."""
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtTest import QTest

    browser = dock.conversation
    dock.window().show()   # offscreen; a hidden text browser lays nothing out to click on
    dock.show()
    browser.resize(600, 400)
    cursor = browser.document().find(text)
    assert not cursor.isNull(), browser.toPlainText()
    cursor.setPosition(cursor.selectionStart() + 1)
    point = browser.cursorRect(cursor).center()
    QTest.mouseClick(browser.viewport(), Qt.LeftButton, Qt.NoModifier, point)


def test_hide_where_it_looked_hides_the_heat_layer_and_the_link_follows(controller, project,
                                                                        raster_layer, tmp_path):
    turn, node = answered_turn_with_heat(controller, project, raster_layer, tmp_path)
    dock = controller.dock
    assert node.isVisible() and "Hide where it looked" in dock.conversation.toPlainText()
    click_link(dock, "Hide where it looked")
    assert not node.isVisible()
    assert "Show where it looked" in dock.conversation.toPlainText()
    assert "Hide where it looked" not in dock.conversation.toPlainText()
    # Show again, even when the whole group was switched off in the layers panel.
    node.parent().setItemVisibilityChecked(False)
    click_link(dock, "Show where it looked")
    assert node.isVisible() and "Hide where it looked" in dock.conversation.toPlainText()
    # Switched off in the layers panel: the dock's link says so too.
    node.setItemVisibilityChecked(False)
    assert "Show where it looked" in dock.conversation.toPlainText()


def act_on_progress(controller, wanted, action):
    """Calls action() once, on the worker's first progress event of a stage in `wanted`."""
    fired = []

    def slot(_rid, stage, _fraction, _message):
        if stage in wanted and not fired:
            fired.append(stage)
            action()
    controller.client.progress.connect(slot)
    return fired, slot


def test_stop_while_the_model_loads_says_stopped_not_crashed(controller, tiny_bundle):
    controller.settings.model_dir = str(tiny_bundle)
    controller.client.shutdown()        # a fresh worker: this ask loads the model
    controller.model_info = {}
    controller.stop_grace_ms = 0        # the load outlasts the grace: the worker is ended
    fired, slot = act_on_progress(controller, ("load",), controller.dock.stop_button.click)
    try:
        controller.ask("How many ships?")
        assert spin_until(lambda: controller.current is None, 120)
        spin_until(lambda: False, 1.0)   # a crash report would arrive after the turn finished
    finally:
        controller.client.progress.disconnect(slot)
        controller.stop_grace_ms = 3000
    turn = controller.current_turns()[-1]
    status = controller.dock.status_label
    assert fired == ["load"] and turn.status == "stopped" and turn.message.startswith("Stopped")
    assert status.text().startswith("Stopped") and "b00020" not in status.styleSheet()
    assert "crashed" not in status.text() + controller.dock.conversation.toPlainText()
    assert not controller.client.is_running()
    controller.settings.max_new_tokens = 2
    controller.ask("Is there water?")   # a fresh worker loads the model and answers
    assert spin_until(lambda: controller.current is None, 120)
    assert controller.current_turns()[-1].status == "answered"


def test_a_stopped_turn_keeps_no_partial_answer_and_exports_as_stopped(controller, tiny_bundle,
                                                                        tmp_path):
    controller.settings.model_dir = str(tiny_bundle)
    controller.settings.max_new_tokens = 400
    streamed = []

    def stop_on_first_token(_rid, text):
        streamed.append(text)
        if len(streamed) == 1:
            controller.dock.stop_button.click()
    controller.client.token.connect(stop_on_first_token)
    try:
        controller.ask("Describe everything in detail.")
        assert spin_until(lambda: controller.current is None, 120)
    finally:
        controller.client.token.disconnect(stop_on_first_token)
    turn = controller.current_turns()[-1]
    assert streamed and turn.status == "stopped" and turn.text == ""
    shown = controller.dock.conversation.toPlainText()
    assert "A:" not in shown and "Stopped" in shown
    rows = list(csv.DictReader(io.StringIO(
        controller.export_history("csv", str(tmp_path / "h.csv")).read_text())))
    assert (rows[-1]["status"], rows[-1]["answer"]) == ("stopped", "")


def test_a_raster_whose_file_was_deleted_is_called_missing(controller, project, tmp_path):
    from qgis.core import QgsRasterLayer

    (tmp_path / "survey").mkdir()
    path = make_rgb_scene(tmp_path / "survey" / "gone.tif", size=64)
    layer = QgsRasterLayer(str(path), "gone")
    project.addMapLayer(layer)
    controller.show(layer)
    path.unlink()
    problem = controller.ask("How many ships?")
    assert "missing" in problem and str(path) in problem and "gone" in problem
    assert "GeoTIFF" not in problem and "not a raster file" not in problem
    assert controller.dock.status_label.text() == problem and controller.current is None


def test_an_empty_question_clears_an_old_error_and_asks_for_one(controller):
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtTest import QTest

    dock = controller.dock
    dock.show_status("The model folder /old does not exist.", error=True)
    dock.question_edit.setText("   ")
    QTest.keyClick(dock.question_edit, Qt.Key_Return)
    assert dock.status_label.text() == "Type a question first."
    assert "b00020" not in dock.status_label.styleSheet()
    assert controller.current is None and not controller.current_turns()


def test_settings_ok_stays_open_on_a_folder_that_is_not_a_bundle(qgis_app, tmp_path):
    from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox

    from rs_vqa_plugin.gui.settings_dialog import SettingsDialog
    from rs_vqa_plugin.settings import PluginSettings

    (tmp_path / "photos").mkdir()
    dialog = SettingsDialog(PluginSettings(python=sys.executable, model_dir=""))
    dialog.show()
    dialog.model_edit.setText(str(tmp_path / "photos"))
    dialog.buttons.button(QDialogButtonBox.Ok).click()
    assert dialog.isVisible() and dialog.result() != QDialog.Accepted
    warning = dialog.warning_label
    assert warning.isVisible() and str(tmp_path / "photos") in warning.text()
    assert "no manifest.json" in warning.text() and "Cancel" in warning.text()
    dialog.model_edit.setText("")   # no folder: nothing to warn about
    dialog.buttons.button(QDialogButtonBox.Ok).click()
    assert not dialog.isVisible() and dialog.result() == QDialog.Accepted


def test_the_time_under_an_answer_is_what_the_person_waited_with_its_parts(controller, project,
                                                                          tiny_bundle, tmp_path):
    from qgis.core import QgsRasterLayer

    # Large enough for overviews (built on the first question), asked of a fresh worker (loads).
    path = make_rgb_scene(tmp_path / "large.tif", size=(1400, 1000), seed=8)
    layer = QgsRasterLayer(str(path), "large")
    project.addMapLayer(layer)
    controller.show(layer)
    project.setFileName(str(tmp_path / "timing.qgz"))
    controller.settings.model_dir = str(tiny_bundle)
    controller.settings.max_new_tokens = 4
    controller.client.shutdown()
    controller.model_info = {}
    streamed = []
    collect = lambda _rid, text: streamed.append(text)   # noqa: E731
    controller.client.token.connect(collect)
    try:
        waits = []
        for question in ("How many ships?", "And cars?"):
            started = time.monotonic()
            controller.ask(question)
            assert spin_until(lambda: controller.current is None, 120)
            waits.append(time.monotonic() - started)
    finally:
        controller.client.token.disconnect(collect)
    first, second = controller.current_turns()
    assert first.status == second.status == "answered"
    parts = first.stats["parts"]
    assert parts["load"] > 0 and parts["overviews"] > 0 and parts["answer"] > 0
    # What the person waited: the whole round trip, of which the parts are pieces.
    assert parts["load"] + parts["overviews"] + parts["answer"] <= first.stats["seconds"] + 0.02
    assert abs(first.stats["seconds"] - waits[0]) < 0.5
    shown = controller.dock.conversation.toPlainText()
    # Parts under 0.05 s are left out of the line (the overviews of this small raster may be).
    overviews = f", overviews {parts['overviews']:.1f} s" if parts["overviews"] >= 0.05 else ""
    assert (f"{first.stats['seconds']:.1f} s (model load {parts['load']:.1f} s{overviews}, "
            f"answer {parts['answer']:.1f} s)") in shown
    # Warm model, overviews already there: the answer is the whole wait.
    assert second.stats["parts"]["load"] == 0 and second.stats["parts"]["overviews"] == 0
    assert f"{second.stats['seconds']:.1f} s · " in shown
    # The tokens streamed into the dock are the answers, each piece once.
    assert "".join(streamed).replace(" ", "") == (first.text + second.text).replace(" ", "")
