"""Selection (top-alpha, next-level tiles, N_max) and sequence assembly, as pure functions."""

from __future__ import annotations

import numpy as np
import pytest

from rs_vqa_plugin.engine.pyramid import level_valid_token_shape, plan_pyramid
from rs_vqa_plugin.engine.select import exceeds_n_max, score_ranks, tiles_under_tokens, top_alpha
from rs_vqa_plugin.engine.sequence import assemble, level_tokens


def test_top_alpha_keeps_highest_in_raster_order():
    scores = np.array([0.1, 0.9, 0.3, 0.8, 0.2, 0.7, 0.0, 0.5])
    assert top_alpha(scores, 0.25).tolist() == [1, 3]
    assert top_alpha(scores, 0.3).tolist() == [1, 3, 5]          # ceil(2.4) = 3


def test_top_alpha_ties_are_deterministic():
    assert top_alpha(np.ones(8), 0.25).tolist() == [0, 1]
    assert score_ranks(np.array([0.5, 0.9, 0.5])).tolist() == [2, 1, 3]


def test_top_alpha_rejects_bad_alpha():
    with pytest.raises(ValueError):
        top_alpha(np.ones(4), 0.0)


def test_kept_token_maps_to_the_tile_under_it():
    plan = plan_pyramid(4000, 4000)                        # levels 3x3, 6x6, 12x12 tiles
    # Level-1 token (0, 0) covers content x in [0, 28) of 1008 -> level-2 tile (0, 0) only.
    assert tiles_under_tokens(plan, 1, [0], [0], 2) == [(0, 0)]
    # Token column 5 ends exactly on a level-2 tile edge (168 * 2 = 336): no neighbour.
    assert tiles_under_tokens(plan, 1, [0], [5], 2) == [(0, 0)]
    # Token column 11 (last of tile 0): x in [308, 336) -> level-2 x in [616, 672) -> tile 1.
    assert tiles_under_tokens(plan, 1, [0], [11], 2) == [(0, 1)]
    # Row 17, column 35 (bottom-right corner) -> the last level-2 tile.
    assert tiles_under_tokens(plan, 1, [35], [35], 2) == [(5, 5)]


def test_all_tokens_select_every_content_tile():
    plan = plan_pyramid(3000, 1100)                        # wide image, padded bottom rows
    rows, cols = np.meshgrid(np.arange(level_valid_token_shape(plan, 1)[0]),
                             np.arange(level_valid_token_shape(plan, 1)[1]), indexing="ij")
    tiles = tiles_under_tokens(plan, 1, rows.ravel(), cols.ravel(), 2)
    nxt = plan.level(2)
    assert tiles == [(r, c) for r in range(nxt.rows) for c in range(nxt.cols)]


def test_n_max():
    assert not exceeds_n_max([(0, 0)] * 80, 80)
    assert exceeds_n_max([(0, 0)] * 81, 80)


def _features(n_tiles, g, d, start=0):
    values = np.arange(start, start + n_tiles * g * g, dtype=np.float32)
    return np.repeat(values[:, None], d, axis=1).reshape(n_tiles, g, g, d)


def test_partial_selection_forms_rows_by_tile_row_then_token_row():
    plan = plan_pyramid(4000, 4000, tile_size=336, token_grid=12)
    tiles = [(0, 1), (1, 0), (1, 2)]
    tokens = level_tokens(plan, 1, tiles, _features(3, 12, 4), level_valid_token_shape(plan, 1))
    assert len(tokens) == 3 * 144
    # First stitched row: tile (0,1) alone; rows 12..23: tile (1,0) then tile (1,2), left to right.
    assert tokens.rows[:12].tolist() == [0] * 12 and tokens.cols[:12].tolist() == list(range(12, 24))
    row12 = tokens.cols[tokens.rows == 12].tolist()
    assert row12 == list(range(0, 12)) + list(range(24, 36))
    assert tokens.row_count() == 24


def test_unpad_drops_tokens_entirely_in_padding():
    plan = plan_pyramid(1000, 500, tile_size=336, token_grid=12)
    lv = plan.level(1)
    valid = level_valid_token_shape(plan, 1)
    tokens = level_tokens(plan, 1, lv.tiles(), _features(lv.tile_count(), 12, 2), valid)
    assert valid[0] < lv.rows * 12
    assert len(tokens) == valid[0] * valid[1]
    assert tokens.rows.max() == valid[0] - 1


def test_assemble_places_newlines_and_marks_hr_tokens():
    d = 3
    plan = plan_pyramid(4000, 4000, tile_size=24, token_grid=2)
    tokens = level_tokens(plan, 1, [(0, 0), (2, 1)], _features(2, 2, d, start=10),
                          level_valid_token_shape(plan, 1)).subset([0, 1, 3, 6])
    # Kept: tile (0,0) tokens (0,0) (0,1) (1,1); tile (2,1) token (5,2) -> rows 0, 1, 5.
    prefix, suffix = np.zeros((2, d)), np.full((3, d), -5.0)
    thumb = np.full((4, d), -1.0)
    seq = assemble(prefix, thumb, np.full(d, -2.0), np.full(d, -3.0), tokens, suffix)
    assert seq.hr_tokens == 4 and seq.newline_tokens == 3 and seq.separator_tokens == 1
    assert seq.length == 2 + 4 + 1 + 4 + 3 + 3
    assert seq.vision_tokens == 4 + 4 + 3
    block = seq.embeds[7:14, 0].tolist()
    assert block == [10.0, 11.0, -3.0, 13.0, -3.0, 16.0, -3.0]
    assert seq.hr_positions.tolist() == [7, 8, 10, 12]
    assert seq.hr_mask.sum() == 4 and not seq.hr_mask[9]
    assert seq.query_index == seq.length - 1


def test_assemble_thumbnail_only_has_no_separator():
    d = 2
    seq = assemble(np.zeros((1, d)), np.ones((4, d)), np.zeros(d), np.zeros(d), None, np.ones((2, d)))
    assert seq.length == 7 and seq.separator_tokens == 0 and not seq.hr_mask.any()
