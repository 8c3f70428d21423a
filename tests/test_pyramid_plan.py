"""The DIP plan (METHOD §2): level long sides, tile grids, thumbnail and unpadded token grids."""

import math

import pytest

from rs_vqa_plugin.engine.pyramid import (level_long_sides, level_valid_token_shape, plan_pyramid,
                                          tile_content_rect)


def test_27328_levels_match_the_method():
    plan = plan_pyramid(27328, 27328, skip_equal_grids=False)
    assert [lv.long_side for lv in plan.levels] == [1008, 1708, 3416, 6832, 13664, 27328]
    assert [lv.index for lv in plan.levels] == [1, 2, 3, 4, 5, 6]
    coarsest, finest = plan.level(1), plan.level(6)
    assert (coarsest.rows, coarsest.cols, coarsest.tile_count()) == (3, 3, 9)
    # Long side fills the tile grid exactly: ceil(27328 / 336) = 82 tiles.
    assert (finest.cols, finest.content_width) == (82, 82 * 336)
    assert finest.scale == pytest.approx(82 * 336 / 27328)
    assert plan.level(2).cols == math.ceil(1708 / 336)


@pytest.mark.parametrize("width,height", [(4000, 3000), (3000, 4000), (10000, 10000), (1500, 40),
                                          (2688, 2688), (1008, 500), (5000, 1009)])
def test_grid_invariants(width, height):
    plan = plan_pyramid(width, height, tile_size=336, skip_equal_grids=False)
    long_side = max(width, height)
    assert plan.levels[-1].long_side == long_side
    assert plan.levels[0].long_side == min(long_side, 1008)
    assert plan.levels[0].rows <= 3 and plan.levels[0].cols <= 3
    for lv in plan.levels:
        # One side fills its tiles exactly, the other is padded bottom/right by less than a tile.
        assert lv.content_width == lv.cols * 336 or lv.content_height == lv.rows * 336
        assert lv.rows == math.ceil(lv.content_height / 336)
        assert lv.cols == math.ceil(lv.content_width / 336)
        # Both sides are scaled by the same factor, up to the rounding of each.
        assert abs(lv.scale_x * width - lv.scale_y * width) <= 1.5 * width / min(width, height)
    scales = [lv.scale for lv in plan.levels]
    assert scales == sorted(scales)


def test_halving_rule_and_extra_coarsest_level():
    assert level_long_sides(2016) == (1008, 2016)            # exact halving reaches 3B
    assert level_long_sides(1500) == (1008, 1500)            # one extra level of exactly 3B
    assert level_long_sides(1008) == (1008,)
    assert level_long_sides(900) == (900,)                   # below 3B: the original only
    assert level_long_sides(4000, tile_size=224) == (672, 1000, 2000, 4000)


def test_thumbnail_geometry_keeps_aspect():
    plan = plan_pyramid(4000, 3000)
    t = plan.thumbnail
    assert (t.size, t.content_width, t.content_height) == (336, 336, 252)
    assert t.scale == pytest.approx(336 / 4000)
    tall = plan_pyramid(100, 4000).thumbnail
    assert (tall.content_width, tall.content_height) == (8, 336)


@pytest.mark.parametrize("width,height", [(1, 1), (200, 100), (335, 335)])
def test_tiny_images_give_a_single_upsampled_level(width, height):
    plan = plan_pyramid(width, height)
    assert len(plan.levels) == 1
    lv = plan.level(1)
    assert (lv.rows, lv.cols) == (1, 1)
    assert max(lv.content_width, lv.content_height) == 336


def test_valid_token_shape_drops_padding_only_tokens():
    plan = plan_pyramid(4000, 3000)
    lv = plan.level(1)                       # 1008 x 756 content in 3 x 3 tiles
    assert (lv.rows, lv.cols) == (3, 3)
    assert level_valid_token_shape(plan, 1) == (27, 36)     # 756 / 28 = 27 token rows
    plan = plan_pyramid(1500, 40)
    assert level_valid_token_shape(plan, plan.level(1)) == (1, 36)   # 27 px tall: one partial row


def test_tile_content_rect_clips_padding():
    plan = plan_pyramid(4000, 3000)
    assert tile_content_rect(plan, 1, 0, 0) == (0, 0, 336, 336)
    assert tile_content_rect(plan, 1, 2, 2) == (672, 672, 1008, 756)
    with pytest.raises(IndexError):
        tile_content_rect(plan, 1, 3, 0)
    with pytest.raises(IndexError):
        plan.level(4)


def test_rejects_nonsense_sizes():
    with pytest.raises(ValueError):
        plan_pyramid(0, 10)
    with pytest.raises(ValueError):
        plan_pyramid(10, 10, tile_size=100, token_grid=12)


def test_plan_is_json_ready():
    import json
    d = json.loads(json.dumps(plan_pyramid(27328, 20000).to_dict()))
    assert d["levels"][0]["tile_grid"][1] == 3
    assert len(d["levels"]) == 6
