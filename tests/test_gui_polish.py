"""The chat dock's polish (issue 15): widths, readable stats, a quiet message bar, legends people
read, one visible heat layer, overview and demonstration-model notices. Headless QGIS, real dock."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.qgis_support import flush_deletes, qgis_app  # noqa: F401 (fixture)

pytestmark = pytest.mark.qgis


@pytest.fixture
def dock_window(qgis_app):
    """A ChatDock docked in a real main window (offscreen), as QGIS shows it."""
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QMainWindow

    from rs_vqa_plugin.gui.dock import ChatDock

    window = QMainWindow()
    window.setCentralWidget(QMainWindow())
    dock = ChatDock(window)
    window.addDockWidget(Qt.RightDockWidgetArea, dock)
    window.resize(1400, 900)
    window.show()
    yield window, dock
    window.close()
    window.deleteLater()
    flush_deletes()


def dock_width(window, dock, width: int) -> int:
    from qgis.PyQt.QtCore import QCoreApplication, Qt

    window.resizeDocks([dock], [width], Qt.Horizontal)
    for _ in range(3):
        QCoreApplication.processEvents()
    return dock.widget().width()


def placeholder_fits(edit) -> bool:
    margins = edit.textMargins()
    room = edit.contentsRect().width() - margins.left() - margins.right()
    return edit.fontMetrics().horizontalAdvance(edit.placeholderText()) <= room


def test_the_question_box_takes_the_dock_width_and_shows_its_whole_placeholder(dock_window):
    window, dock = dock_window
    edit = dock.question_edit
    for wanted in (450, 600):
        body = dock_width(window, dock, wanted)
        assert body >= wanted - 40
        assert edit.width() >= 0.9 * body, (edit.width(), body)
        assert placeholder_fits(edit)
    # Squeezed as far as the window lets it: the dock stops where the placeholder still shows.
    dock_width(window, dock, 60)
    assert placeholder_fits(edit), (edit.width(), edit.placeholderText())


def test_the_stats_line_is_normal_size_and_its_links_stay_whole_on_one_line(dock_window):
    from rs_vqa_plugin.gui.history import Turn

    window, dock = dock_window
    dock_width(window, dock, 380)
    turn = Turn(question="How many ships are docked?", text="three", status="answered",
                heat_layer_id="heat-1",
                stats={"seconds": 5.2, "parts": {"load": 3.1, "overviews": 1.0, "answer": 1.1},
                       "tiles": 12, "llm_tokens": 412, "levels": [1, 2]})
    dock.render([turn], {"heat-1"})
    document = dock.conversation.document()

    def block_with(text):
        cursor = document.find(text)
        assert not cursor.isNull(), document.toPlainText()
        return cursor.block()

    question, stats = block_with("How many ships"), block_with("tiles read")
    # As tall a line as the question's: the same font size (it was <small>).
    assert stats.layout().lineAt(0).height() >= 0.95 * question.layout().lineAt(0).height()
    links = block_with("Zoom to it")
    assert links.blockNumber() != stats.blockNumber()       # not run on after the figures
    assert "Hide where it looked" in links.text().replace("\xa0", " ")
    assert links.layout().lineCount() == 1                  # both links whole, on one line


# ---- heat layers: legends, the latest one shown, clearing ----------------------------------
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

    from tests.rasters import make_rgb_scene

    layer = QgsRasterLayer(str(make_rgb_scene(tmp_path / "harbour.tif", size=(640, 480), seed=5)),
                           "harbour")
    assert layer.isValid()
    project.addMapLayer(layer)
    return layer


def token_answer(raster_layer, question, scores):
    """An answer as the worker sends it: finest-level token cells along the raster's top edge."""
    box = raster_layer.extent()
    x, y = box.xMinimum(), box.yMaximum()
    cells = []
    for i, score in enumerate(scores):
        x0 = x + 10 * i
        cells.append({"ring": [[x0, y], [x0 + 10, y], [x0 + 10, y - 10], [x0, y - 10], [x0, y]],
                      "score": score, "level": 2, "tile": [0, i], "rank": i + 1, "kind": "token"})
    # A coarser level's tile, which the layer's filter hides (it is not part of the shares).
    cells.append({"ring": [[x, y], [x + 99, y], [x + 99, y - 99], [x, y - 99], [x, y]],
                  "score": 0.9, "level": 1, "tile": [0, 0], "rank": 1, "kind": "tile"})
    return {"question": question, "crs_wkt": raster_layer.crs().toWkt(), "heat_cells": cells}


