"""Bad outputs and paths, tried for real against one checkout of the plugin:

    .venv/bin/python bench/output_matrix.py [ROOT] [WORKDIR] [heatmap|eval|paths|csv|processing ...]

ROOT is the checkout whose code runs (default: this one; give another to measure "before"),
WORKDIR a scratch folder. Each case runs the CLI (python -m rs_vqa_plugin) or qgis_process.bin with
ROOT's code on real GeoTIFFs / GeoPackages and says whether the promise held: nothing lost (inputs
and existing files intact), nothing leaked (no read or write outside --images, no formula cells),
a clear error (non-zero exit, no traceback). About 8 minutes on 2 busy cores.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOT = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else REPO
WORK = Path(sys.argv[2]).resolve() if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="rs-vqa-matrix-"))
PY = sys.executable
sys.path.insert(0, str(REPO))
from osgeo import gdal, ogr  # noqa: E402

gdal.UseExceptions()
from tests.rasters import make_rgb_scene  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(ROOT), QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1")
MODEL = WORK / "tiny"
results = []


LAST = [""]


def cli(*args, timeout=300):
    done = subprocess.run([PY, "-m", "rs_vqa_plugin", *map(str, args)], env=ENV, cwd=WORK,
                          capture_output=True, text=True, timeout=timeout)
    LAST[0] = done.stdout + done.stderr
    return done.returncode, done.stdout + done.stderr


def case(name, held, note=""):
    if "unrecognized arguments" in note or "unrecognized arguments" in LAST[0]:
        held, note = False, "the flag does not exist here; " + note
    LAST[0] = ""
    results.append((name, bool(held), note))
    print(f"{'HELD' if held else 'BROKE':5}  {name}  {note}", flush=True)


def layers(path):
    try:
        ds = gdal.OpenEx(str(path), gdal.OF_VECTOR)
    except RuntimeError:
        return None
    out = {ds.GetLayer(i).GetName(): ds.GetLayer(i).GetFeatureCount() for i in range(ds.GetLayerCount())}
    ds = None
    return out


def raster_opens(path):
    try:
        return gdal.Open(str(path)) is not None
    except RuntimeError:
        return False


def clean(out):
    return "Traceback" not in out


def fresh(name):
    d = WORK / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


def gpkg_with_roads(path):
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("roads", None, ogr.wkbPoint)
    layer.CreateField(ogr.FieldDefn("name", ogr.OFTString))
    f = ogr.Feature(layer.GetLayerDefn())
    f.SetField("name", "A1")
    f.SetGeometry(ogr.CreateGeometryFromWkt("POINT (1 2)"))
    layer.CreateFeature(f)
    layer = ds = None


def setup():
    WORK.mkdir(parents=True, exist_ok=True)
    if not (MODEL / "manifest.json").is_file():
        subprocess.run([PY, "-m", "rs_vqa_plugin", "tiny-model", str(MODEL)], env=ENV, check=True,
                       capture_output=True)
    make_rgb_scene(WORK / "scene.tif", size=(300, 200), seed=1)


ASK = ["ask", None, "How many ships?", "--model", MODEL, "--mode", "thumbnail", "--max-new-tokens", "1",
       "--quiet"]


def ask(image, *extra):
    args = list(ASK)
    args[1] = image
    return cli(*args, *extra)


def heatmap_cases():
    d = fresh("heat")
    tif = WORK / "scene.tif"
    mine = d / "mine.geojson"
    mine.write_text('{"type": "FeatureCollection", "features": []}')
    before = mine.read_text()
    code, out = ask(tif, "--heatmap", mine)
    case("ask --heatmap over an existing GeoJSON (no flag) is refused", code != 0 and mine.read_text() == before
         and clean(out), out.strip().splitlines()[-1][:100] if out.strip() else f"exit {code}")
    code, out = ask(tif, "--heatmap", mine, "--overwrite")
    case("ask --heatmap X --overwrite replaces an existing GeoJSON", code == 0 and mine.read_text() != before,
         f"exit {code}")

    project = d / "project.gpkg"
    gpkg_with_roads(project)
    code, out = ask(tif, "--heatmap", project)
    got = layers(project) or {}
    case("ask --heatmap project.gpkg keeps its other layers and adds one", got.get("roads") == 1
         and any(k.startswith("heatmap") for k in got), f"exit {code}, layers {got}")
    code, out = ask(tif, "--heatmap", project)
    got2 = layers(project) or {}
    case("a second ask into the same GeoPackage adds a second layer", got2.get("roads") == 1
         and len([k for k in got2 if k.startswith("heatmap")]) == 2, f"exit {code}, layers {got2}")

    rgpkg = d / "raster.gpkg"
    gdal.Translate(str(rgpkg), str(tif), format="GPKG")
    code, out = ask(rgpkg, "--heatmap", rgpkg)
    case("--heatmap = the input raster (GPKG) is refused", code != 0 and raster_opens(rgpkg) and clean(out),
         f"exit {code}, raster opens: {raster_opens(rgpkg)}")
    rgpkg2 = d / "raster2.gpkg"
    gdal.Translate(str(rgpkg2), str(tif), format="GPKG")
    code, out = ask(rgpkg2, "--heatmap", rgpkg2, "--overwrite")
    case("--heatmap = the input raster with --overwrite is refused", code != 0 and raster_opens(rgpkg2),
         f"exit {code}, raster opens: {raster_opens(rgpkg2)}")
    rgpkg3 = d / "raster3.gpkg"
    gdal.Translate(str(rgpkg3), str(tif), format="GPKG")
    link = d / "link.gpkg"
    link.symlink_to(rgpkg3)
    code, out = ask(rgpkg3, "--heatmap", link)
    case("--heatmap = a symlink to the input raster leaves the raster intact", raster_opens(rgpkg3),
         f"exit {code}, raster opens: {raster_opens(rgpkg3)}")
    rgpkg4 = d / "raster4.gpkg"
    gdal.Translate(str(rgpkg4), str(tif), format="GPKG")
    vrt = d / "mosaic.vrt"
    gdal.BuildVRT(str(vrt), [str(rgpkg4)])
    code, out = ask(vrt, "--heatmap", rgpkg4)
    case("--heatmap = the GeoPackage behind an input VRT is refused", code != 0 and raster_opens(rgpkg4),
         f"exit {code}, source opens: {raster_opens(rgpkg4)}")

    folder = d / "dir.gpkg"
    folder.mkdir()
    code, out = ask(tif, "--heatmap", folder)
    case("--heatmap is a folder: clear error, folder untouched", code == 2 and folder.is_dir() and clean(out),
         (out.strip().splitlines() or [""])[-1][:100])
    code, out = ask(tif, "--heatmap", d / "missing" / "h.gpkg")
    case("--heatmap in a missing folder: clear error", code == 2 and clean(out),
         (out.strip().splitlines() or [""])[-1][:100])
    t0 = time.time()
    code, out = ask(tif, "--heatmap", "/proc/rs-vqa-heat.gpkg")
    case("--heatmap in a folder that cannot be written: clear error", code == 2 and clean(out),
         (out.strip().splitlines() or [""])[-1][:100])
    history = d / "history.json"
    history.write_text('[["Is it a port?", "yes"]]')
    hbefore = history.read_text()
    code, out = ask(tif, "--history", history, "--heatmap", history)
    case("--heatmap = the --history file is refused", code != 0
         and history.read_text() == hbefore, f"exit {code}")
    junk = d / "notes.gpkg"
    junk.write_text("my notes, not a GeoPackage")
    code, out = ask(tif, "--heatmap", junk)
    case("--heatmap over a non-GeoPackage file named .gpkg is refused", code != 0
         and junk.read_text() == "my notes, not a GeoPackage" and clean(out), f"exit {code}")
    named = d / "named.gpkg"
    gpkg_with_roads(named)
    code, out = ask(tif, "--heatmap", named, "--heatmap-layer", "roads")
    case("--heatmap-layer naming an existing layer is refused", code != 0 and layers(named).get("roads") == 1,
         f"exit {code}, layers {layers(named)}")


def questions_file(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def eval_args(q, images, answers, *extra):
    return ["eval", q, "--images", images, "--model", MODEL, "--mode", "thumbnail", "--max-new-tokens", "1",
            "--answers", answers, "--quiet", *extra]


def eval_cases():
    d = fresh("eval")
    images = d / "images"
    images.mkdir()
    make_rgb_scene(images / "a.tif", size=(200, 150), seed=2)
    rows = [{"question_id": "FAIR_1", "image": "a.tif", "text": "How many ships?", "category": "count",
             "ground_truth": "2"}]
    q = questions_file(d / "q.jsonl", rows)
    qtext = q.read_text()
    code, out = cli(*eval_args(q, images, q))
    case("eval --answers = the questions file is refused", code != 0 and q.read_text() == qtext and "OA" not in out,
         (out.strip().splitlines() or [""])[-1][:100])
    notes = d / "notes.txt"
    notes.write_text("my notes about the run")
    code, out = cli(*eval_args(q, images, notes))
    case("eval --answers = a one-line text file is refused (not erased)",
         code != 0 and notes.read_text() == "my notes about the run", f"exit {code}, size {notes.stat().st_size}")
    notes2 = d / "notes2.txt"
    notes2.write_text("line one\nline two\n")
    code, out = cli(*eval_args(q, images, notes2))
    case("eval --answers = a several-line text file is refused", code != 0 and notes2.read_text() == "line one\nline two\n"
         and clean(out), f"exit {code}")
    odd = d / "records.jsonl"
    odd.write_text('{"id": 1, "value": "x"}\n')
    code, out = cli(*eval_args(q, images, odd))
    case("eval --answers = JSON lines of another kind is refused cleanly", code != 0 and odd.read_text() ==
         '{"id": 1, "value": "x"}\n' and clean(out), (out.strip().splitlines() or [""])[-1][:100])
    folder = d / "answers_dir"
    folder.mkdir()
    code, out = cli(*eval_args(q, images, folder))
    case("eval --answers is a folder: clear error", code == 2 and clean(out), (out.strip().splitlines() or [""])[-1][:100])
    img = images / "a.tif"
    size = img.stat().st_size
    code, out = cli(*eval_args(q, images, img))
    case("eval --answers = an image of the questions is refused", code != 0 and img.stat().st_size == size
         and raster_opens(img) and clean(out), f"exit {code}")
    link = d / "link.jsonl"
    link.symlink_to(q)
    code, out = cli(*eval_args(q, images, link))
    case("eval --answers = a symlink to the questions file is refused", code != 0 and q.read_text() == qtext,
         f"exit {code}")
    answers = d / "answers.jsonl"
    code1, _ = cli(*eval_args(q, images, answers))
    first = answers.read_text()
    code2, out = cli(*eval_args(q, images, answers), "--json")
    case("eval --answers on its own answers file resumes (nothing re-asked, nothing lost)",
         code1 == 0 and code2 == 0 and answers.read_text() == first and first.count("\n") == 1, f"exit {code1}/{code2}")
    code, out = cli("eval", q, "--merge", answers, "--answers", q)
    case("eval --merge into the questions file is refused", code != 0 and q.read_text() == qtext, f"exit {code}")
    notes3 = d / "notes3.txt"
    notes3.write_text("keep me\n")
    code, out = cli("eval", q, "--merge", answers, "--answers", notes3)
    case("eval --merge into a non-answers file is refused", code != 0 and notes3.read_text() == "keep me\n",
         f"exit {code}")


def image_path_cases():
    d = fresh("paths")
    images = d / "images"
    images.mkdir()
    make_rgb_scene(images / "a.tif", size=(200, 150), seed=2)
    outside = d / "outside"
    outside.mkdir()
    make_rgb_scene(outside / "x.tif", size=(1300, 1100), seed=3)  # big enough to get overviews
    (images / "link.tif").symlink_to(outside / "x.tif")
    for label, image in (("../x.tif", "../outside/x.tif"), ("an absolute path", str(outside / "x.tif")),
                         ("sub/../../x.tif", "sub/../../outside/x.tif"),
                         ("a symlink leading out", "link.tif")):
        q = questions_file(d / "q.jsonl", [
            {"question_id": "FAIR_1", "image": "a.tif", "text": "How many?", "category": "count", "ground_truth": "1"},
            {"question_id": "FAIR_2", "image": image, "text": "How many?", "category": "count", "ground_truth": "1"}])
        answers = d / "a.jsonl"
        for stale in (answers, outside / "x.tif.ovr"):
            if stale.exists():
                stale.unlink()
        code, out = cli(*eval_args(q, images, answers))
        leaked = answers.exists() and "FAIR_2" in answers.read_text()
        ovr = (outside / "x.tif.ovr").exists()
        case(f"eval image {label} is refused (id and line named)", code != 0 and not leaked and not ovr
             and "FAIR_2" in out and "line 2" in out, f"exit {code}, answered: {leaked}, .ovr outside: {ovr}")


def csv_cases():
    sys.path.insert(0, str(ROOT))
    for mod in [m for m in sys.modules if m.startswith("rs_vqa_plugin")]:
        del sys.modules[mod]
    from rs_vqa_plugin.gui.history import Turn, export_csv

    text = export_csv([("scene", Turn(question="=HYPERLINK(\"http://x\")", text="+1", status="answered")),
                       ("scene", Turn(question="@SUM(A1)", text="\tcmd", status="answered"))])
    cells = [c for row in csv.reader(text.splitlines()[1:]) for c in row[1:3]]
    case("dock CSV export: formula-like cells are quoted out", all(c.startswith("'") for c in cells), repr(cells))
    sys.path.remove(str(ROOT))


# -- Processing through qgis_process ------------------------------------------------------------
def qgis_env():
    root = WORK / f"qp-{ROOT.name}"
    plugins = root / "plugins"
    target = plugins / "rs_vqa_plugin"
    if not target.exists():
        target.mkdir(parents=True)
        for entry in list((ROOT / "rs_vqa_plugin").iterdir()) + [ROOT / "metadata.txt", ROOT / "resources",
                                                                 ROOT / "LICENSE"]:
            if entry.name != "__pycache__":
                (target / entry.name).symlink_to(entry)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_PLUGINPATH=str(plugins),
               QGIS_CUSTOM_CONFIG_PATH=str(root / "profile"), PYTHONPATH=sysconfig.get_paths()["purelib"],
               HF_HUB_OFFLINE="1")
    subprocess.run(["qgis_process.bin", "plugins", "enable", "rs_vqa_plugin"], env=env, capture_output=True)
    return env


def qp(env, *args, timeout=300):
    done = subprocess.run(["qgis_process.bin", "run", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=WORK)
    return done.returncode, done.stdout + done.stderr


def processing_cases():
    env = qgis_env()
    d = fresh("proc")
    tif = WORK / "scene.tif"
    base = ["rs_vqa:ask", "--", f"INPUT={tif}", f"MODEL={MODEL}", "MODE=thumbnail", "MAX_TOKENS=1"]

    # streamed GeoPackage survives SIGTERM
    many = d / "many.txt"
    many.write_text("".join(f"Question number {i}?\n" for i in range(400)))
    out_gpkg, heat_gpkg = d / "answers.gpkg", d / "heat.gpkg"
    proc = subprocess.Popen(["qgis_process.bin", "run", *base[:-2], "MODE=grid", "MAX_TOKENS=1",
                             f"QUESTIONS={many}", f"OUTPUT={out_gpkg}", f"HEATMAP={heat_gpkg}"],
                            env=env, cwd=WORK, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = 0
    deadline = time.time() + 120
    for line in proc.stdout:
        if "->" in line:
            seen += 1
        if seen >= 5 or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    got = layers(out_gpkg) or {}
    heat = layers(heat_gpkg) or {}
    kept = sum(got.values())
    case("Processing GPKG OUTPUT keeps the answers of a run killed by SIGTERM", kept >= 5,
         f"{seen} answered before the kill, {kept} rows kept, heat cells kept {sum(heat.values())}")

    rgpkg = d / "raster.gpkg"
    gdal.Translate(str(rgpkg), str(tif), format="GPKG")
    code, out = qp(env, "rs_vqa:ask", "--", f"INPUT={rgpkg}", "QUESTIONS=How many?", f"MODEL={MODEL}",
                   "MODE=thumbnail", "MAX_TOKENS=1", f"OUTPUT={rgpkg}")
    case("Processing OUTPUT = the input raster GeoPackage is refused", code != 0 and raster_opens(rgpkg),
         f"exit {code}, raster opens: {raster_opens(rgpkg)}")
    rgpkg2 = d / "raster2.gpkg"
    gdal.Translate(str(rgpkg2), str(tif), format="GPKG")
    link = d / "link.gpkg"
    link.symlink_to(rgpkg2)
    code, out = qp(env, "rs_vqa:ask", "--", f"INPUT={rgpkg2}", "QUESTIONS=How many?", f"MODEL={MODEL}",
                   "MODE=thumbnail", "MAX_TOKENS=1", f"OUTPUT={link}")
    case("Processing OUTPUT = a symlink to the input raster leaves it intact", raster_opens(rgpkg2),
         f"exit {code}, raster opens: {raster_opens(rgpkg2)}")
    folder = d / "out_dir.gpkg"
    folder.mkdir()
    code, out = qp(env, *base, "QUESTIONS=How many?", f"OUTPUT={folder}")
    case("Processing OUTPUT is a folder: an error, no traceback", code != 0 and folder.is_dir()
         and "Traceback" not in out, f"exit {code}")
    qcsv = d / "questions.csv"
    qcsv.write_text("question\nHow many ships?\n")
    qbefore = qcsv.read_text()
    code, out = qp(env, *base, f"QUESTIONS={qcsv}", f"OUTPUT={qcsv}")
    case("Processing OUTPUT = the questions file is refused", code != 0 and qcsv.read_text() == qbefore,
         f"exit {code}")
    both = d / "both.gpkg"
    code, out = qp(env, *base, "QUESTIONS=How many?", f"OUTPUT={both}", f"HEATMAP={both}")
    got = layers(both) or {}
    case("Processing OUTPUT = HEATMAP (same plain .gpkg) is refused or keeps both",
         code != 0 or (sum(got.values()) >= 1 and len(got) == 2), f"exit {code}, layers {got}")

    latin = d / "latin.csv"
    latin.write_bytes("question\nQuelle est la densité du bâti?\n".encode("latin-1"))
    code, out = qp(env, *base, f"QUESTIONS={latin}", f"OUTPUT={d / 'l.csv'}")
    case("Processing Latin-1 question CSV: a clear error, no abort", code not in (0, 134) and "UTF-8" in out
         and "Traceback" not in out, f"exit {code}")
    broken = d / "broken.csv"
    broken.write_text('question_id,question\nq1,"How many ships?\nq2,What colour is the roof?\nq3,Is it urban?\n')
    code, out = qp(env, *base, f"QUESTIONS={broken}", f"OUTPUT={d / 'b.csv'}")
    case("Processing CSV with an unclosed quote: refused, line named", code != 0 and "line 2" in out,
         f"exit {code}")
    formula = d / "formula.csv"
    formula.write_text('question_id,question\n"=HYPERLINK(""http://x"")","=1+2 ships?"\n@q2,-How many?\n')
    out_csv = d / "f.csv"
    code, out = qp(env, *base, f"QUESTIONS={formula}", f"OUTPUT={out_csv}")
    cells = []
    if out_csv.exists():
        rows = list(csv.reader(out_csv.read_text().splitlines()))
        cells = [c for row in rows[1:] for c in row[:2]]
    case("Processing CSV answers: formula-like cells are quoted out", code == 0 and cells
         and all(c.startswith("'") for c in cells), f"exit {code}, {cells}")

    # evaluate
    images = d / "images"
    images.mkdir()
    make_rgb_scene(images / "a.tif", size=(200, 150), seed=2)
    q = questions_file(d / "q.jsonl", [{"question_id": "FAIR_1", "image": "a.tif", "text": "How many?",
                                        "category": "=cmd|' /C calc'!A0", "ground_truth": "1"}])
    qtext = q.read_text()
    ev = ["rs_vqa:evaluate", "--", f"QUESTIONS={q}", f"IMAGES={images}", f"MODEL={MODEL}", "MODE=thumbnail",
          "MAX_TOKENS=1"]
    code, out = qp(env, *ev, f"ANSWERS={q}", f"OUTPUT={d / 's.csv'}")
    case("Processing evaluate ANSWERS = QUESTIONS is refused", code != 0 and q.read_text() == qtext,
         f"exit {code}")
    notes = d / "notes.txt"
    notes.write_text("my notes")
    code, out = qp(env, *ev, f"ANSWERS={notes}", f"OUTPUT={d / 's2.csv'}")
    case("Processing evaluate ANSWERS = a non-answers file is refused", code != 0
         and notes.read_text() == "my notes", f"exit {code}")
    scores = d / "s3.csv"
    code, out = qp(env, *ev, f"ANSWERS={d / 'a.jsonl'}", f"OUTPUT={scores}")
    cats = [r[1] for r in csv.reader(scores.read_text().splitlines()[1:])] if scores.exists() else []
    case("Processing evaluate CSV scores: a formula-like category is quoted out", code == 0 and cats
         and all(c.startswith("'") for c in cats if c not in ("OA", "AA")), f"exit {code}, {cats}")
    adir = d / "answers_dir"
    adir.mkdir()
    code, out = qp(env, *ev, f"ANSWERS={adir}", f"OUTPUT={d / 's5.csv'}")
    case("Processing evaluate ANSWERS is a folder: an error, no traceback", code != 0 and "Traceback" not in out,
         f"exit {code}")
    code, out = qp(env, *ev, "ANSWERS=/proc/rs-vqa-answers.jsonl", f"OUTPUT={d / 's6.csv'}")
    case("Processing evaluate ANSWERS in a folder that cannot be written: an error, no traceback",
         code != 0 and "Traceback" not in out, f"exit {code}")
    outside = d / "x.tif"
    make_rgb_scene(outside, size=(200, 150), seed=3)
    q2 = questions_file(d / "q2.jsonl", [{"question_id": "FAIR_7", "image": "../x.tif", "text": "How many?",
                                          "category": "count", "ground_truth": "1"}])
    code, out = qp(env, "rs_vqa:evaluate", "--", f"QUESTIONS={q2}", f"IMAGES={images}", f"MODEL={MODEL}",
                   "MODE=thumbnail", "MAX_TOKENS=1", f"ANSWERS={d / 'a2.jsonl'}", f"OUTPUT={d / 's4.csv'}")
    case("Processing evaluate image ../x.tif is refused", code != 0 and "FAIR_7" in out
         and not (d / "x.tif.ovr").exists(), f"exit {code}")


def main():
    setup()
    only = sys.argv[3:] or ["heatmap", "eval", "paths", "csv", "processing"]
    print(f"code: {ROOT}; scratch: {WORK}")
    table = {"heatmap": heatmap_cases, "eval": eval_cases, "paths": image_path_cases, "csv": csv_cases,
             "processing": processing_cases}
    for name in only:
        table[name]()
    held = sum(1 for _, ok, _ in results if ok)
    print(f"\n{held} of {len(results)} held")
    (WORK / f"matrix-{ROOT.name}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
