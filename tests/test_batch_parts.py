"""The parts of `batch` / `eval --ray` that need no model and no cluster: actor plans, raster
lists, resumable answer tables, heatmap files, question ids, progress, option checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rs_vqa_plugin.commands import main
from rs_vqa_plugin.engine.answer import Answer, HeatCell
from rs_vqa_plugin.engine.batch_outputs import answer_row, open_answers, read_rows
from rs_vqa_plugin.engine.errors import InputError
from tests.rasters import make_rgb_scene


def test_actor_plans_follow_the_cluster():
    from rs_vqa_plugin.engine.ray_pool import RaySettings, plan_actors

    plan = lambda resources, **kw: plan_actors(RaySettings("auto", **kw), resources)  # noqa: E731
    # GPUs: one actor per GPU, the CPUs shared among them
    assert plan({"CPU": 64, "GPU": 8}) == (8, 1.0, 8, 8)
    # CPUs only: 4 threads an actor
    assert plan({"CPU": 16}) == (4, 0.0, 4, 4)
    assert plan({"CPU": 2}) == (1, 0.0, 2, 2)
    # configurable: two actors per GPU, fractional CPUs
    assert plan({"CPU": 16, "GPU": 2}, gpus_per_actor=0.5) == (4, 0.5, 4, 4)
    assert plan({"CPU": 2}, actors=2, threads_per_actor=1, cpus_per_actor=0.5) == (2, 0.0, 0.5, 1)
    with pytest.raises(InputError, match="do not fit the cluster"):
        plan({"CPU": 2}, actors=3, threads_per_actor=1)
    with pytest.raises(InputError, match="the cluster has 0 GPUs"):
        plan({"CPU": 8}, gpus_per_actor=1)


def test_ray_options_are_checked_before_any_work(capsys, tmp_path):
    questions = tmp_path / "q.txt"
    questions.write_text("How many ships?\n")
    assert main(["batch", str(questions), str(tmp_path), "--out", str(tmp_path / "a.csv"),
                 "--actors", "2"]) == 2
    assert "--actors is for Ray runs" in capsys.readouterr().err
    assert main(["batch", str(questions), str(tmp_path), "--out", str(tmp_path / "a.csv"),
                 "--ray", "host:6379"]) == 2
    assert "ray://host:port" in capsys.readouterr().err
    assert main(["eval", str(questions), "--images", str(tmp_path), "--ray", "local",
                 "--threads-per-actor", "0"]) == 2
    assert "--threads-per-actor must be at least 1" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.txt"]


def test_an_address_where_nothing_answers_fails_at_once(capsys, tmp_path, monkeypatch):
    import socket

    with socket.socket() as probe:      # a port nothing listens on any more
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "q.txt").write_text("How many ships?\n")
    make_rgb_scene(tmp_path / "a.tif", size=64)
    base = ["batch", str(tmp_path / "q.txt"), str(tmp_path / "a.tif"), "--out",
            str(tmp_path / "out.csv"), "--model", str(tmp_path)]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    (tmp_path / "manifest.json").write_text("{}")   # resolve_model only wants the folder
    for address in ("auto", f"ray://127.0.0.1:{port}"):
        assert main(base + ["--ray", address]) == 2
        assert f"nothing answers at 127.0.0.1:{port}" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


def test_rasters_from_files_folders_and_globs(tmp_path):
    from rs_vqa_plugin.engine.raster_list import list_rasters

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "deep").mkdir()
    one = make_rgb_scene(tmp_path / "a" / "one.tif", size=64)
    two = make_rgb_scene(tmp_path / "a" / "two.TIFF", size=64)
    deep = make_rgb_scene(tmp_path / "a" / "deep" / "three.tif", size=64)
    (tmp_path / "a" / "one.tif.aux.xml").write_text("<PAMDataset/>")
    (tmp_path / "a" / "notes.txt").write_text("not a raster")
    assert list_rasters([str(tmp_path / "a")]) == [one.resolve(), two.resolve()]
    # a file named twice (and through a glob) is asked about once
    assert list_rasters([str(one), str(tmp_path / "a" / "**" / "*.tif"), str(one)]) == [
        one.resolve(), deep.resolve()]
    for bad, message in ((tmp_path / "missing.tif", "does not exist"),
                         (tmp_path / "a" / "*.png", "matches no file")):
        with pytest.raises(InputError, match=message):
            list_rasters([str(bad)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no raster"):
        list_rasters([str(tmp_path / "empty")])


def _answer(text="two ships") -> Answer:
    ring = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)]
    return Answer(question="How many?", text=text, mode="dip",
                  trace={"seconds": {"total": 1.5}, "tiles_encoded": 3, "tiles_from_cache": 2,
                         "llm_vision_tokens": 40, "levels": [1, 2], "stop_reason": "n-max"},
                  heat_cells=[HeatCell(ring, 0.5, 2, (0, 1), 1)], crs_wkt="")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".gpkg"])
def test_answer_tables_resume_by_raster_and_question(suffix, tmp_path):
    path = tmp_path / f"answers{suffix}"
    table = open_answers(path)
    assert table.done == set()
    table.add(answer_row("/data/a.tif", "q1", "How many?", _answer()))
    table.add(answer_row("/data/b.tif", "q1", "-1 or +1?", _answer("=SUM(A1)")))
    table.close()
    if suffix != ".gpkg":
        # what a crash mid-write leaves: the start of a third row
        with path.open("a", encoding="utf-8") as handle:
            handle.write('{"raster": "/data/c.tif", "quest' if suffix == ".jsonl" else "/data/c.tif,q")
    again = open_answers(path)
    assert again.done == {("/data/a.tif", "q1"), ("/data/b.tif", "q1")}
    again.close()
    rows = read_rows(path)
    assert len(rows) == 2
    assert rows[0]["tiles_read"] in (5, "5") and rows[0]["levels"] == "1,2"
    if suffix == ".csv":    # spreadsheet-safe text, the id read back as written
        assert rows[1]["answer"] == "'=SUM(A1)" and rows[1]["question"] == "'-1 or +1?"


def test_answer_tables_refuse_what_they_did_not_write(tmp_path):
    questions = tmp_path / "questions.csv"
    questions.write_text("question\nHow many ships?\n")
    with pytest.raises(InputError, match="never writes into an input"):
        open_answers(questions, [("the question file", questions)])
    with pytest.raises(InputError, match="is not an answers table"):
        open_answers(questions)
    other = tmp_path / "other.jsonl"
    other.write_text('{"question_id": "q1", "text": "How many?"}\n')
    with pytest.raises(InputError, match="has no raster, question_id and answer"):
        open_answers(other)
    with pytest.raises(InputError, match=".jsonl, .csv or .gpkg"):
        open_answers(tmp_path / "answers.txt")
    assert questions.read_text() == "question\nHow many ships?\n"


def test_heatmap_files_per_raster(tmp_path):
    from rs_vqa_plugin.engine.batch_heatmaps import HeatmapFolder, heatmap_names

    names = heatmap_names([Path("/x/scene.tif"), Path("/y/scene.tif"), Path("/x/other.vrt")])
    assert names["/x/other.vrt"] == "other.gpkg"
    assert names["/x/scene.tif"] != names["/y/scene.tif"]
    assert names == heatmap_names([Path("/x/scene.tif"), Path("/y/scene.tif"), Path("/x/other.vrt")])

    folder = HeatmapFolder(tmp_path / "heat", [Path("/x/scene.tif")])
    folder.add("/x/scene.tif", "q1", _answer())
    folder.add("/x/scene.tif", "q2", _answer())
    # q2's answer row never made it (a crash between the two): its cells go on resume
    assert HeatmapFolder(tmp_path / "heat", [Path("/x/scene.tif")]).forget_unanswered(
        {"/x/scene.tif": {"q1"}}) == 1
    from osgeo import ogr

    ds = ogr.Open(str(tmp_path / "heat" / "scene.gpkg"))
    assert [f.GetField("question_id") for f in ds.GetLayerByName("heatmap")] == ["q1"]
    ds = None

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "scene.gpkg").write_text("my own file")
    with pytest.raises(InputError, match="is not a heatmap file of `batch`"):
        HeatmapFolder(foreign, [Path("/x/scene.tif")])
    assert (foreign / "scene.gpkg").read_text() == "my own file"


def test_batch_question_ids(tmp_path):
    from rs_vqa_plugin.commands.batch import read_batch_questions

    text = tmp_path / "q.txt"
    text.write_text("How many ships?\n\nIs it urban?\n")
    assert read_batch_questions(text) == [("q1", "How many ships?"), ("q2", "Is it urban?")]
    lrs = tmp_path / "q.jsonl"
    lrs.write_text(json.dumps({"question_id": "A", "text": "x?"}) + "\n"
                   + json.dumps({"question_id": "A", "text": "y?"}) + "\n")
    with pytest.raises(InputError, match="appears twice"):
        read_batch_questions(lrs)


def test_progress_counts_earlier_answers_and_estimates_the_rest():
    from rs_vqa_plugin.engine.batch_run import RunProgress

    now = [100.0]
    progress = RunProgress(total=10, already=4, clock=lambda: now[0])
    progress.start()
    now[0] += 30.0
    assert progress.step(failed=False) == "[5/10] 2.0 q/min, ETA 0:02:30"
    now[0] += 30.0
    assert progress.step(failed=True) == "[5/10, 1 failed] 2.0 q/min, ETA 0:02:00"
