"""`./build.sh screenshot`: the real QGIS desktop under Xvfb asks a question through the dock.

Prepares a demo scene, a model (models/default, else a tiny random bundle built here), a throw-away
QGIS profile with the plugin enabled, then runs QGIS with an in-app script (in_qgis.py) that asks,
waits for the answer and takes a screenshot of the whole screen -> resources/screenshots/dock.png.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

WORK = REPO / "build" / "screenshot"    # not under /tmp: QGIS treats /tmp layers as temporary
OUTPUT = REPO / "resources" / "screenshots" / "dock.png"
QUESTION = "How many ships are docked in the harbour?"
TIMEOUT_S = 420


def log(message: str) -> None:
    print(f"[screenshot] {message}", file=sys.stderr, flush=True)


def demo_scene(folder: Path) -> Path:
    """The synthetic benchmark scene (synth-scene) when that command exists, else a textured GeoTIFF."""
    scene = folder / "demo_scene.tif"
    if scene.exists():
        return scene
    for stale in folder.glob(scene.name + ".*"):   # old overviews would be read instead of pixels
        stale.unlink()
    try:
        import rs_vqa_plugin.commands.synth_scene  # noqa: F401

        result = subprocess.run([sys.executable, "-m", "rs_vqa_plugin", "synth-scene",
                                 str(scene), "--size", "3000", "--seed", "7"],
                                capture_output=True, text=True)
        if result.returncode == 0 and scene.exists():
            return scene
        log(f"synth-scene failed ({result.stderr.strip()[-300:]}); using a textured GeoTIFF")
    except ImportError:
        log("synth-scene is not available yet; using a textured GeoTIFF")
    from tests.rasters import make_rgb_scene

    return make_rgb_scene(scene, size=(1600, 1200), seed=7)


def demo_model(folder: Path) -> tuple:
    default = REPO / "models" / "default"
    if (default / "manifest.json").exists():
        return default, "default"
    bundle = folder / "tiny-bundle"
    if not (bundle / "manifest.json").exists():
        log("models/default is absent: building a tiny random bundle (answers are noise)")
        shutil.rmtree(bundle, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "rs_vqa_plugin", "tiny-model", str(bundle)],
                       check=True)
    return bundle, "tiny"


def write_profile(profiles: Path, model: Path) -> None:
    # --profiles-path DIR keeps profiles in DIR/profiles/<name>.
    ini = profiles / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    ini.write_text("\n".join([
        "[PythonPlugins]", "rs_vqa_plugin=true", "",
        "[rs_vqa]", f"python={sys.executable}", f"model_dir={model}", "device=auto",
        "max_new_tokens=24", "",
        "[qgis]", "checkVersion=false", "showTips=false", "",
        "[UI]", "hideTips=true", ""]) + "\n")


def main() -> int:
    from tests.qgis_support import stage_plugin

    WORK.mkdir(parents=True, exist_ok=True)
    scene = demo_scene(WORK)
    model, model_kind = demo_model(WORK)
    profiles = WORK / "profiles"
    shutil.rmtree(profiles, ignore_errors=True)
    write_profile(profiles, model)
    plugins = WORK / "plugins"
    stage_plugin(plugins)
    result_file = WORK / "result.json"
    result_file.unlink(missing_ok=True)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    job = {"raster": str(scene), "question": QUESTION, "output": str(OUTPUT),
           "result": str(result_file), "model_kind": model_kind}
    (WORK / "job.json").write_text(json.dumps(job))
    env = dict(os.environ, QGIS_PLUGINPATH=str(plugins), RS_VQA_SCREENSHOT_JOB=str(WORK / "job.json"))
    env.pop("QT_QPA_PLATFORM", None)   # the real desktop, on the Xvfb display
    command = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--nologo",
               "--noversioncheck", "--profiles-path", str(profiles),
               "--code", str(Path(__file__).with_name("in_qgis.py"))]
    log("starting QGIS under Xvfb")
    try:
        subprocess.run(command, env=env, timeout=TIMEOUT_S, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        log(f"QGIS did not finish within {TIMEOUT_S} s")
    if not result_file.exists():
        log("no result: the in-QGIS script did not run to the end")
        return 1
    result = json.loads(result_file.read_text())
    log(json.dumps(result, indent=2))
    return 0 if result.get("ok") and OUTPUT.exists() else 1


if __name__ == "__main__":
    sys.exit(main())
