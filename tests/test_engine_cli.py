"""The `ask` and `eval` commands on the tiny bundle: streamed and JSON answers, heatmaps, resumable shards."""

from __future__ import annotations

import json
import os

import pytest
from osgeo import ogr

from rs_vqa_plugin.commands import main
from tests.rasters import make_rgb_scene

pytest_plugins = ["tests.fixtures_models"]

QUESTION = "How many ships are in the harbour?"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    make_rgb_scene(folder / "a.tif", size=(400, 300), seed=1)
    make_rgb_scene(folder / "b.tif", size=(300, 350), seed=2)
    return folder


def test_ask_json_and_streamed_answer_agree(tiny_bundle, images, capsys, tmp_path):
    heat = tmp_path / "heat.geojson"
    args = ["ask", str(images / "a.tif"), QUESTION, "--model", str(tiny_bundle), "--device", "cpu",
            "--max-new-tokens", "3"]
    assert main(args + ["--json", "--heatmap", str(heat)]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("llm_vision_tokens", "tiles_encoded", "levels", "flops", "seconds"):
        assert key in out["trace"]
    assert out["mode"] == "dip" and isinstance(out["answer"], str)
    ds = ogr.Open(str(heat))      # keep the dataset alive while its layer is used
    assert ds.GetLayer(0).GetFeatureCount() == out["heat_cells"] > 0
    ds = None

    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out == out["answer"] + "\n"
    assert "[    score" in captured.err and "tiles encoded" in captured.err


def test_ask_bad_input_writes_no_heatmap(tiny_bundle, images, capsys, tmp_path):
    heat = tmp_path / "heat.gpkg"
    code = main(["ask", str(images / "a.tif"), "  ", "--model", str(tiny_bundle), "--heatmap", str(heat)])
    assert code == 2 and "empty" in capsys.readouterr().err
    code = main(["ask", str(images / "a.tif"), QUESTION, "--model", str(tiny_bundle),
                 "--scope", "0,0,1,1", "--heatmap", str(heat)])
    assert code == 2 and "outside the raster" in capsys.readouterr().err
    code = main(["ask", str(images / "a.tif"), QUESTION, "--model", str(tmp_path / "none")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = main(["ask", str(images / "a.tif"), QUESTION, "--model", str(tiny_bundle),
                 "--memory-limit-mb", "0.01", "--heatmap", str(heat)])
    assert code == 2 and "raise memory_limit_mb" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def _questions(path):
    rows = [
        {"question_id": "FAIR_1", "image": "a.tif", "text": "How many ships?", "category": "count",
         "ground_truth": "2"},
        {"question_id": "FAIR_2", "image": "b.tif", "text": "What color is the roof?",
         "category": "object color", "ground_truth": "white"},
        {"question_id": "STAR_1", "image": "a.tif", "text": "Is this rural or urban?",
         "category": "rural or urban", "ground_truth": "urban"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_shards_resume_and_merge(tiny_bundle, images, capsys, tmp_path):
    questions = _questions(tmp_path / "q.jsonl")
    base = ["eval", str(questions), "--images", str(images), "--model", str(tiny_bundle),
            "--device", "cpu", "--mode", "thumbnail", "--max-new-tokens", "2"]
    shard1, shard2 = tmp_path / "s1.jsonl", tmp_path / "s2.jsonl"
    assert main(base + ["--shard", "1/2", "--answers", str(shard1)]) == 0
    capsys.readouterr()
    assert [json.loads(line)["question_id"] for line in shard1.read_text().splitlines()] == ["FAIR_1", "STAR_1"]

    # Resumable: a torn last line is dropped and its question answered again; nothing else re-run.
    lines = shard1.read_text().splitlines()
    shard1.write_text(lines[0] + "\n" + lines[1][:20])
    assert main(base + ["--shard", "1/2", "--answers", str(shard1), "--json"]) == 0
    captured = capsys.readouterr()
    assert "1 new answers" in captured.err
    assert json.loads(captured.out)["subsets"]["STAR"]["answered"] == 1
    assert shard1.read_text().splitlines()[0] == lines[0]

    assert main(base + ["--shard", "2/2", "--answers", str(shard2)]) == 0
    capsys.readouterr()
    merged = tmp_path / "all.jsonl"
    assert main(["eval", str(questions), "--merge", str(shard1), str(shard2), "--answers",
                 str(merged), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["unanswered"] == 0
    assert scores["overall"]["answered"] == 3
    assert set(scores["subsets"]) == {"FAIR", "STAR"}


def test_eval_missing_image_is_a_clear_error(tiny_bundle, images, capsys, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": "FAIR_9", "image": "nope.tif", "text": "?",
                                     "category": "count", "ground_truth": "1"}) + "\n")
    code = main(["eval", str(questions), "--images", str(images), "--model", str(tiny_bundle),
                 "--answers", str(tmp_path / "a.jsonl")])
    assert code == 2 and "nope.tif" in capsys.readouterr().err
    assert not (tmp_path / "a.jsonl").exists()


def test_eval_groups_questions_by_image_to_reuse_tile_encodings(tiny_bundle, images, capsys,
                                                                 tmp_path):
    questions = _questions(tmp_path / "q.jsonl")      # a, b, a
    base = ["eval", str(questions), "--images", str(images), "--model", str(tiny_bundle),
            "--device", "cpu", "--mode", "grid", "--max-new-tokens", "2"]
    answers = tmp_path / "on.jsonl"
    assert main(base + ["--answers", str(answers)]) == 0
    records = [json.loads(line) for line in answers.read_text().splitlines()]
    # Written in answering order: a's questions one after the other, then b's.
    assert [r["question_id"] for r in records] == ["FAIR_1", "STAR_1", "FAIR_2"]
    first, again, other = records
    assert first["tiles_from_cache"] == 0 and first["tiles_encoded"] > 0
    assert again["tiles_encoded"] == 0 and again["tiles_from_cache"] == first["tiles_encoded"]
    assert other["tiles_from_cache"] == 0
    assert "from the cache" in capsys.readouterr().err

    off = tmp_path / "off.jsonl"
    assert main(base + ["--answers", str(off), "--tile-cache-mb", "0"]) == 0
    cold = [json.loads(line) for line in off.read_text().splitlines()]
    assert [r["tiles_from_cache"] for r in cold] == [0, 0, 0]
    assert [r["text"] for r in cold] == [r["text"] for r in records]
    capsys.readouterr()
    assert main(base + ["--answers", str(tmp_path / "bad.jsonl"), "--tile-cache-mb", "-5"]) == 2
    assert "--tile-cache-mb must be 0 (off)" in capsys.readouterr().err
    assert not (tmp_path / "bad.jsonl").exists()
