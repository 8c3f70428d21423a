"""`eval --ray` and `batch` on a real local Ray cluster (2 CPUs, started once for the module): the
same answers as one process, rows streamed and resumed after a real Ctrl-C, heatmaps per raster,
a broken raster recorded while the run goes on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rs_vqa_plugin.commands import main
from rs_vqa_plugin.engine.batch_outputs import read_rows
from tests.rasters import make_rgb_scene

pytest_plugins = ["tests.fixtures_models"]
pytestmark = pytest.mark.subprocess     # a Ray cluster is processes (and one test runs the CLI)
REPO = Path(__file__).resolve().parent.parent
# Actors sharing the 2 CPUs with the driver (fractional CPUs: nothing waits for a free core).
RAY = ["--ray", "local", "--cpus-per-actor", "0.5", "--threads-per-actor", "1"]
QUESTIONS = ["How many ships are in the harbour?", "What colour is the roof?",
             "Is this area rural or urban?", "=1+1 is a formula, not a question?"]


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray session for the module; `--ray local` in this process joins it."""
    from rs_vqa_plugin.engine.ray_pool import connect

    stop = connect("local", num_cpus=2)
    try:
        yield
    finally:
        stop()
    import ray

    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from rs_vqa_plugin.benchmark.generate import make_split

    folder = tmp_path_factory.mktemp("smoke")
    make_split("smoke", folder)
    return folder


def _records(path: Path) -> dict:
    """Answer records by id, without the wall-clock seconds (the one field that may differ)."""
    lines = path.read_text().splitlines()
    records = {}
    for line in lines:
        record = json.loads(line)
        record.pop("seconds")
        records[record["question_id"]] = record
    assert len(records) == len(lines)      # every question answered once
    return records


@pytest.mark.parametrize("which, actors", [("tiny", 2), ("bundled", 1)])
def test_eval_on_ray_gives_the_answers_of_one_process(which, actors, tiny_bundle, smoke,
                                                      ray_cluster, tmp_path, capsys):
    model = tiny_bundle if which == "tiny" else REPO / "models" / "default"
    base = ["eval", str(smoke / "smoke.jsonl"), "--images", str(smoke), "--model", str(model),
            "--device", "cpu", "--max-new-tokens", "8"]
    here, on_ray = tmp_path / "here.jsonl", tmp_path / "ray.jsonl"
    assert main(base + ["--answers", str(here)]) == 0
    assert main(base + ["--answers", str(on_ray), "--actors", str(actors)] + RAY) == 0
    err = capsys.readouterr().err
    assert f"Ray: {actors} actors" in err and "q/min, ETA" in err and "[16/16]" in err
    one, ray_run = _records(here), _records(on_ray)
    assert len(one) == 16
    assert ray_run == one          # greedy decoding: the same text, question for question
    # the tile cache worked per actor as it does in one process (grouped by image)
    assert sum(r["tiles_from_cache"] for r in ray_run.values()) > 0


def _batch_folder(root: Path) -> Path:
    folder = root / "rasters"
    folder.mkdir()
    for index in range(3):
        make_rgb_scene(folder / f"scene_{index}.tif", size=(1200, 1000), seed=index)
    (folder / "scene_0.tif.aux.xml").write_text("<PAMDataset/>")   # not a raster: skipped
    return folder


def _heat_question_ids(path: Path) -> dict:
    from osgeo import ogr

    ds = ogr.Open(str(path))
    layer = ds.GetLayerByName("heatmap")
    counts = {}
    for feature in layer:
        counts[feature.GetField("question_id")] = counts.get(feature.GetField("question_id"), 0) + 1
    layer = ds = None
    return counts


def test_batch_streams_resumes_after_ctrl_c_and_records_a_broken_raster(tiny_bundle, ray_cluster,
                                                                         tmp_path, capsys):
    folder = _batch_folder(tmp_path)
    questions = tmp_path / "questions.txt"
    questions.write_text("\n".join(QUESTIONS) + "\n")
    out, heat = tmp_path / "answers.csv", tmp_path / "heat"
    options = ["--out", str(out), "--heatmaps", str(heat), "--model", str(tiny_bundle),
               "--device", "cpu", "--mode", "full", "--tile-cache-mb", "0", "--max-new-tokens", "16"]
    args = ["batch", str(questions), str(folder)] + options

    # A real Ctrl-C (SIGINT to the command) once answers arrive: its own local cluster is shut
    # down, the answers written so far stay, exit code 130.
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "rs_vqa_plugin"] + args + [
        "--ray", "local", "--actors", "1", "--threads-per-actor", "1"]
    proc = subprocess.Popen(command, env=env, cwd=str(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and len(out.read_text().splitlines()) >= 2:    # header + one answer
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Interrupted after" in err and "run the same command again" in err
    before = out.read_text()
    kept = len(read_rows(out))
    assert 1 <= kept < 12, err[-2000:]

    # Resumed on Ray: only the missing questions are asked; a broken raster named as well fails
    # its 4 questions, which are recorded, and the run goes on.
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a GeoTIFF at all")
    assert main(["batch", str(questions), str(folder), str(broken)] + options + RAY +
                ["--actors", "1"]) == 1
    err = capsys.readouterr().err
    assert f"{16 - kept} of 16 questions to answer" in err
    assert "broken.tif" in err and "FAILED" in err
    assert out.read_text().startswith(before)          # the earlier answers untouched
    rows = read_rows(out)
    assert len(rows) == 12
    assert {(Path(r["raster"]).name, r["question_id"]) for r in rows} == {
        (f"scene_{i}.tif", f"q{n}") for i in range(3) for n in range(1, 5)}
    assert {r["question"] for r in rows} >= {"'=1+1 is a formula, not a question?"}  # CSV-safe
    failures = [json.loads(line) for line in
                (tmp_path / "answers.csv.failures.jsonl").read_text().splitlines()]
    assert sorted(f["question_id"] for f in failures) == ["q1", "q2", "q3", "q4"]
    assert {Path(f["raster"]).name for f in failures} == {"broken.tif"}
    assert "broken.tif" in failures[0]["error"]

    # One heatmap per raster, with the cells of its 4 questions (none doubled by the restart).
    assert sorted(p.name for p in heat.iterdir()) == ["scene_0.gpkg", "scene_1.gpkg", "scene_2.gpkg"]
    per_question = [_heat_question_ids(heat / f"scene_{i}.gpkg") for i in range(3)]
    for counts in per_question:
        assert sorted(counts) == ["q1", "q2", "q3", "q4"]
        assert len(set(counts.values())) == 1       # mode full: every question the same cells

    # A third run (without the broken raster) has nothing left to ask.
    assert main(args) == 0
    assert "all 12 questions are answered" in capsys.readouterr().err
    assert len(read_rows(out)) == 12
