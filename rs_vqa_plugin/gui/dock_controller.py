"""Runs the chat dock: checks the inputs, sends questions to the worker, streams the answers back,
adds the heat layers (GUI thread) and keeps each layer's conversation in the project."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from qgis.core import (QgsApplication, QgsCoordinateTransform, QgsMapLayer, QgsProject,
                       QgsRasterLayer, QgsTask)
from qgis.PyQt.QtCore import QObject, Qt, QTimer
from qgis.PyQt.QtWidgets import QFileDialog

from ..settings import load_settings, save_settings
from .ask_task import AskTask, drop_completion_notice
from .dock import ChatDock
from ..ask_inputs import raster_source_problem
from ..heat_layer import GROUP_PREFIX, add_heat_layer, heat_layers, move_unsaved_heatmaps
from .history import Conversations, Turn, export_csv, export_markdown, waited_stats
from .models import check_bundle, find_bundles, is_demo_model
from .scope import ScopeError, resolve_scope
from .worker_client import WorkerClient

STOP_GRACE_MS = 3000   # a worker that has not stopped by then is ended (Stop must be prompt)


@dataclass
class RunningAsk:
    request_id: str
    layer_id: str
    turn: Turn
    task: AskTask
    stopping: bool = False
    sent: float = field(default_factory=time.monotonic)   # what the person waits is timed here
    stage_seen: Dict[str, List[float]] = field(default_factory=dict)   # stage -> [first, last]
    load_seconds: float = 0.0     # the worker's, when this ask loaded the model
    model: str = ""               # the bundle asked
    building_overviews: bool = False

    def saw(self, stage: str) -> None:
        now = time.monotonic()
        self.stage_seen.setdefault(stage, [now, now])[1] = now

    def stage_span(self, stage: str) -> float:
        first, last = self.stage_seen.get(stage, (0.0, 0.0))
        return last - first


class DockController(QObject):
    def __init__(self, iface, project: Optional[QgsProject] = None):
        super().__init__()
        self.iface = iface
        self.project = project or QgsProject.instance()
        self.settings = load_settings()
        parent = iface.mainWindow() if iface is not None else None
        self.dock = ChatDock(parent)
        if iface is not None:
            iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
            self.dock.hide()   # shown by the plugin's action or "Ask about this layer…"
        self.client = WorkerClient(self.settings.python, self)
        self.conversations = Conversations.load_from_project(self.project)
        self.current: Optional[RunningAsk] = None
        self.model_info: dict = {}
        self.stop_grace_ms = STOP_GRACE_MS
        self._connections = []
        self._task_notices: Dict[int, str] = {}   # task id -> description, until the task ends
        self.demo_model_noted = False   # said once per session, under the first answer
        self._connect(self.client.loaded, self._on_loaded)
        self._connect(self.client.progress, self._on_progress)
        self._connect(self.client.token, self._on_token)
        self._connect(self.client.answered, self._on_answered)
        self._connect(self.client.failed, self._on_failed)
        self._connect(self.client.cancelled, self._on_cancelled)
        self._connect(self.client.died, self._on_died)
        self._connect(self.client.runtime_unusable, self.dock.show_runtime_problem)
        self._connect(self.dock.askRequested, self.ask)
        self._connect(self.dock.stopRequested, self.stop)
        self._connect(self.dock.settingsRequested, self.open_settings)
        self._connect(self.dock.setupRuntimeRequested, lambda: self.open_settings(set_up=True))
        self._connect(self.dock.exportRequested, self._export_with_dialog)
        self._connect(self.dock.clearRequested, lambda: self.clear_conversation())
        self._connect(self.dock.turnAction, self._on_turn_action)
        self._connect(self.dock.layer_combo.layerChanged, lambda _layer: self.refresh())
        self._connect(self.dock.model_combo.activated, self._on_model_chosen)
        self._connect(QgsApplication.taskManager().statusChanged, self._on_task_status)
        self._connect(self.project.readProject, self._on_project_read)
        self._connect(self.project.cleared, self._on_project_cleared)
        # Emitted before the layers are written: heatmaps re-pointed here are saved pointing there.
        self._connect(self.project.writeProject, lambda _doc: self._move_unsaved_heatmaps())
        self._connect(self.project.layersAdded, lambda _layers: self._hide_heat_from_scope())
        # "Show/Hide where it looked" follows the layers panel too.
        self._connect(self.project.layerTreeRoot().visibilityChanged, lambda _node: self.refresh())
        self.fill_models()
        self.refresh()

    def _connect(self, signal, slot) -> None:
        signal.connect(slot)
        self._connections.append((signal, slot))

    # ---- plugin hooks --------------------------------------------------------------------
    def show(self, layer: Optional[QgsMapLayer] = None) -> None:
        self.dock.show()
        self.dock.raise_()
        self.check_runtime()
        if layer is not None:
            if isinstance(layer, QgsRasterLayer):
                self.dock.layer_combo.setLayer(layer)
                self.dock.show_status("")
            else:
                self.dock.show_status(self.tr("{layer} is not a raster layer: RS-VQA answers "
                                              "questions about raster layers only. Choose a raster "
                                              "in the Raster list.").format(layer=layer.name()),
                                      error=True)
        self.dock.question_edit.setFocus()

    def unload(self) -> None:
        if self.current is not None:
            self.current.task.finish("stopped")
        self.client.shutdown()
        for signal, slot in self._connections:
            try:
                signal.disconnect(slot)
            except (TypeError, RuntimeError):
                pass   # already gone with its object
        self._connections.clear()
        if self.iface is not None:
            self.iface.removeDockWidget(self.dock)
        self.dock.close()
        self.dock.deleteLater()

    # ---- asking --------------------------------------------------------------------------
    def layer_problem(self, layer) -> Optional[str]:
        # The check Processing makes too: local files and GDAL virtual paths alike.
        return raster_source_problem(layer)

    def ask(self, question: str) -> Optional[str]:
        """Start an ask; returns the problem shown in the dock, or None when it was sent."""
        if self.current is not None:
            return None
        if not question.strip():
            hint = self.tr("Type a question first.")
            self.dock.show_status(hint)   # replaces an earlier message, which no longer applies
            return hint
        layer = self.dock.layer_combo.currentLayer()
        problem = (self.layer_problem(layer) or check_bundle(self.settings.model_dir))
        scope = None
        if problem is None:
            self.check_runtime()
            problem = self.client.runtime_problem()
        if problem is None:
            try:
                canvas = self.iface.mapCanvas() if self.iface is not None else None
                scope = resolve_scope(self.dock.scope(), layer, canvas,
                                      self.dock.polygon_combo.currentLayer())
            except ScopeError as exc:
                problem = str(exc)
        if problem:
            self.dock.show_status(problem, error=True)
            return problem
        options = self.settings.ask_options()
        options["history"] = self.conversations.history(layer.id())
        if scope is not None:
            options["scope"] = list(scope) if isinstance(scope, tuple) else scope
        bands = _rgb_bands(layer)
        if bands:
            options["bands"] = bands
        sent = time.monotonic()
        request_id, problem = self.client.ask(layer.source(), question, options,
                                              model=self.settings.model_dir,
                                              device=self.settings.device,
                                              **self.settings.request_fields())
        if problem:
            self.dock.show_status(problem, error=True)
            return problem
        first = self.model_info.get("model") != self.settings.model_dir
        turn = Turn(question=question, request_id=request_id,
                    message=self.tr("Loading the model (first question, this takes a moment)…")
                    if first else self.tr("Thinking…"))
        self.conversations.turns(layer.id()).append(turn)
        task = AskTask(self.tr("RS-VQA: {question}").format(question=question[:60]), request_id)
        # The task manager's cancel button takes the same path as the dock's Stop.
        task.stopRequested.connect(lambda _request_id: self.stop())
        self.current = RunningAsk(request_id, layer.id(), turn, task, sent=sent,
                                  model=self.settings.model_dir)
        self._task_notices[QgsApplication.taskManager().addTask(task)] = task.description()
        self.dock.question_edit.clear()
        self.dock.set_busy(True)
        self.dock.show_status(turn.message)
        self.refresh()
        return None

    def stop(self) -> None:
        running = self.current
        if running is None or running.stopping:
            return
        running.stopping = True
        self.dock.show_status(self.tr("Stopping…"))
        self.client.cancel(running.request_id)
        running.task.cancel()   # shown as cancelled (not failed) in QGIS's task list
        QTimer.singleShot(self.stop_grace_ms,
                          lambda rid=running.request_id: self._stop_overdue(rid))

    def _stop_overdue(self, request_id: str) -> None:
        # The worker could not stop in time (a model load cannot be interrupted): end it. That is
        # the Stop the person asked for, not a crash; the next question starts a fresh worker.
        if self.current is not None and self.current.request_id == request_id:
            self.model_info = {}
            self.client.end_for_stop()

    # ---- worker events (GUI thread) ------------------------------------------------------
    def _mine(self, request_id: str) -> Optional[RunningAsk]:
        running = self.current
        return running if running is not None and running.request_id == request_id else None

    def _on_loaded(self, request_id: str, info: dict) -> None:
        self.model_info = info
        providers = ", ".join(f"{k}: {v}" for k, v in (info.get("providers") or {}).items())
        self.dock.show_status(self.tr("Model loaded in {s} s on {device}{providers}. Thinking…").format(
            s=info.get("seconds", "?"), device=info.get("device", "?"),
            providers=f" ({providers})" if providers else ""))
        running = self._mine(request_id)
        if running is not None:
            if "load" in running.stage_seen:   # loaded for this ask (else it was already warm)
                running.load_seconds = float(info.get("seconds") or 0.0)
            running.turn.message = self.tr("Thinking…")
            self.refresh()

    def _on_progress(self, request_id: str, stage: str, fraction: float, message: str) -> None:
        running = self._mine(request_id)
        if running is None:
            return
        running.saw(stage)
        self.dock.show_progress(stage_label(stage), fraction)
        running.task.relay_progress(stage, fraction)
        # Building overviews can take a while on a large raster: say so, not "Thinking…".
        building = stage == "overviews" and fraction < 1.0
        if building != running.building_overviews and (building or stage != "overviews"):
            running.building_overviews = building
            running.turn.message = (self.tr("Building overviews (once for this raster)…")
                                    if building else self.tr("Thinking…"))
            self.dock.show_status(running.turn.message)
            self.refresh()

    def _on_token(self, request_id: str, text: str) -> None:
        running = self._mine(request_id)
        if running is not None:
            running.turn.text += text
            self.refresh()

    def _on_answered(self, request_id: str, answer: dict) -> None:
        running = self._mine(request_id)
        if running is None:
            return
        turn = running.turn
        turn.text = str(answer.get("text", turn.text)).strip()
        turn.stats = waited_stats(answer.get("trace") or {}, time.monotonic() - running.sent,
                                  load=running.load_seconds,
                                  overviews=running.stage_span("overviews"))
        turn.status = "answered"
        turn.message = ""
        turn.note = "\n".join(n for n in (self._overviews_note(answer), self._demo_note(running)) if n)
        layer = self.project.mapLayer(running.layer_id)
        status, error = self.tr("Answered."), False
        if layer is not None and answer.get("heat_cells"):
            notes = []
            try:
                heat = add_heat_layer(self.project, layer, answer, notes=notes)
                turn.heat_layer_id, turn.heat_path = heat.id(), heat.source().split("|")[0]
                turn.note = "\n".join(n for n in (turn.note, *notes) if n)
            except OSError as exc:
                status, error = self.tr("Answered, but the heatmap could not be added: {e}").format(
                    e=exc), True
        self._finish(running, "answered", status, error)

    def _overviews_note(self, answer: dict) -> str:
        """Where overviews built by this ask went, said once (they are built once per raster)."""
        overviews = (answer.get("trace") or {}).get("overviews") or {}
        if not overviews.get("built") or not overviews.get("ovr_path"):
            return ""
        where = (self.tr("beside the raster") if overviews.get("location") == "external"
                 else self.tr("in the overview cache folder"))
        return self.tr("Overviews of this raster were built once, {where}: {path}. Settings (⚙) › "
                       "Overviews chooses beside the raster or a cache folder.").format(
            where=where, path=overviews["ovr_path"])

    def _demo_note(self, running: RunningAsk) -> str:
        if self.demo_model_noted or not is_demo_model(running.model):
            return ""
        self.demo_model_noted = True
        return self.tr("This answer comes from the bundled demonstration model, trained only on "
                       "synthetic scenes: do not rely on what it says about real imagery. To use "
                       "a real model, choose its bundle folder in Settings (⚙) › Model folder (or "
                       "add the folder holding your bundles to Model search folders) and pick it "
                       "in the Model list.")

    def _on_failed(self, request_id: str, message: str) -> None:
        running = self._mine(request_id)
        if running is None:
            return
        if running.stopping:
            self._on_cancelled(request_id)
            return
        running.turn.status, running.turn.message = "failed", message
        running.turn.text = ""   # a cut-off stream is not an answer
        self._finish(running, "failed", message, True)

    def _on_cancelled(self, request_id: str) -> None:
        running = self._mine(request_id)
        if running is None:
            return
        running.turn.status = "stopped"
        running.turn.text = ""   # a cut-off stream is not an answer
        running.turn.message = self.tr("Stopped; nothing was added to the map.")
        self._finish(running, "stopped", running.turn.message, False)

    def _on_died(self, message: str) -> None:
        self.model_info = {}
        if self.current is None:
            self.dock.show_status(message, error=True)

    def _finish(self, running: RunningAsk, outcome: str, status: str, error: bool) -> None:
        running.task.finish(outcome)
        self.current = None
        self.dock.set_busy(False)
        self.dock.show_status(status, error)
        self.conversations.save_to_project(self.project)
        self.refresh()

    def _on_task_status(self, task_id: int, status: int) -> None:
        if status in (QgsTask.Complete, QgsTask.Terminated):
            description = self._task_notices.pop(task_id, None)
            if description and self.iface is not None:
                drop_completion_notice(self.iface.messageBar(), description)

    def _hide_heat_from_scope(self) -> None:
        # Our heat cells are polygons too, but never a scope a person means to choose.
        self.dock.polygon_combo.setExceptedLayerList(heat_layers(self.project))

    # ---- the conversation ----------------------------------------------------------------
    def current_turns(self):
        layer = self.dock.layer_combo.currentLayer()
        return self.conversations.turns(layer.id()) if layer is not None else []

    def refresh(self) -> None:
        root = self.project.layerTreeRoot()
        visible = set()
        for turn in self.current_turns():
            node = root.findLayer(turn.heat_layer_id) if turn.heat_layer_id else None
            if node is not None and node.isVisible():
                visible.add(turn.heat_layer_id)
        self.dock.render(self.current_turns(), visible)

    def _on_turn_action(self, action: str, index: int) -> None:
        turns = self.current_turns()
        if not 0 <= index < len(turns):
            return
        layer = self.project.mapLayer(turns[index].heat_layer_id)
        if layer is None:
            self.dock.show_status(self.tr("The heat layer of this answer was removed from the "
                                          "project."), error=True)
            return
        node = self.project.layerTreeRoot().findLayer(layer.id())
        if action == "toggle" and node is not None:
            show = not node.isVisible()
            node.setItemVisibilityChecked(show)
            if show:   # a hidden group would keep it hidden
                node.setItemVisibilityCheckedParentRecursive(True)
        elif action == "zoom" and self.iface is not None:
            canvas = self.iface.mapCanvas()
            transform = QgsCoordinateTransform(layer.crs(), canvas.mapSettings().destinationCrs(),
                                               self.project)
            extent = transform.transformBoundingBox(layer.extent())
            extent.scale(1.2)
            canvas.setExtent(extent)
            canvas.refresh()
        self.refresh()

    def clear_conversation(self, remove_heat: Optional[bool] = None) -> bool:
        """Forget the current raster's conversation. Its heat layers go too when remove_heat is
        True; None asks the person (Yes / No / Cancel). Returns whether it was cleared. The
        heatmap files stay on disk either way."""
        layer = self.dock.layer_combo.currentLayer()
        if layer is None or self.current is not None:
            return False
        heat_ids = [t.heat_layer_id for t in self.conversations.turns(layer.id())
                    if t.heat_layer_id and self.project.mapLayer(t.heat_layer_id) is not None]
        if heat_ids and remove_heat is None:
            remove_heat = self._ask_remove_heat(len(heat_ids))
            if remove_heat is None:
                return False
        self.conversations.clear(layer.id())
        self.conversations.save_to_project(self.project)
        if heat_ids and remove_heat:
            self._remove_heat_layers(layer, heat_ids)
        self.refresh()
        return True

    def _ask_remove_heat(self, count: int) -> Optional[bool]:
        """True: remove them, False: keep them, None: do not clear after all."""
        from qgis.PyQt.QtWidgets import QMessageBox

        answer = QMessageBox.question(
            self.dock, self.tr("Clear conversation"),
            self.tr("Also remove the {n} heat layer(s) of this conversation from the project? "
                    "Their GeoPackage files stay on disk.").format(n=count),
            QMessageBox.Yes | QMessageBox.No | QMessageBox.Cancel, QMessageBox.No)
        return {QMessageBox.Yes: True, QMessageBox.No: False}.get(answer)

    def _remove_heat_layers(self, raster_layer, heat_ids: List[str]) -> None:
        self.project.removeMapLayers(heat_ids)
        group = self.project.layerTreeRoot().findGroup(GROUP_PREFIX + raster_layer.name())
        if group is not None and not group.children():
            group.parent().removeChildNode(group)
        self.dock.show_status(self.tr("{n} heat layer(s) removed from the project; their files "
                                      "stay on disk.").format(n=len(heat_ids)))

    def export_rows(self):
        rows = []
        for layer_id, turns in self.conversations.by_layer.items():
            layer = self.project.mapLayer(layer_id)
            name = layer.name() if layer is not None else layer_id
            rows += [(name, t) for t in turns if t.finished]
        return rows

    def export_history(self, fmt: str, path: str) -> Path:
        text = export_csv(self.export_rows()) if fmt == "csv" else export_markdown(self.export_rows())
        target = Path(path)
        target.write_text(text, encoding="utf-8")
        return target

    def _export_with_dialog(self, fmt: str) -> None:
        suffix = "CSV (*.csv)" if fmt == "csv" else "Markdown (*.md)"
        path, _ = QFileDialog.getSaveFileName(self.dock, self.tr("Export the conversation"), "",
                                              suffix)
        if path:
            self.dock.show_status(self.tr("Exported to {path}").format(
                path=self.export_history(fmt, path)))

    def _move_unsaved_heatmaps(self) -> None:
        """Heatmaps made before the project's first save go beside it as it is saved."""
        moved = move_unsaved_heatmaps(self.project)
        if not moved:
            return
        for turns in self.conversations.by_layer.values():
            for turn in turns:
                if turn.heat_layer_id in moved:
                    turn.heat_path = str(moved[turn.heat_layer_id])
        self.conversations.save_to_project(self.project)

    def _on_project_read(self, *_args) -> None:
        self.conversations = Conversations.load_from_project(self.project)
        if self.dock.layer_combo.currentLayer() is None:
            # Reopened project: show the conversation of a raster that has one.
            for layer_id in self.conversations.by_layer:
                layer = self.project.mapLayer(layer_id)
                if isinstance(layer, QgsRasterLayer):
                    self.dock.layer_combo.setLayer(layer)
                    break
        self.refresh()

    def _on_project_cleared(self) -> None:
        if self.current is None:
            self.conversations = Conversations()
            self.refresh()

    # ---- models and settings -------------------------------------------------------------
    def fill_models(self) -> None:
        combo = self.dock.model_combo
        combo.clear()
        for info in find_bundles(self.settings.model_folders, self.settings.model_dir):
            combo.addItem(info.label, str(info.path))
            combo.setItemData(combo.count() - 1, info.problem or str(info.path), Qt.ToolTipRole)
        if combo.count() == 0:
            combo.addItem(self.tr("No model found: open the settings"), "")
        index = combo.findData(self.settings.model_dir)
        combo.setCurrentIndex(max(index, 0))

    def _on_model_chosen(self, index: int) -> None:
        path = self.dock.model_combo.itemData(index) or ""
        if path != self.settings.model_dir:
            self.settings.model_dir = path
            save_settings(self.settings)
            problem = check_bundle(path)
            self.dock.show_status(problem or "", error=bool(problem))

    def check_runtime(self) -> None:
        """Say at once, not on the first question, when no runtime Python is usable (a plugin
        installed from its zip has none until "Set up runtime" makes one)."""
        self.client.python = self.settings.python
        self.dock.show_runtime_problem(self.client.runtime_problem() or "")

    def show_settings(self) -> None:
        self.open_settings()

    def open_settings(self, set_up: bool = False) -> None:
        """The settings dialog; with set_up, its "Set up runtime" starts at once (the dock's
        button), its progress and log in the dialog."""
        from .settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self.dock)
        if set_up:
            dialog.setup_runtime()
        if dialog.exec_():
            self.apply_settings(dialog.result_settings())

    def apply_settings(self, settings) -> None:
        restart = (settings.python, settings.device) != (self.settings.python, self.settings.device)
        self.settings = settings
        save_settings(settings)
        self.client.python = settings.python
        if restart and self.current is None:
            self.client.shutdown()   # the next question starts the new runtime
            self.model_info = {}
        self.fill_models()
        self.check_runtime()


def stage_label(stage: str) -> str:
    """The engine's name of a stage (STAGE_LABELS), translated; an unknown stage as it came."""
    from qgis.PyQt.QtCore import QCoreApplication

    from ..engine import STAGE_LABELS

    label = STAGE_LABELS.get(stage) or stage or "Working"
    return QCoreApplication.translate("DockController", label)


def _rgb_bands(layer: QgsRasterLayer):
    """The bands the layer shows as red, green, blue, so the model sees what the analyst sees."""
    renderer = layer.renderer()
    if renderer is not None and renderer.type() == "multibandcolor":
        bands = [renderer.redBand(), renderer.greenBand(), renderer.blueBand()]
        if all(b > 0 for b in bands) and bands != [1, 2, 3]:
            return bands
    return None