def test_heat_legend_reads_as_shares_of_the_attention(project, raster_layer, tmp_path):
    import re

    from rs_vqa_plugin.heat_layer import add_heat_layer

    # Softmax shares as the RFM gives them (the legend used to read "0.00333 - 0.00414").
    scores = [0.00333, 0.0034, 0.0035, 0.0036, 0.0037, 0.0038, 0.00395, 0.00414, 0.00414, 0.0041]
    heat = add_heat_layer(project, raster_layer, token_answer(raster_layer, "Ships?", scores),
                          folder=tmp_path)
    ranges = heat.renderer().ranges()
    labels = [r.label() for r in ranges]
    pattern = re.compile(r"^(\d+(\.\d)?%|<0\.1%) of the model's attention$")
    assert len(labels) == 5 and all(pattern.match(label) for label in labels), labels
    shares = [float(label.split("%")[0].lstrip("<")) for label in labels]
    assert abs(sum(shares) - 100) <= 1.5, labels
    # Worked out here from the cells shown: the top class holds the three highest scores.
    top = [s for s in scores if s > ranges[-1].lowerValue()]
    assert labels[-1].startswith(f"{100 * sum(top) / sum(scores):.0f}%"), (labels, top)
    assert "attention" in heat.title() and heat.name() == "Ships?"


def answered_turn(controller, project, raster_layer, folder, question):
    from rs_vqa_plugin.heat_layer import add_heat_layer
    from rs_vqa_plugin.gui.history import Turn

    heat = add_heat_layer(project, raster_layer, token_answer(raster_layer, question, [0.2, 0.5, 0.3]),
                          folder=folder)
    turn = Turn(question=question, text="two", status="answered", heat_layer_id=heat.id(),
                heat_path=heat.source().split("|")[0],
                stats={"seconds": 0.5, "tiles": 3, "llm_tokens": 40, "levels": [1]})
    controller.conversations.turns(raster_layer.id()).append(turn)
    controller.refresh()
    return turn


@pytest.fixture(scope="module")
def desktop_task_notices(qgis_app):
    """What the QGIS 3.22 desktop does when a task that ran over 5 s ends (seen in QGIS under Xvfb:
    qgisapp.cpp's task notification falls back to a message-bar item titled "Task complete" holding
    the task's description). Connected first, as QGIS connects before any plugin loads."""
    from qgis.core import QgsApplication, QgsTask

    pushed, bars = [], []

    def notify(task_id, status):
        task = QgsApplication.taskManager().task(task_id)
        if task is not None and status in (QgsTask.Complete, QgsTask.Terminated) and bars:
            title = "Task complete" if status == QgsTask.Complete else "Task failed"
            bars[0].pushInfo(title, task.description())
            pushed.append(task.description())
    QgsApplication.taskManager().statusChanged.connect(notify)
    yield pushed, bars
    QgsApplication.taskManager().statusChanged.disconnect(notify)


@pytest.fixture(scope="module")
def module_controller(qgis_app, desktop_task_notices):
    from tests.qgis_support import make_recording_iface

    from rs_vqa_plugin.gui.dock_controller import DockController

    iface = make_recording_iface()
    desktop_task_notices[1].append(iface.messageBar())
    ctrl = DockController(iface)
    yield ctrl
    ctrl.unload()
    iface.mainWindow().close()
    iface.mainWindow().deleteLater()
    flush_deletes()


