"""Processing inside the QGIS desktop (qgis.utils.iface set, as QGIS sets it): the model always
runs in the runtime's worker process, even when this Python could import torch, so that a model
crash cannot take QGIS down; a worker that died is replaced on the next run. In a fresh
interpreter, so that what it imports is its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rasters import make_rgb_scene

pytest_plugins = ["tests.fixtures_models"]
pytestmark = [pytest.mark.qgis, pytest.mark.subprocess]
REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import json, sys
import qgis.utils
from qgis.core import QgsApplication, QgsProcessingFeedback
from tests.qgis_support import init_processing, make_recording_iface
init_processing()
import processing
from rs_vqa_plugin.processing import engine_cache
from rs_vqa_plugin.processing.provider import RsVqaProvider
provider = RsVqaProvider()   # kept: the registry does not own a Python provider
assert QgsApplication.processingRegistry().addProvider(provider)
qgis.utils.iface = make_recording_iface()       # what the desktop application sets
raster, bundle, out = sys.argv[1:4]
def ask(name):
    return processing.run("rs_vqa:ask", {"INPUT": raster, "QUESTIONS": "How many ships?",
                          "MODEL": bundle, "MODE": "dip", "MAX_TOKENS": 2,
                          "OUTPUT": out + "/" + name + ".csv", "HEATMAP": out + "/" + name + ".gpkg"},
                          feedback=QgsProcessingFeedback())["ANSWERED"]
report = {"first": ask("a"), "engine": type(engine_cache._engine).__name__}
first_pid = engine_cache._engine._process.pid
engine_cache._engine._process.kill()             # as the OOM killer would
engine_cache._engine._process.wait()
report["second"] = ask("b")
report["fresh_worker"] = engine_cache._engine._process.pid != first_pid
report["heavy"] = [n for n in ("torch", "transformers", "onnxruntime") if n in sys.modules]
engine_cache.release()
print(json.dumps(report))
"""


def _run(tmp_path, bundle, runtime_python):
    raster = make_rgb_scene(tmp_path / "scene.tif", size=(300, 200), epsg=32633)
    script = tmp_path / "desktop_probe.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO), RS_VQA_RUNTIME_PYTHON=runtime_python,
               QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile"))
    return subprocess.run([sys.executable, str(script), str(raster), str(bundle), str(tmp_path)],
                          capture_output=True, text=True, cwd=str(REPO), env=env, timeout=300)


def test_in_the_desktop_processing_runs_the_model_in_the_worker(tiny_bundle, tmp_path):
    import importlib.util

    assert importlib.util.find_spec("torch") is not None   # this Python could run it in-process
    done = _run(tmp_path, tiny_bundle, sys.executable)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"first": 1, "engine": "WorkerEngine", "second": 1, "fresh_worker": True,
                      "heavy": []}


def test_in_the_desktop_without_a_runtime_python_processing_says_how_to_set_one_up(tiny_bundle,
                                                                                     tmp_path):
    done = _run(tmp_path, tiny_bundle, "")
    assert done.returncode != 0
    assert "separate runtime Python inside the QGIS desktop" in done.stderr, done.stderr[-3000:]
    assert "Set up runtime" in done.stderr
    assert not (tmp_path / "a.csv").exists()
