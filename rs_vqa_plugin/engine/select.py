"""Algorithm 1's selection steps (METHOD.md §5) as pure numpy functions.

Top-alpha of a level's HR tokens, the next-level tiles under the kept tokens (proportional
footprint in normalised image coordinates) and the N_max check. Newline tokens never reach
these functions: callers pass HR token scores only.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

from .cost import keep_count

# Tolerance in tile units so that a footprint ending exactly on a tile edge does not claim the
# neighbouring tile through floating-point noise.
_EDGE_EPS = 1e-6


def top_alpha(scores: np.ndarray, alpha: float, rounding: str = "ceil") -> np.ndarray:
    """Indices of the ceil(alpha * N) (or, rounding 'floor', int(alpha * N) as the reference)
    highest scores, returned in ascending (raster) order.

    Ties are broken by position (a stable sort), so a run is deterministic."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not 0.0 < float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    k = keep_count(scores.size, alpha, rounding)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    return np.sort(order[:k])


def score_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each score (1 = highest), ties broken by position."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(scores.size, dtype=np.int64)
    ranks[order] = np.arange(1, scores.size + 1)
    return ranks


def token_rects_normalised(plan, level_index: int, rows: np.ndarray, cols: np.ndarray):
    """(u0, v0, u1, v1) of tokens in [0, 1] image coordinates of the level's content (no padding).

    rows / cols index the level's stitched token grid; a token's cell is B/g content pixels,
    clipped to the content at the right and bottom edges."""
    lv = plan.level(level_index)
    cell = plan.tile_size / plan.token_grid
    rows = np.asarray(rows, dtype=np.float64)
    cols = np.asarray(cols, dtype=np.float64)
    x0 = np.minimum(cols * cell, lv.content_width)
    x1 = np.minimum((cols + 1) * cell, lv.content_width)
    y0 = np.minimum(rows * cell, lv.content_height)
    y1 = np.minimum((rows + 1) * cell, lv.content_height)
    return (x0 / lv.content_width, y0 / lv.content_height,
            x1 / lv.content_width, y1 / lv.content_height)


def image_xy(plan, level: int, rows, cols, length: int, hr_positions) -> np.ndarray:
    """[length, 2] float32: at `hr_positions` the normalised (x, y) centre of each token of the
    level (rows, cols of its stitched grid), 0 elsewhere. The RFM's image-position input."""
    u0, v0, u1, v1 = token_rects_normalised(plan, level, rows, cols)
    xy = np.zeros((int(length), 2), dtype=np.float32)
    xy[np.asarray(hr_positions)] = np.stack([(u0 + u1) / 2, (v0 + v1) / 2], axis=1)
    return xy


def tiles_under_tokens(plan, level_index: int, rows: np.ndarray, cols: np.ndarray,
                       next_level_index: int) -> List[Tuple[int, int]]:
    """Next-level tiles whose content footprint overlaps the footprint of any given token.

    Proportional mapping: a token's rectangle in normalised image coordinates is scaled to the
    next level's content size and intersected with its B x B tile grid. Sorted in raster order."""
    nxt = plan.level(next_level_index)
    rows = np.asarray(rows)
    if rows.size == 0:
        return []
    u0, v0, u1, v1 = token_rects_normalised(plan, level_index, rows, cols)
    b = float(plan.tile_size)
    c_lo = np.floor(u0 * nxt.content_width / b + _EDGE_EPS).astype(np.int64)
    c_hi = np.ceil(u1 * nxt.content_width / b - _EDGE_EPS).astype(np.int64) - 1
    r_lo = np.floor(v0 * nxt.content_height / b + _EDGE_EPS).astype(np.int64)
    r_hi = np.ceil(v1 * nxt.content_height / b - _EDGE_EPS).astype(np.int64) - 1
    c_lo, r_lo = np.clip(c_lo, 0, nxt.cols - 1), np.clip(r_lo, 0, nxt.rows - 1)
    c_hi = np.clip(np.maximum(c_hi, c_lo), 0, nxt.cols - 1)
    r_hi = np.clip(np.maximum(r_hi, r_lo), 0, nxt.rows - 1)
    hit = np.zeros((nxt.rows, nxt.cols), dtype=bool)
    for a, b_, c, d in zip(r_lo, r_hi, c_lo, c_hi):
        hit[a:b_ + 1, c:d + 1] = True
    return [(int(r), int(c)) for r, c in zip(*np.nonzero(hit))]


def exceeds_n_max(tiles, n_max: int) -> bool:
    """True when zooming would need more than N_max tiles: attention too scattered to zoom."""
    return len(tiles) > int(n_max)