@pytest.fixture
def controller(module_controller, raster_layer):
    import sys

    from rs_vqa_plugin.gui.history import Conversations
    from rs_vqa_plugin.settings import PluginSettings

    ctrl = module_controller
    assert ctrl.current is None
    ctrl.settings = PluginSettings(python=sys.executable, model_dir="", device="cpu",
                                   max_new_tokens=4)
    ctrl.conversations = Conversations()
    ctrl.show(raster_layer)
    return ctrl


def test_only_the_latest_heat_layer_shows_and_clearing_offers_to_remove_them(controller, project,
                                                                             raster_layer, tmp_path):
    from pathlib import Path

    from qgis.PyQt.QtCore import QTimer
    from qgis.PyQt.QtWidgets import QApplication, QMessageBox

    root = project.layerTreeRoot()
    turns = [answered_turn(controller, project, raster_layer, tmp_path, q)
             for q in ("Ships?", "Cars?", "Planes?")]
    nodes = [root.findLayer(t.heat_layer_id) for t in turns]
    group = root.findGroup("RS-VQA: harbour")
    assert all(group.findLayer(t.heat_layer_id) is not None for t in turns)   # all kept
    assert [n.isVisible() for n in nodes] == [False, False, True]             # the latest shown
    assert [n.itemVisibilityChecked() for n in nodes] == [False, False, True]  # switchable

    # The dock's button asks; Cancel leaves everything as it was.
    asked = []

    def answer_box(button):   # never raises: an exception in a Qt slot would end the process
        box = QApplication.activeModalWidget()
        asked.append(box.text() if isinstance(box, QMessageBox) else None)
        if isinstance(box, QMessageBox) and box.button(button) is not None:
            box.button(button).click()
    QTimer.singleShot(200, lambda: answer_box(QMessageBox.Cancel))
    controller.dock.clear_button.click()
    assert asked and "3 heat layer" in asked[0]
    assert len(controller.current_turns()) == 3 and all(project.mapLayer(t.heat_layer_id) for t in turns)

    # "No": the conversation goes, its layers stay.
    assert controller.clear_conversation(remove_heat=False)
    assert controller.current_turns() == [] and all(project.mapLayer(t.heat_layer_id) for t in turns)

    # "Yes": the layers (and their emptied group) go too; the files stay on disk.
    more = [answered_turn(controller, project, raster_layer, tmp_path, q) for q in ("Roads?",)]
    QTimer.singleShot(200, lambda: answer_box(QMessageBox.Yes))
    controller.dock.clear_button.click()
    assert controller.current_turns() == [] and project.mapLayer(more[0].heat_layer_id) is None
    assert all(project.mapLayer(t.heat_layer_id) for t in turns)   # not this conversation's any more
    assert Path(more[0].heat_path).exists()
    assert "removed from the project" in controller.dock.status_label.text()


def test_overview_and_cache_settings_reach_the_engine_as_ask_options(qgis_app, tmp_path):
    from rs_vqa_plugin.engine.worker import make_ask_options
    from rs_vqa_plugin.gui.settings_dialog import SettingsDialog
    from rs_vqa_plugin.settings import PluginSettings

    dialog = SettingsDialog(PluginSettings(overviews="cache", overview_cache_dir=str(tmp_path)))
    assert dialog.overviews_combo.currentData() == "cache"
    dialog.overviews_combo.setCurrentIndex(dialog.overviews_combo.findData("beside"))
    chosen = dialog.result_settings()
    assert (chosen.overviews, chosen.overview_cache_dir) == ("beside", str(tmp_path))

    options = make_ask_options(PluginSettings(overviews="cache",
                                              overview_cache_dir=str(tmp_path)).ask_options())
    assert options.overviews_in_cache is True and options.overview_cache_dir == str(tmp_path)
    options = make_ask_options(PluginSettings().ask_options())
    assert options.overviews_in_cache is False and options.overview_cache_dir is None


# ---- with the real worker ------------------------------------------------------------------
pytest_plugins = ["tests.fixtures_models"]


