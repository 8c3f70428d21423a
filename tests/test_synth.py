"""The synthetic benchmark - scenes (determinism, GeoTIFF validity, sidecar) and questions
(format, balance, every answer recoverable from the sidecar through the real scorer)."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
from osgeo import gdal, osr

from rs_vqa_plugin.benchmark import oracle
from rs_vqa_plugin.benchmark.generate import make_scene, make_split
from rs_vqa_plugin.benchmark.questions import CATEGORIES, SUFFIX, category_balance
from rs_vqa_plugin.benchmark.references import BACKGROUNDS, CATEGORIES as OBJECT_CATEGORIES, COLORS, SHAPES, STATUSES
from rs_vqa_plugin.benchmark.scene import read_sidecar
from rs_vqa_plugin.benchmark.splits import SPLITS
from rs_vqa_plugin.commands import main as cli
from rs_vqa_plugin.engine.scoring import read_jsonl, score_file

gdal.UseExceptions()


@pytest.fixture(scope="module")
def scene_1024(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "s.tif"
    make_scene(path, seed=4, width=1024, height=768, workers=1)
    return path


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    report = make_split("smoke", out)
    return out, report


def test_same_seed_same_bytes_different_seed_different_bytes(scene_1024, tmp_path):
    again = tmp_path / "s.tif"          # same file name: the sidecar names its image
    make_scene(again, seed=4, width=1024, height=768, workers=1)
    assert again.read_bytes() == scene_1024.read_bytes()
    assert (tmp_path / "s.objects.json").read_bytes() == scene_1024.with_name("s.objects.json").read_bytes()
    other = tmp_path / "other" / "s.tif"
    other.parent.mkdir()
    make_scene(other, seed=5, width=1024, height=768, workers=1)
    assert other.read_bytes() != scene_1024.read_bytes()


@pytest.mark.subprocess
def test_worker_processes_write_the_same_bytes(scene_1024, tmp_path):
    path = tmp_path / "s.tif"
    make_scene(path, seed=4, width=1024, height=768, workers=2)
    assert path.read_bytes() == scene_1024.read_bytes()


def test_valid_tiled_compressed_georeferenced_geotiff_with_buildable_overviews(scene_1024, tmp_path):
    ds = gdal.Open(str(scene_1024))
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (1024, 768, 3)
    assert ds.GetRasterBand(1).GetBlockSize() == [256, 256]
    assert ds.GetMetadataItem("COMPRESSION", "IMAGE_STRUCTURE") == "DEFLATE"
    assert ds.GetMetadataItem("PREDICTOR", "IMAGE_STRUCTURE") == "2"
    srs = osr.SpatialReference(wkt=ds.GetProjection())
    assert srs.IsProjected() and srs.GetAuthorityCode(None) == "32633"
    gt = ds.GetGeoTransform()
    assert gt[1] == 0.5 and gt[5] == -0.5
    assert "TIFFTAG_DATETIME" not in (ds.GetMetadata() or {})
    pixels = ds.ReadAsArray()
    assert pixels.dtype == np.uint8 and pixels.std() > 10      # a real picture, not a flat fill
    ds = None
    copy = tmp_path / "copy.tif"
    shutil.copy(scene_1024, copy)
    ds = gdal.Open(str(copy), gdal.GA_Update)
    assert ds.BuildOverviews("AVERAGE", [2, 4, 8]) == 0
    assert ds.GetRasterBand(1).GetOverviewCount() == 3


def test_sidecar_objects_are_inside_the_image_with_closed_vocabulary(scene_1024):
    side = read_sidecar(scene_1024)
    w, h = side["size"]
    assert side["image"] == "s.tif" and side["crs"] == "EPSG:32633" and side["seed"] == 4
    assert side["objects"] and side["contexts"]
    ids = {c["id"] for c in side["contexts"]}
    for obj in side["objects"]:
        x1, y1, x2, y2 = obj["bbox"]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, obj
        assert 8 <= obj["size_px"] <= 80, obj
        assert obj["category"] in OBJECT_CATEGORIES and obj["color"] in COLORS and obj["shape"] in SHAPES
        assert obj["status"] is None or obj["status"] in STATUSES
        assert obj["background"] in BACKGROUNDS
        assert obj["context_id"] is None or obj["context_id"] in ids
    for ctx in side["contexts"]:
        x1, y1, x2, y2 = ctx["bbox"]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, ctx
    assert set(side["landcover"]["fractions"]) >= {"water", "urban", "forest"}


def test_objects_differ_from_their_surroundings(scene_1024):
    """A ship or aircraft box is not plain background: its pixels differ from a ring around it."""
    side = read_sidecar(scene_1024)
    ds = gdal.Open(str(scene_1024))
    big = [o for o in side["objects"] if o["size_px"] >= 25 and o["category"] in ("ship", "aircraft", "storage tank")]
    assert big
    for obj in big[:10]:
        x1, y1, x2, y2 = obj["bbox"]
        inner = ds.ReadAsArray(x1, y1, x2 - x1, y2 - y1).astype(float)
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        centre_px = ds.ReadAsArray(cx - 1, cy - 1, 3, 3).astype(float).mean(axis=(1, 2))
        assert inner.std() > 8 or np.abs(centre_px - inner.mean(axis=(1, 2))).max() > 5, obj


def test_smoke_split_questions_format_and_balance(smoke):
    out, report = smoke
    records = read_jsonl(out / "smoke.jsonl")
    assert len(records) == 16 and report["questions"] == 16
    assert len({r["question_id"] for r in records}) == len(records)
    balance = category_balance(records)
    print("category balance:", json.dumps(balance))
    assert set(balance) == set(CATEGORIES)
    assert max(b["n"] for b in balance.values()) - min(b["n"] for b in balance.values()) <= 1
    for r in records:
        assert r["question_id"].startswith("SYNTH_")
        assert r["text"].endswith(SUFFIX) and r["ground_truth"] == r["ground_truth"].lower().strip()
        assert len(r["ground_truth"].split()) <= 2
        w, h = r["image_size"]
        assert (out / r["image"]).is_file()
        if r["category"] == "count":
            assert "hbox" not in r and r["ground_truth"].isdigit()
        else:
            x1, y1, x2, y2 = r["hbox"]
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h


def test_oracle_scores_100_percent_with_the_real_scorer(smoke, tmp_path):
    out, _ = smoke
    questions = read_jsonl(out / "smoke.jsonl")
    answers = oracle.answer_file(questions, out)
    answers_path = tmp_path / "answers.jsonl"
    answers_path.write_text("".join(json.dumps(a) + "\n" for a in answers))
    scores = score_file(out / "smoke.jsonl", answers_path)
    assert scores["overall"]["OA"] == 1.0 and scores["overall"]["AA"] == 1.0
    assert set(scores["subsets"]) == {"SYNTH"}


def test_oracle_reads_the_sidecar_not_the_answers(smoke):
    """Change the objects in the sidecar and the oracle's answers change with them."""
    out, _ = smoke
    questions = [q for q in read_jsonl(out / "smoke.jsonl") if q["image"] == "synth_17.tif"]
    side = read_sidecar(out / "synth_17.tif")
    right = [oracle.answer(side, q["text"]) == q["ground_truth"] for q in questions]
    assert all(right)
    side["objects"] = side["objects"][::2]
    for obj in side["objects"]:
        obj["color"] = "orange" if obj["color"] != "orange" else "blue"
    after = [oracle.answer(side, q["text"]) == q["ground_truth"] for q in questions]
    assert not all(after)


