"""Runs inside the QGIS desktop (qgis --code): ask through the dock, wait, screenshot, quit."""

import json
import os
import subprocess
import time

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, plugins

JOB = json.loads(open(os.environ["RS_VQA_SCREENSHOT_JOB"]).read())
STATE = {"started": time.time(), "asked": False, "done_at": None}
LIMIT_S = 300


def finish(ok, **info):
    info.update(ok=ok, seconds=round(time.time() - STATE["started"], 1))
    if not ok:   # what the screen showed, to debug a failed run
        subprocess.run(["import", "-window", "root", JOB["result"] + ".failure.png"])
    with open(JOB["result"], "w") as handle:
        json.dump(info, handle)
    QgsProject.instance().clear()
    QgsApplication.instance().quit()


def controller():
    plugin = plugins.get("rs_vqa_plugin")
    return getattr(plugin, "controller", None) if plugin is not None else None


def ask():
    ctrl = controller()
    if ctrl is None:
        import qgis.utils

        return finish(False, error="the rs_vqa_plugin plugin or its dock controller is not loaded",
                      available=qgis.utils.available_plugins, active=qgis.utils.active_plugins,
                      plugin_paths=qgis.utils.plugin_paths,
                      controller_error=getattr(plugins.get("rs_vqa_plugin"), "controller_error",
                                               None))
    layer = QgsRasterLayer(JOB["raster"], "Demo scene")
    QgsProject.instance().addMapLayer(layer)
    iface.mapCanvas().setExtent(layer.extent())
    if JOB.get("model_kind") == "tiny":
        ctrl.dock.setWindowTitle(ctrl.dock.windowTitle() + " (tiny random model: answers are noise)")
    ctrl.show(layer)
    ctrl.dock.setMinimumWidth(520)
    ctrl.dock.question_edit.setText(JOB["question"])
    problem = ctrl.ask(JOB["question"])
    if problem:
        return finish(False, error=problem)
    STATE["asked"] = True
    QTimer.singleShot(500, poll)


def poll():
    ctrl = controller()
    if ctrl.current is not None:
        if time.time() - STATE["started"] > LIMIT_S:
            return finish(False, error="no answer in time", status=ctrl.dock.status_label.text())
        return QTimer.singleShot(500, poll)
    turns = ctrl.current_turns()
    turn = turns[-1] if turns else None
    if turn is None or turn.status != "answered":
        return finish(False, error="the ask did not answer",
                      status=ctrl.dock.status_label.text(), turn=getattr(turn, "__dict__", None))
    root = QgsProject.instance().layerTreeRoot()
    iface.layerTreeView().expandAll()   # show the heat layer's name and legend...
    for node in root.children():        # ...but not the raster's band legend
        if node.nodeType() != node.NodeGroup:
            node.setExpanded(False)
    iface.mapCanvas().refreshAllLayers()
    QTimer.singleShot(4000, lambda: shoot(turn))   # let the canvas render the heat layer


def shoot(turn):
    result = subprocess.run(["import", "-window", "root", JOB["output"]], capture_output=True,
                            text=True)
    heat = QgsProject.instance().mapLayer(turn.heat_layer_id)
    finish(result.returncode == 0, answer=turn.text, stats=turn.stats,
           heat_layer=heat.name() if heat else None,
           heat_features=heat.featureCount() if heat else 0,
           heat_crs=heat.crs().authid() if heat else None, import_stderr=result.stderr[-300:])


# Xvfb has no window manager to maximise the window: fill the screen by hand.
iface.mainWindow().setGeometry(QgsApplication.desktop().availableGeometry())
QTimer.singleShot(3000, ask)
