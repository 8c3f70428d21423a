"""rs_vqa:ask through the qgis_process command line, with the plugin found on QGIS_PLUGINPATH and enabled.

`qgis_process.bin` is called directly: Debian's `qgis_process` wrapper adds --noversioncheck, which
the 3.22 executable rejects. The ML stack comes from the venv through PYTHONPATH, as the README says.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from tests.qgis_support import qgis_app, stage_plugin  # noqa: F401 (fixture)
from tests.rasters import make_rgb_scene

pytest_plugins = ["tests.fixtures_models"]
QGIS_PROCESS = shutil.which("qgis_process.bin")
pytestmark = [pytest.mark.skipif(QGIS_PROCESS is None, reason="qgis_process.bin is not installed"),
              pytest.mark.qgis, pytest.mark.subprocess]


@pytest.fixture(scope="module")
def qgis_process_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("qgis-process")
    plugins = root / "plugins"
    stage_plugin(plugins)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_PLUGINPATH=str(plugins),
               # A throw-away profile: enabling the plugin must not touch the user's own.
               QGIS_CUSTOM_CONFIG_PATH=str(root / "profile"),
               PYTHONPATH=sysconfig.get_paths()["purelib"], HF_HUB_OFFLINE="1")
    enabled = qgis_process(env, "plugins", "enable", "rs_vqa_plugin")
    # It answers with the plugin list, enabled ones starred.
    assert enabled.returncode == 0 and "* rs_vqa_plugin" in enabled.stdout, enabled.stdout + enabled.stderr
    return env


def qgis_process(env, *args, timeout=240):
    return subprocess.run([QGIS_PROCESS, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=env["QGIS_PLUGINPATH"])


def test_qgis_process_ask(qgis_process_env, tiny_bundle, tmp_path, qgis_app):  # noqa: F811
    from qgis.core import QgsVectorLayer

    raster = make_rgb_scene(tmp_path / "scene.tif", size=(500, 400), epsg=32633)
    done = qgis_process(qgis_process_env, "--json", "run", "rs_vqa:ask", "--",
                        f"INPUT={raster}", "QUESTIONS=How many ships are docked?",
                        f"MODEL={tiny_bundle}", "MODE=dip", "MAX_TOKENS=2",
                        f"OUTPUT={tmp_path / 'answers.csv'}",
                        f"HEATMAP={tmp_path / 'heat.gpkg'}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["results"]["ANSWERED"] == 1
    table = QgsVectorLayer(report["results"]["OUTPUT"], "answers", "ogr")
    rows = list(table.getFeatures())
    assert [r["question"] for r in rows] == ["How many ships are docked?"]
    assert int(rows[0]["tiles_read"]) > 0
    heat = QgsVectorLayer(report["results"]["HEATMAP"], "heat", "ogr")
    assert heat.crs().authid() == "EPSG:32633"
    assert heat.featureCount() > 0


def test_qgis_process_ask_without_model_uses_the_bundled_default(qgis_process_env, tmp_path):
    from rs_vqa_plugin.paths import default_model_dir

    raster = make_rgb_scene(tmp_path / "scene.tif", size=(300, 200), epsg=32633)
    done = qgis_process(qgis_process_env, "run", "rs_vqa:ask", "--", f"INPUT={raster}",
                        "QUESTIONS=How many ships?", "MAX_TOKENS=2",
                        f"OUTPUT={tmp_path / 'answers.csv'}")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert f"Loading the model from {default_model_dir()} " in output, output[-3000:]
    assert "ANSWERED:\t1" in output or "ANSWERED: 1" in output, output[-3000:]
    assert (tmp_path / "answers.csv").read_text().count("\n") >= 2


def test_qgis_process_without_the_ml_runtime_says_how_to_set_it_up(qgis_process_env, tiny_bundle,
                                                                     tmp_path):
    # What the QGIS desktop's own Python looks like: Debian's packages, no torch / onnxruntime,
    # and no runtime Python for a worker either.
    env = {k: v for k, v in qgis_process_env.items() if k != "PYTHONPATH"}
    env["RS_VQA_RUNTIME_PYTHON"] = ""
    raster = make_rgb_scene(tmp_path / "scene.tif", size=64)
    done = qgis_process(env, "run", "rs_vqa:ask", "--", f"INPUT={raster}",
                        "QUESTIONS=How many ships?", f"MODEL={tiny_bundle}",
                        f"OUTPUT={tmp_path / 'a.csv'}")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "cannot import onnxruntime, torch, transformers" in output, output[-3000:]
    assert "./build.sh setup" in output and "PYTHONPATH=" in output
    assert not (tmp_path / "a.csv").exists()


def test_qgis_process_without_the_ml_stack_runs_the_model_in_the_runtime_worker(
        qgis_process_env, tiny_bundle, tmp_path):
    # QGIS's own Python has no torch; the runtime made by ./build.sh setup answers in a worker.
    env = {k: v for k, v in qgis_process_env.items() if k != "PYTHONPATH"}
    env["RS_VQA_RUNTIME_PYTHON"] = sys.executable
    raster = make_rgb_scene(tmp_path / "scene.tif", size=(300, 200), epsg=32633)
    done = qgis_process(env, "--json", "run", "rs_vqa:ask", "--", f"INPUT={raster}",
                        "QUESTIONS=How many ships?\nAnd how many cars?", f"MODEL={tiny_bundle}",
                        "MODE=dip", "MAX_TOKENS=2", f"OUTPUT={tmp_path / 'a.csv'}",
                        f"HEATMAP={tmp_path / 'heat.gpkg'}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads(done.stdout)["results"]["ANSWERED"] == 2
    assert (tmp_path / "a.csv").read_text().count("\n") >= 3      # header + two answers


def _rows(path):
    """Rows readable by another process right now (None while the file is not a valid layer)."""
    from osgeo import gdal

    try:
        ds = gdal.OpenEx(str(path), gdal.OF_VECTOR | gdal.OF_READONLY)
        return ds.GetLayer(0).GetFeatureCount()
    except (RuntimeError, AttributeError):
        return None


def test_a_run_killed_mid_batch_keeps_every_answer_it_gave(qgis_process_env, tiny_bundle, tmp_path):
    import signal
    import time

    raster = make_rgb_scene(tmp_path / "scene.tif", size=(400, 300), epsg=32633)
    questions = tmp_path / "questions.txt"
    questions.write_text("".join(f"How many ships are at quay {i}?\n" for i in range(120)))
    answers, heat = tmp_path / "answers.gpkg", tmp_path / "heat.gpkg"
    process = subprocess.Popen(
        [QGIS_PROCESS, "run", "rs_vqa:ask", "--", f"INPUT={raster}", f"QUESTIONS={questions}",
         f"MODEL={tiny_bundle}", "MODE=dip", "MAX_TOKENS=1", f"OUTPUT={answers}", f"HEATMAP={heat}"],
        env=qgis_process_env, cwd=qgis_process_env["QGIS_PLUGINPATH"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while (_rows(answers) or 0) < 3 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGTERM)     # what a batch scheduler or a closed terminal does
        process.wait(timeout=60)
    kept = _rows(answers)
    assert kept is not None and 3 <= kept < 120, kept
    assert (_rows(heat) or 0) > 0


def test_a_latin1_question_file_is_an_error_not_an_abort(qgis_process_env, tiny_bundle, tmp_path):
    raster = make_rgb_scene(tmp_path / "scene.tif", size=64)
    questions = tmp_path / "questions.csv"
    questions.write_bytes("question\nQuelle est la densité du bâti ?\n".encode("latin-1"))
    done = qgis_process(qgis_process_env, "run", "rs_vqa:ask", "--", f"INPUT={raster}",
                        f"QUESTIONS={questions}", f"MODEL={tiny_bundle}", f"OUTPUT={tmp_path / 'a.csv'}")
    output = done.stdout + done.stderr
    assert done.returncode == 1, (done.returncode, output[-3000:])   # 134 was an abort
    assert "questions.csv, line 2: not UTF-8 text (byte 0xe9)" in output and "Save it as UTF-8" in output
    assert "Traceback" not in output