def test_every_candidate_question_is_recoverable(smoke):
    """Not only the sampled ones: every question the generator could ask resolves uniquely."""
    from rs_vqa_plugin.benchmark.questions import candidates

    out, _ = smoke
    side = read_sidecar(out / "synth_9.tif")
    pools = candidates(side)
    assert set(pools) == set(CATEGORIES)
    wrong = [(q["text"], q["answer"]) for pool in pools.values() for q in pool
             if oracle.answer(side, q["text"]) != q["answer"]]
    assert not wrong, wrong[:5]


def test_splits_are_disjoint_by_seed_and_test_scenes_are_large():
    seen = {}
    for name, split in SPLITS.items():
        for seed in split.seeds():
            assert seed not in seen, f"seed {seed} in {name} and {seen[seed]}"
            seen[seed] = name
    assert all(8192 <= w <= 27328 and 8192 <= h <= 27328 for _, w, h in SPLITS["test"].scenes)
    assert max(w for _, w, _ in SPLITS["test"].scenes) == 27328


def test_cli_synth_scene_and_questions(tmp_path, capsys):
    assert cli(["synth-scene", str(tmp_path / "a.tif"), "--size", "640", "512", "--seed", "3", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["size"] == [640, 512] and (tmp_path / "a.objects.json").is_file()
    assert cli(["synth-questions", str(tmp_path), "--out", str(tmp_path / "q.jsonl"), "--per-scene", "8"]) == 0
    assert len(read_jsonl(tmp_path / "q.jsonl")) > 0
    assert cli(["synth-scene", str(tmp_path / "b.tif"), "--size", "100", "--seed", "3"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert cli(["synth-questions", str(tmp_path / "missing"), "--out", str(tmp_path / "x.jsonl")]) == 2


def test_gallery_panels_png(scene_1024, tmp_path):
    from rs_vqa_plugin.benchmark.gallery import PANEL, question_panels, thumbnail, write_png

    side = read_sidecar(scene_1024)
    obj = max(side["objects"], key=lambda o: o["size_px"])
    ds = gdal.Open(str(scene_1024))
    thumb, scale = thumbnail(ds)
    assert thumb.shape == (PANEL, PANEL, 3) and scale == PANEL / 1024
    panels = question_panels(ds, obj["bbox"], thumb, scale)
    assert panels.shape == (PANEL, 3 * PANEL + 12, 3)
    png = write_png(panels, tmp_path / "q.png")
    back = gdal.Open(str(png))
    assert (back.RasterXSize, back.RasterYSize, back.RasterCount) == (3 * PANEL + 12, PANEL, 3)
    assert back.GetDriver().ShortName == "PNG"


def test_compass_words_match_pixel_directions():
    """North is up (small y), west is left (small x): checked on hand-made contexts."""
    from rs_vqa_plugin.benchmark.references import context_phrase

    lots = [{"id": "p1", "kind": "parking_lot", "name": "parking lot", "bbox": [100, 100, 200, 200]},
            {"id": "p2", "kind": "parking_lot", "name": "parking lot", "bbox": [900, 900, 1000, 1000]}]
    side = {"contexts": lots, "objects": [], "size": [2000, 2000]}
    assert context_phrase(side, lots[0]) == "in the northernmost parking lot"
    assert context_phrase(side, lots[1]) == "in the southernmost parking lot"
    lots[1]["bbox"] = [900, 110, 1000, 210]          # same latitude: west / east decide
    assert context_phrase(side, lots[0]) == "in the westernmost parking lot"
    assert context_phrase(side, lots[1]) == "in the easternmost parking lot"


# --- the wording gives no answer away (questions version 2) ------------------------------------
@pytest.fixture(scope="module")
def laid_out():
    """Sidecars of the train split's first scenes and their candidate questions, laid out only."""
    from rs_vqa_plugin.benchmark.generate import scene_sidecar
    from rs_vqa_plugin.benchmark.questions import candidates

    sides = [scene_sidecar(*spec) for spec in SPLITS["train"].scenes[:6]]
    return [(side, candidates(side)) for side in sides]


def test_attribute_references_name_a_region_and_no_word_that_implies_the_answer(laid_out):
    """Background and status follow from the context ("on the bridge", "at the pier"), shape and
    more from the noun, category from the size extremes: none of them appears where it would."""
    from rs_vqa_plugin.benchmark.oracle import ATTRIBUTE, REF
    from rs_vqa_plugin.benchmark.references import region_of_phrase

    places = {c["name"] for side, _ in laid_out for c in side["contexts"]}
    places |= {"pier", "quay", "sea", "harbour", "airport", "apron", "runway", "bridge", "road"}
    nouns = {"ship", "aircraft", "helicopter", "vehicle", "storage tank", "container"}
    assert nouns == set(OBJECT_CATEGORIES) and {"tank farm", "parking lot"} <= places
    checked = 0
    for side, pools in laid_out:
        for category in ("object background", "object status", "object category", "object shape",
                         "object color"):
            assert pools[category], category
            for q in pools[category]:
                ref = REF.match(ATTRIBUTE.match(q["text"])["ref"])
                assert region_of_phrase(ref["ctx"]) is not None, q["text"]
                words = f" {ref.group(0)} "
                assert not [p for p in places if f" {p} " in words], q["text"]
                if category != "object color":
                    assert ref["noun"] == "object" and not [n for n in nouns if f" {n} " in words], q["text"]
                    assert ref["extreme"] not in ("largest", "smallest"), q["text"]
                else:
                    assert ref["color"] is None, q["text"]
                checked += 1
    assert checked > 2000


def test_reasoning_wording_implies_no_answer(laid_out):
    from rs_vqa_plugin.benchmark.oracle import LARGER, MORE, REF, SAME

    forms = Counter()
    for side, pools in laid_out:
        for q in pools["reasoning"]:
            text = q["text"]
            if m := LARGER.match(text):
                a, b = REF.match(m["r1"]), REF.match(m["r2"])
                assert a["noun"] == b["noun"] != "object", text
                assert {a["extreme"], b["extreme"]}.isdisjoint({"largest", "smallest"}), text
                forms["larger"] += 1
            elif m := SAME.match(text):
                assert REF.match(m["r1"])["color"] is None and REF.match(m["r2"])["color"] is None, text
                forms["same"] += 1
            elif m := MORE.match(text):
                # one kind of object in two places of one kind ("the northernmost / southernmost bridge")
                assert m["p1"] == m["p2"] and m["c1"].split()[-1] == m["c2"].split()[-1], text
                forms["more"] += 1
            else:
                forms["exists"] += 1
    assert forms["larger"] and forms["same"] and forms["exists"], forms


def test_every_laid_out_candidate_resolves_to_its_answer(laid_out):
    for side, pools in laid_out:
        wrong = [(q["text"], q["answer"]) for pool in pools.values() for q in pool
                 if oracle.answer(side, q["text"]) != q["answer"]]
        assert not wrong, wrong[:5]


def test_a_region_reference_does_not_depend_on_the_exact_border(laid_out):
    """The named object is the same whether the region's inner borders move in or out by up to
    the margin: nothing near a border decides the answer."""
    from rs_vqa_plugin.benchmark.oracle import ATTRIBUTE, REF
    from rs_vqa_plugin.benchmark.references import (RegionObjects, centre, filter_objects, pick, region_box,
                                                    region_of_phrase)

    for side, pools in laid_out[:3]:
        w, h = side["size"]
        for q in pools["object category"] + pools["object color"]:
            ref = REF.match(ATTRIBUTE.match(q["text"])["ref"])
            region = region_of_phrase(ref["ctx"])
            margin = RegionObjects(side, region).margin
            x1, y1, x2, y2 = region_box(side, region)
            for shift in (-0.95 * margin, 0.0, 0.95 * margin):
                box = (x1 - shift if x1 > 0 else 0, y1 - shift if y1 > 0 else 0,
                       x2 + shift if x2 < w else w, y2 + shift if y2 < h else h)
                inside = [o for o in side["objects"]
                          if box[0] <= centre(o["bbox"])[0] < box[2] and box[1] <= centre(o["bbox"])[1] < box[3]]
                obj = pick(filter_objects(inside, ref["noun"], ref["color"]), ref["extreme"])
                assert obj is not None and list(obj["bbox"]) == q["hbox"], (q["text"], shift)


def test_text_alone_does_not_beat_the_majority_answer():
    """Predictors that read only the question (learnt on train) stay near the val split's majority
    rate in every category (the generator before version 2: background 85-90 % against 15 %)."""
    from rs_vqa_plugin.benchmark.baselines import chance_levels, text_baselines
    from rs_vqa_plugin.benchmark.generate import split_questions

    val = split_questions("val")
    chance = chance_levels(val)
    for name, accuracy in text_baselines(split_questions("train", 24), val).items():
        for category, value in accuracy.items():
            print(name, category, f"{value:.2f} (majority {chance[category]['majority']:.2f})")
            assert value <= chance[category]["majority"] + 0.12, (name, category, value)


def test_split_questions_equal_the_written_split(smoke):
    from rs_vqa_plugin.benchmark.generate import split_questions

    out, _ = smoke
    assert split_questions("smoke") == read_jsonl(out / "smoke.jsonl")
