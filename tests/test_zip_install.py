"""The plugin as a user installs it: the zip made by `./build.sh package`, unzipped into a plugins
folder, with no source checkout beside it and no runtime set up yet (a fresh QGIS profile).

Runs in a fresh interpreter that imports the plugin from the unzipped folder, never from the
checkout, and keeps the QGIS profile in a temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qgis, pytest.mark.subprocess]
REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"   # Debian's: QGIS and GDAL, no torch/onnx (a wrong runtime)


@pytest.fixture(scope="module")
def zip_install(tmp_path_factory):
    root = tmp_path_factory.mktemp("zip-install")
    built = subprocess.run(["bash", str(REPO / "build.sh"), "package", str(root / "dist")],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stdout + built.stderr
    (archive,) = (root / "dist").glob("rs_vqa_plugin-*.zip")
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(root / "plugins")
    return root


FIRST_OPEN = r'''
import json, os, sys
from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication
plugins, repo, raster, out = sys.argv[1:5]
sys.path.insert(0, plugins)
sys.path.append(repo)   # only for the test helpers; the plugin comes from the zip
from tests.qgis_support import make_recording_iface, start_qgis
import time
start_qgis()

def spin_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        QApplication.processEvents()
        time.sleep(0.01)
    return predicate()

import rs_vqa_plugin
from rs_vqa_plugin.settings import setup_venv_dir
report = {"package": rs_vqa_plugin.__file__, "venv": str(setup_venv_dir())}
assert report["venv"].startswith(os.environ["QGIS_CUSTOM_CONFIG_PATH"]), report
from rs_vqa_plugin.gui.dock_controller import DockController
from rs_vqa_plugin.processing.runtime import runtime_help

iface = make_recording_iface()
layer = QgsRasterLayer(raster, "scene")
QgsProject.instance().addMapLayer(layer)
controller = DockController(iface)
dock = controller.dock
report["before_open"] = dock.runtime_box.isVisibleTo(dock)
controller.show(layer)                          # the first open of the dock
report["banner"] = dock.runtime_label.text() if dock.runtime_box.isVisibleTo(dock) else ""
report["button"] = dock.setup_runtime_button.text()
report["ask"] = controller.ask("How many ships?")
report["processing"] = runtime_help(["torch"])

seen = {}
def look_at_the_dialog():
    dialog = QApplication.activeModalWidget()
    seen["dialog"] = type(dialog).__name__
    if spin_until(lambda: "$ " in dialog.log.toPlainText(), 20):
        seen["log"] = dialog.log.toPlainText()
    seen["busy"] = not dialog.setup_button.isEnabled()
    dialog.reject()                              # stops the set-up it started
QTimer.singleShot(200, look_at_the_dialog)
dock.setup_runtime_button.click()                # opens the settings with the set-up running
report["setup"] = seen

# A runtime Python without the ML stack: the worker says so, in the same words, in the banner.
controller.settings.python = sys.argv[5]
controller.check_runtime()
report["banner_with_python"] = dock.runtime_box.isVisibleTo(dock)
controller.ask("How many ships?")
spin_until(lambda: controller.current is None, 120)
report["wrong_runtime"] = controller.current_turns()[-1].message
report["banner_after_ask"] = dock.runtime_label.text() if dock.runtime_box.isVisibleTo(dock) else ""
controller.unload()
json.dump(report, open(out, "w"))
'''


@pytest.mark.skipif(not Path(SYSTEM_PYTHON).is_file(), reason="no system Python to act as a runtime")
def test_first_open_without_a_runtime_says_so_with_set_up_runtime_at_hand(zip_install, tmp_path):
    from tests.rasters import make_rgb_scene

    plugins = zip_install / "plugins"
    assert not (plugins / "build.sh").exists() and (plugins / "rs_vqa_plugin" / "models").is_dir()
    raster = make_rgb_scene(tmp_path / "scene.tif", size=96)
    script, out = tmp_path / "first_open.py", tmp_path / "report.json"
    script.write_text(FIRST_OPEN)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "RS_VQA_RUNTIME_PYTHON")}
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile"))
    done = subprocess.run([sys.executable, str(script), str(plugins), str(REPO), str(raster),
                           str(out), SYSTEM_PYTHON], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path), timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["package"].startswith(str(plugins))

    # On first open, before any question: the problem and the action that fixes it.
    assert report["before_open"] is False
    assert "No runtime Python is set up" in report["banner"] and "Set up runtime" in report["banner"]
    assert report["button"] == "Set up runtime…"
    assert report["ask"] == report["banner"]
    # The button starts "Set up runtime" in the settings dialog: a venv in the QGIS profile.
    setup = report["setup"]
    assert setup["dialog"] == "SettingsDialog" and setup["busy"]
    assert "-m venv --system-site-packages" in setup["log"]
    assert str(Path(report["venv"]).name) in setup["log"]
    # A wrong runtime (no torch, no onnx): named, with what the user has, in the banner too.
    assert report["banner_with_python"] is False
    assert "is not installed in this Python" in report["wrong_runtime"]
    assert report["banner_after_ask"] == report["wrong_runtime"]
    # No message points at the checkout's scripts, which a zip user does not have.
    for key in ("banner", "wrong_runtime", "processing"):
        assert "build.sh" not in report[key] and "PYTHONPATH" not in report[key], report[key]
        assert "Set up runtime" in report[key], report[key]
    assert "Raster › RS-VQA › Settings…" in report["wrong_runtime"]


def test_settings_and_processing_find_the_runtime_that_set_up_runtime_made(zip_install, tmp_path):
    # "Set up runtime" in a zip install makes a venv in the QGIS profile; without a saved Runtime
    # Python (Cancel after the set-up), the dock and Processing still find it.
    script = tmp_path / "find.py"
    script.write_text(
        "import sys\n"
        "sys.path.insert(0, sys.argv[1]); sys.path.append(sys.argv[2])\n"
        "from tests.qgis_support import start_qgis\n"
        "start_qgis()\n"
        "from rs_vqa_plugin.settings import load_settings, setup_venv_dir\n"
        "from rs_vqa_plugin.processing.runtime import worker_python\n"
        "made = setup_venv_dir() / 'bin' / 'python'\n"
        "made.parent.mkdir(parents=True)\n"
        f"made.symlink_to({shutil.which('python3') or sys.executable!r})\n"
        "print(load_settings().python == str(made) == worker_python())\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "RS_VQA_RUNTIME_PYTHON")}
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile"))
    done = subprocess.run([sys.executable, str(script), str(zip_install / "plugins"), str(REPO)],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "True"