def ask_and_wait(controller, question, timeout=120.0):
    from qgis.PyQt import sip

    from tests.test_gui import spin_until

    problem = controller.ask(question)
    assert problem is None, problem
    task = controller.current.task
    assert spin_until(lambda: controller.current is None, timeout), controller.dock.status_label.text()
    # QGIS announces a task once its thread has returned, a moment after the answer; the task
    # manager deletes it after that.
    assert spin_until(lambda: sip.isdeleted(task), 10)
    turn = controller.current_turns()[-1]
    assert turn.status == "answered", (turn.message, controller.dock.status_label.text())
    return turn


def test_an_answer_leaves_nothing_on_the_message_bar(controller, tiny_bundle, desktop_task_notices):
    pushed, _bars = desktop_task_notices
    controller.settings.model_dir = str(tiny_bundle)
    bar = controller.iface.messageBar()
    bar.clearWidgets()
    turn = ask_and_wait(controller, "Where are the ships?")
    assert getattr(turn, "note", "") == ""   # a tiny random bundle is no demonstration model; no overviews needed
    assert pushed and pushed[-1] == "RS-VQA: Where are the ships?"   # QGIS announced it...
    assert bar.items() == []                                          # ...and it was taken back


def test_overviews_being_built_are_named_and_where_they_went_is_said_once(controller, project,
                                                                          tiny_bundle, tmp_path):
    from qgis.core import QgsRasterLayer

    from tests.rasters import make_rgb_scene

    path = make_rgb_scene(tmp_path / "large.tif", size=(1400, 1000), seed=8)
    layer = QgsRasterLayer(str(path), "large")
    project.addMapLayer(layer)
    controller.show(layer)
    cache = tmp_path / "overview-cache"
    controller.settings.model_dir = str(tiny_bundle)
    controller.settings.overviews, controller.settings.overview_cache_dir = "cache", str(cache)
    shown = []

    def watch(_rid, stage, _fraction, _message):   # after the controller's own slot
        shown.append((stage, controller.dock.status_label.text()))
    controller.client.progress.connect(watch)
    try:
        first = ask_and_wait(controller, "How many ships?")
        building = [text for stage, text in shown if stage == "overviews"]
        assert building and building[0] == "Building overviews (once for this raster)…", shown
        assert "Thinking" in next(text for stage, text in shown if stage == "read")
        assert not Path(str(path) + ".ovr").exists()            # the setting: the cache folder
        built = list(cache.glob("*.vrt.ovr"))
        assert len(built) == 1 and str(built[0]) in first.note and "cache" in first.note
        assert str(built[0]) in controller.dock.conversation.toPlainText()
        shown.clear()
        second = ask_and_wait(controller, "And cars?")
        assert "Overviews" not in second.note                     # said once: nothing built now
        assert not [text for _stage, text in shown if "Building overviews" in text]
    finally:
        controller.client.progress.disconnect(watch)
    # Beside the raster (the default): said too, with the .ovr's path.
    other = QgsRasterLayer(str(make_rgb_scene(tmp_path / "other.tif", size=(1400, 1000), seed=9)),
                           "other")
    project.addMapLayer(other)
    controller.show(other)
    controller.settings.overviews, controller.settings.overview_cache_dir = "beside", ""
    turn = ask_and_wait(controller, "Any roads?")
    assert Path(str(tmp_path / "other.tif") + ".ovr").exists()
    assert "beside the raster" in turn.note and str(tmp_path / "other.tif.ovr") in turn.note


def test_the_bundled_demonstration_model_says_so_once(controller):
    from rs_vqa_plugin.gui.models import is_demo_model
    from rs_vqa_plugin.paths import default_model_dir

    model = default_model_dir()
    assert is_demo_model(model)
    controller.settings.model_dir = str(model)
    controller.demo_model_noted = False   # a new session
    first = ask_and_wait(controller, "How many ships are there?")
    assert "demonstration model" in first.note and "synthetic" in first.note
    assert "Settings (⚙) › Model folder" in first.note
    assert "demonstration model" in controller.dock.conversation.toPlainText()
    second = ask_and_wait(controller, "And cars?")
    assert second.note == ""


