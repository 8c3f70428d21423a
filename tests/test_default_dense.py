"""Dense training targets of the default model (train_default/dense.py) and the answer-kind check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rs_vqa_plugin.engine.pyramid import plan_pyramid
from rs_vqa_plugin.modeling.train_default.dense import (CLASSES, HEADS, IGNORE, LANDCOVER,
                                                        SceneTruth)

H = {name: i for i, name in enumerate(HEADS)}


def _truth(width, height, objects, ground=None):
    """A SceneTruth from a hand-made sidecar: no rendering, every label known in advance."""
    sidecar = {"size": [width, height], "objects": objects}
    if ground is None:
        ground = np.zeros((height, width), np.int8)           # all water
    return SceneTruth(sidecar, ground)


def _vehicle(bbox, color="red", status="parked", background="parking lot", category="vehicle",
             shape="rectangle"):
    x1, y1, x2, y2 = bbox
    return {"bbox": list(bbox), "size_px": max(x2 - x1, y2 - y1), "category": category,
            "color": color, "shape": shape, "status": status, "background": background}


def _index(head, value):
    return CLASSES[head].index(value)


def test_an_objects_cell_gets_its_attributes_and_empty_cells_are_background():
    # 1024 px scene, 64 px tiles, 4 x 4 pooled tokens per tile: finest-level cells are 16 px.
    plan = plan_pyramid(1024, 1024, 64, 4)
    finest = len(plan.levels)
    assert plan.level(finest).scale_x == 1.0
    ground = np.zeros((1024, 1024), np.int8)
    ground[:, 512:] = list(LANDCOVER).index("built-up")        # east half built-up, west water
    car = _vehicle((100, 68, 110, 74))                          # tile (1, 1), cell (0, 2)
    truth = _truth(1024, 1024, [car], ground)
    cells = truth.targets(plan, finest, [(1, 1)], 4).reshape(4, 4, len(HEADS))
    hit = cells[0, 2]
    assert hit[H["category"]] == _index("category", "vehicle")
    assert hit[H["color"]] == _index("color", "red")
    assert hit[H["shape"]] == _index("shape", "rectangle")
    assert hit[H["status"]] == _index("status", "parked")
    assert hit[H["background"]] == _index("background", "parking lot")
    assert hit[H["landcover"]] == list(LANDCOVER).index("water")
    empty = np.ones((4, 4), bool)
    empty[0, 2] = False
    # no object: category "none", attributes unknown, land cover still labelled
    assert (cells[empty][:, H["category"]] == 0).all()
    for head in ("color", "shape", "status", "background"):
        assert (cells[empty][:, H[head]] == IGNORE).all()
    # a tile in the east half: built-up everywhere, no object
    east = truth.targets(plan, finest, [(3, 12)], 4)
    assert (east[:, H["landcover"]] == list(LANDCOVER).index("built-up")).all()
    assert (east[:, H["category"]] == 0).all()
    # the thumbnail's patch grid (8 x 8 cells of 128 source px): the 10 px car is a dot there,
    # so its cell is not labelled at all, and the rest is empty
    thumb = truth.targets(plan, 0, [(0, 0)], 8).reshape(8, 8, len(HEADS))
    assert thumb[0, 0, H["category"]] == IGNORE
    assert (thumb.reshape(64, -1)[1:, H["category"]] == 0).all()
    assert thumb[0, 7, H["landcover"]] == list(LANDCOVER).index("built-up")


def test_dense_targets_ignore_padding_status_less_objects_and_grazed_cells():
    # a 1024 x 600 scene: the finest level's last tile row is partly padding
    plan = plan_pyramid(1024, 600, 64, 4)
    finest = len(plan.levels)
    lv = plan.level(finest)
    tank = _vehicle((200, 200, 230, 230), category="storage tank", shape="round", status=None,
                    background="gravel", color="white")
    truth = _truth(1024, 600, [tank])
    edge = truth.targets(plan, finest, [(lv.rows - 1, lv.cols - 1)], 4).reshape(4, 4, -1)
    # 600 = 9 * 64 + 24: rows of cells below the content are padding
    assert (edge[2:, :, H["category"]] == IGNORE).all() and (edge[2:, :, H["landcover"]] == IGNORE).all()
    assert lv.content_height == 600 and (edge[:2, :, H["category"]] >= 0).all()
    # the 30 px tank spans cells of tile (3, 3): labelled where it fills, status unknown
    cells = truth.targets(plan, finest, [(3, 3)], 4)
    tank_cells = cells[cells[:, H["category"]] == _index("category", "storage tank")]
    assert len(tank_cells) >= 1
    assert (tank_cells[:, H["status"]] == IGNORE).all()
    assert (tank_cells[:, H["background"]] == _index("background", "gravel")).all()
    # a cell that only grazes an object's box is neither empty nor labelled: 2 px of a 10 px car
    # in tile (0, 0)'s cell (0, 3), the other 8 px in tile (0, 1)'s cell (0, 0)
    graze = _truth(1024, 600, [_vehicle((62, 10, 72, 16))])
    first, second = (graze.targets(plan, finest, [t], 4).reshape(4, 4, -1) for t in ((0, 0), (0, 1)))
    assert first[0, 3, H["category"]] == IGNORE and first[0, 3, H["color"]] == IGNORE
    assert first[0, 2, H["category"]] == 0
    assert second[0, 0, H["category"]] == _index("category", "vehicle")
    assert second[0, 0, H["color"]] == _index("color", "red")


def test_scene_truth_from_a_generated_scene_labels_its_objects(tmp_path):
    from rs_vqa_plugin.benchmark.generate import make_scene
    from rs_vqa_plugin.benchmark.scene import read_sidecar
    from rs_vqa_plugin.modeling.train_default.views import box_tiles

    image = tmp_path / "scene.tif"
    make_scene(image, 17, 1024, 1024, workers=1)
    truth = SceneTruth.from_image(image)
    objects = read_sidecar(image)["objects"]
    assert objects, "the scene has objects"
    plan = plan_pyramid(1024, 1024, 64, 4)
    finest = len(plan.levels)
    found = 0
    for obj in objects:
        r0, _, c0, _ = box_tiles(plan, finest, obj["bbox"])
        r1, c1 = box_tiles(plan, finest, obj["bbox"])[1], box_tiles(plan, finest, obj["bbox"])[3]
        tiles = [(r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]
        labels = truth.targets(plan, finest, tiles, 4)
        mine = ((labels[:, H["category"]] == _index("category", obj["category"]))
                & (labels[:, H["color"]] == _index("color", obj["color"])))
        found += bool(mine.any())
    # neighbours may take a cell (containers in rows), but most objects own one
    assert found >= 0.8 * len(objects), (found, len(objects))
    # a sidecar that does not match its seed's scene is refused
    side = image.with_name("scene.objects.json")
    data = json.loads(side.read_text())
    data["objects"][0]["bbox"][0] += 1
    side.write_text(json.dumps(data))
    from rs_vqa_plugin.engine.errors import InputError
    with pytest.raises(InputError, match="regenerate"):
        SceneTruth.from_image(image)


def test_answer_kinds():
    from rs_vqa_plugin.benchmark.answer_kinds import KINDS, answer_words, is_of_kind

    assert is_of_kind("object color", "Red") and not is_of_kind("object color", "concrete")
    assert is_of_kind("count", "7") and not is_of_kind("count", "black")
    assert is_of_kind("reasoning", "no") and not is_of_kind("reasoning", "2")
    assert is_of_kind("object background", "parking lot")
    assert is_of_kind("rural or urban", "urban") and not is_of_kind("rural or urban", "yes")
    assert is_of_kind("something else", "x") is None
    assert len(KINDS) == 8 and all(answer_words(k) for k in KINDS)


def test_legacy_recipe_json_has_no_dense_heads_nor_kind_loss(tmp_path):
    from rs_vqa_plugin.modeling.train_default.recipe import Recipe, legacy_recipe

    saved = Recipe().to_dict()
    for key in ("lambda_dense", "dense_weights", "dense_none_weight", "dense_probe", "lambda_kind"):
        saved.pop(key)
    old = Recipe.from_dict(saved)      # a recipe.json written before these fields existed
    assert not old.uses_dense_heads and old.lambda_kind == 0
    assert not legacy_recipe().uses_dense_heads
    assert Recipe().uses_dense_heads and Recipe().lambda_kind > 0
