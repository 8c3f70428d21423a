"""The DIP geometry against the reference's rule (METHOD §2), size by size.

The reference (VisionXLab/LRS-VQA, the pyramid branch of its image processing) computes, for each
resize ratio r (1, 1/2, 1/4, ... down to 3B/L, then the thumbnail's min(B/h, B/w)):
  h' = round(h r), w' = round(w r); rows = ceil(h'/B), cols = ceil(w'/B);
  s = min(rows B / h', cols B / w'); H = round(h' s), W = round(w' s); grid = ceil(H/B) x ceil(W/B)
and the smallest ratio is the thumbnail (pasted top-left in a B x B canvas). The function below
restates that rule step by step, independently of the planner, and the table checks the planner
against it (skip_equal_grids off: the reference keeps every level).
"""

import math

import pytest

from rs_vqa_plugin.engine.pyramid import level_valid_token_shape, plan_pyramid


def reference_levels(w, h, b=336):
    """[(resized_w, resized_h, rows, cols)] finest first, and the thumbnail's (w, h)."""
    long_side = max(h, w)
    min_scale = min(1008 / long_side * (b / 336), 1.0)
    ratios, current = [], 1.0
    while current >= min_scale:
        ratios.append(current)
        current /= 2
    if ratios[-1] > min_scale:
        ratios.append(min_scale)
    ratios.append(min(b / h, b / w))
    ratios = sorted(set(ratios), reverse=True)
    out = []
    for ratio in ratios:
        h_, w_ = max(1, round(h * ratio)), max(1, round(w * ratio))
        hb, wb = math.ceil(h_ / b), math.ceil(w_ / b)
        s = min(hb * b / h_, wb * b / w_)
        rh, rw = round(h_ * s), round(w_ * s)
        out.append((rw, rh, math.ceil(rh / b), math.ceil(rw / b)))
    thumb_ratio = ratios[-1]
    thumb = (round(w * thumb_ratio), round(h * thumb_ratio))
    return out[:-1], thumb


SIZES = [
    # square
    (1008, 1008), (2016, 2016), (2017, 2017), (4000, 4000), (4040, 4040), (8192, 8192),
    (10000, 10000), (27328, 27328),
    # wide
    (4000, 3000), (5000, 1009), (27328, 20000), (12000, 7000), (6000, 4500), (3500, 2400),
    (1500, 1000), (9999, 5001), (20000, 1500), (1500, 40),
    # tall
    (3000, 4000), (1009, 5000), (7000, 12000), (4500, 6000), (2400, 3500), (640, 4800),
    # tiny and small
    (1, 1), (111, 111), (200, 100), (335, 335), (337, 500), (671, 337), (1007, 999),
    # not multiples of 336, odd
    (4097, 3073), (13337, 8191), (2689, 2687), (1345, 2017),
]


@pytest.mark.parametrize("width,height", SIZES)
def test_levels_and_thumbnail_match_the_reference(width, height):
    levels, thumb = reference_levels(width, height)
    plan = plan_pyramid(width, height, skip_equal_grids=False)
    if max(width, height) == 336:
        pytest.skip("one tile: the reference has the thumbnail only")
    ours = [(lv.content_width, lv.content_height, lv.rows, lv.cols) for lv in reversed(plan.levels)]
    if max(width, height) < 336:
        # The reference's only level is the image enlarged to one tile; ours too.
        assert ours == levels
    else:
        assert ours == levels, f"{width} x {height}"
    t = plan.thumbnail
    assert (t.content_width, t.content_height) == thumb


def test_known_differences_from_the_old_long_side_rule():
    """The figures the fidelity review quoted: 27,328 x 20,000 level 2 is 4 x 6 tiles, 1836 x 1344
    px (the long-side rule gave 5 x 6, 2016 x 1475); the finest level has 4,920 tiles."""
    plan = plan_pyramid(27328, 20000, skip_equal_grids=False)
    lv2 = plan.level(2)
    assert (lv2.rows, lv2.cols, lv2.content_width, lv2.content_height) == (4, 6, 1836, 1344)
    assert plan.finest.tile_count() == 4920
    assert (plan.finest.content_width, plan.finest.content_height) == (27547, 20160)


def test_equal_grids_are_skipped_when_asked():
    # 2,017 px: ratios 1/2 and 1008/2017 both round to 1008 px, two identical 3 x 3 levels.
    full = plan_pyramid(2017, 2017, skip_equal_grids=False)
    lean = plan_pyramid(2017, 2017)
    assert [lv.rows for lv in full.levels] == [3, 3, 7]
    assert [lv.rows for lv in lean.levels] == [3, 7]
    assert [lv.index for lv in lean.levels] == [1, 2]
    geometry = lambda lv: (lv.content_width, lv.content_height, lv.rows, lv.cols)  # noqa: E731
    assert geometry(lean.finest) == geometry(full.finest)
    assert geometry(lean.level(1)) == geometry(full.level(1))
    # 4,040 px: 1008 and 1010 px are close, but 1010 px fills 4 x 4 tiles (1344 px): kept.
    assert [lv.rows for lv in plan_pyramid(4040, 4040).levels] == [3, 4, 7, 13]


def reference_unpad(content_w, content_h, grid_rows, grid_cols):
    """The reference's unpad of a stitched token grid: crop the side with padding to
    int(content * scale) tokens, where scale comes from the other side."""
    if content_w / content_h > grid_cols / grid_rows:
        return int(content_h * (grid_cols / content_w)), grid_cols
    return grid_rows, int(content_w * (grid_rows / content_h))


@pytest.mark.parametrize("width,height", [s for s in SIZES if max(s) > 336])
def test_floor_unpad_matches_the_reference(width, height):
    plan = plan_pyramid(width, height, unpad="floor", skip_equal_grids=False)
    for lv in plan.levels:
        want = reference_unpad(lv.content_width, lv.content_height, lv.rows * 12, lv.cols * 12)
        want = (max(1, want[0]), max(1, want[1]))
        assert level_valid_token_shape(plan, lv) == want
    ceil_plan = plan_pyramid(width, height, skip_equal_grids=False)
    for lv in ceil_plan.levels:
        rows, cols = level_valid_token_shape(ceil_plan, lv)
        assert rows == min(lv.rows * 12, math.ceil(lv.content_height / 28))
        assert cols == min(lv.cols * 12, math.ceil(lv.content_width / 28))