# ---- the engine's memory and tile-cache knobs (issue 18) -----------------------------------
def test_memory_and_tile_cache_settings_are_typed_checked_and_kept(qgis_app, tmp_path):
    import sys

    from qgis.core import QgsSettings
    from qgis.PyQt.QtCore import QSettings
    from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox

    from rs_vqa_plugin.engine.worker import make_ask_options
    from rs_vqa_plugin.gui.settings_dialog import SettingsDialog
    from rs_vqa_plugin.settings import PluginSettings, load_settings, save_settings

    dialog = SettingsDialog(PluginSettings(python=sys.executable, model_dir=""))
    dialog.show()
    assert dialog.memory_edit.text() == "" and dialog.tile_cache_edit.placeholderText() == "512 (default)"
    ok = dialog.buttons.button(QDialogButtonBox.Ok)
    # Not a number, or below 0: refused with the field's name, the dialog stays open.
    for edit, text, label in ((dialog.memory_edit, "lots", "Memory limit (MB, 0 = 80% of available)"),
                              (dialog.tile_cache_edit, "-5", "Tile cache (MB, 0 = off)")):
        dialog.memory_edit.setText("")
        dialog.tile_cache_edit.setText("")
        edit.setText(text)
        ok.click()
        assert dialog.isVisible() and dialog.result() != QDialog.Accepted
        warning = dialog.warning_label.text()
        assert dialog.warning_label.isVisible() and label in warning and f"'{text}'" in warning
        assert "diagnostics" not in warning and text in dialog.diagnostics_text()
    dialog.memory_edit.setText("2048")
    dialog.tile_cache_edit.setText("0")
    ok.click()
    assert not dialog.isVisible() and dialog.result() == QDialog.Accepted
    chosen = dialog.result_settings()
    assert (chosen.memory_limit_mb, chosen.tile_cache_mb) == (2048.0, 0.0)
    # The memory limit is an ask option the worker takes; the tile cache rides on the request.
    assert make_ask_options(chosen.ask_options()).memory_limit_mb == 2048.0
    assert chosen.request_fields() == {"tile_cache_mb": 0.0}

    store = QgsSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    save_settings(chosen, store)
    assert (load_settings(store).memory_limit_mb, load_settings(store).tile_cache_mb) == (2048.0, 0.0)
    save_settings(PluginSettings(), store)   # cleared: the engine's defaults, said in full
    again = load_settings(store)
    assert again.memory_limit_mb == 0.0 and "memory_limit_mb" not in again.ask_options()
    assert again.request_fields() == {"tile_cache_mb": 512.0}


def test_the_dock_sends_the_memory_limit_and_tile_cache_to_the_worker(controller, tiny_bundle):
    from qgis.PyQt import sip

    from tests.test_gui import spin_until

    controller.settings.model_dir = str(tiny_bundle)
    controller.settings.memory_limit_mb = 0.05   # far below what even the tiny model needs
    controller.settings.tile_cache_mb = 3.0
    sent = []
    original = controller.client.request
    controller.client.request = lambda cmd, **f: (sent.append(f), original(cmd, **f))[1]
    try:
        assert controller.ask("How many ships?") is None
        task = controller.current.task
        assert spin_until(lambda: controller.current is None, 120)
        assert spin_until(lambda: sip.isdeleted(task), 10)   # QGIS is done with the task too
    finally:
        del controller.client.request
    assert sent[0]["tile_cache_mb"] == 3.0 and sent[0]["options"]["memory_limit_mb"] == 0.05
    # The engine planned against it: the ask is refused before any work, saying the limit.
    turn = controller.current_turns()[-1]
    assert turn.status == "failed" and "memory limit" in turn.message, turn.message


# ---- one GeoPackage per project, a layer per question (issue 18) ---------------------------
def gpkg_layers(path):
    from osgeo import gdal

    ds = gdal.OpenEx(str(path), gdal.OF_VECTOR)
    return {ds.GetLayer(i).GetName(): ds.GetLayer(i).GetFeatureCount() for i in range(ds.GetLayerCount())}


def test_a_saved_projects_heatmaps_are_layers_of_its_one_geopackage(project, raster_layer, tmp_path):
    from rs_vqa_plugin.heat_layer import add_heat_layer

    project.setFileName(str(tmp_path / "survey.qgz"))
    layers = [add_heat_layer(project, raster_layer, token_answer(raster_layer, q, [0.2, 0.5, 0.3]))
              for q in ("Ships?", "Cars?", "Ships?")]
    folder = tmp_path / "rs_vqa_heatmaps"
    assert sorted(p.name for p in folder.glob("*.gpkg")) == ["survey.gpkg"]
    # The same question twice: two layers, neither overwritten (4 cells each: 3 tokens, 1 tile).
    assert gpkg_layers(folder / "survey.gpkg") == {"heat_ships": 4, "heat_cars": 4, "heat_ships_2": 4}
    assert [layer.source().split("|")[1] for layer in layers] == [
        "layername=heat_ships", "layername=heat_cars", "layername=heat_ships_2"]
    assert all(layer.isValid() and layer.featureCount() == 3 for layer in layers)   # tokens shown


def test_a_locked_geopackage_is_named_and_the_heatmap_goes_to_a_new_file(project, raster_layer,
                                                                          tmp_path):
    import sqlite3

    from rs_vqa_plugin.heat_layer import add_heat_layer

    project.setFileName(str(tmp_path / "survey.qgz"))
    add_heat_layer(project, raster_layer, token_answer(raster_layer, "Ships?", [0.5, 0.5]))
    gpkg = tmp_path / "rs_vqa_heatmaps" / "survey.gpkg"
    before = gpkg_layers(gpkg)
    other = sqlite3.connect(str(gpkg))   # another program holds the file (an edit session)
    other.execute("BEGIN EXCLUSIVE")
    try:
        notes = []
        heat = add_heat_layer(project, raster_layer, token_answer(raster_layer, "Cars?", [0.5, 0.5]),
                              notes=notes)
    finally:
        other.rollback()
        other.close()
    assert len(notes) == 1 and str(gpkg) in notes[0] and "could not take another layer" in notes[0]
    written = heat.source().split("|")[0]
    assert written != str(gpkg) and written in notes[0] and heat.isValid() and heat.featureCount() == 2
    assert gpkg_layers(gpkg) == before   # nothing half-written into the locked file


def test_heatmaps_made_before_the_first_save_move_beside_the_project(controller, project,
                                                                      raster_layer, tmp_path):
    from rs_vqa_plugin.gui.history import Turn
    from rs_vqa_plugin.heat_layer import add_heat_layer, unsaved_heatmap_folder

    assert not project.fileName()
    heat = add_heat_layer(project, raster_layer, token_answer(raster_layer, "Ships?", [0.2, 0.5, 0.3]))
    old_file, old_layer = heat.source().split("|")[0], heat.source().split("|")[1][len("layername="):]
    assert Path(old_file).parent == unsaved_heatmap_folder()
    controller.conversations.turns(raster_layer.id()).append(Turn(
        question="Ships?", text="two", status="answered", heat_layer_id=heat.id(), heat_path=old_file))
    subset, renderer = heat.subsetString(), heat.renderer().type()

    (tmp_path / "site").mkdir()
    assert project.write(str(tmp_path / "site" / "survey.qgz"))
    gpkg = tmp_path / "site" / "rs_vqa_heatmaps" / "survey.gpkg"
    assert heat.source().startswith(f"{gpkg}|layername=heat_ships") and heat.isValid()
    assert heat.featureCount() == 3 and heat.subsetString() == subset and heat.renderer().type() == renderer
    assert old_layer not in (gpkg_layers(old_file) if Path(old_file).exists() else {})   # moved, not copied
    assert controller.current_turns()[-1].heat_path == str(gpkg)

    # Reopened: the saved project points beside itself.
    layer_id = heat.id()
    assert project.read(str(tmp_path / "site" / "survey.qgz"))
    reopened = project.mapLayer(layer_id)
    assert reopened is not None and reopened.isValid() and reopened.source().startswith(str(gpkg))
    assert controller.current_turns()[-1].heat_path == str(gpkg)
