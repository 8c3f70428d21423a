"""Training views of one question: which pyramid level, which tiles, how many of their tokens.

The paper trains on the thumbnail + all level-1 tiles ('level1'). Alone, that never shows the
model a small object at the size it has in the deeper levels where `dip` ends, so we add 'zoom'
views: the tiles around the asked object at a deeper level of the same whole-scene pyramid
(with the whole-scene thumbnail, as in dip's sequences), sometimes with distractor tiles, and
sometimes pruned to alpha of their tokens, the object's tokens kept first, as dip's final
sequence is. 'search' views are what dip's sequences look like at a deeper level: the asked
object's tiles among many others in a few clusters (dip zooms into several candidate regions at
once), so the RFM learns to find the object among up to N_max-like tile counts, not only inside
a small window around it. Pure functions of the plan, the box and a numpy Generator."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ...engine.geo import level_cell_to_source

Box = Tuple[float, float, float, float]
# A zoom view ends at the finest level this often (dip's final sequences mostly come from there).
P_FINEST = 0.45
P_DISTRACTORS = 0.4
P_PRUNED = 0.5


@dataclass
class ViewSpec:
    kind: str                        # 'thumbnail' | 'level1' | 'zoom'
    level: int
    tiles: List[Tuple[int, int]]     # raster order
    keep_fraction: float             # 1.0: every token of the tiles; else prune (box first)


def box_tiles(plan, level: int, box: Box) -> Tuple[int, int, int, int]:
    """(r0, r1, c0, c1) inclusive tile range of `level` whose content touches the source box."""
    lv = plan.level(level)
    b = plan.tile_size
    x1, x2 = (float(v) * lv.scale_x for v in box[0::2])
    y1, y2 = (float(v) * lv.scale_y for v in box[1::2])
    c0 = min(max(int(math.floor(x1 / b)), 0), lv.cols - 1)
    c1 = min(max(int(math.ceil(x2 / b)) - 1, c0), lv.cols - 1)
    r0 = min(max(int(math.floor(y1 / b)), 0), lv.rows - 1)
    r1 = min(max(int(math.ceil(y2 / b)) - 1, r0), lv.rows - 1)
    return r0, r1, c0, c1


def zoom_levels(plan) -> List[int]:
    return list(range(2, len(plan.levels) + 1))


def zoom_view(plan, box: Box, rng: np.random.Generator, max_tiles: int, alpha: float,
              level: Optional[int] = None) -> Optional[ViewSpec]:
    """Tiles around the box at a deeper level (None when the pyramid has a single level)."""
    levels = zoom_levels(plan)
    if not levels:
        return None
    if level is None:
        finest = levels[-1]
        level = finest if (rng.random() < P_FINEST or len(levels) == 1) else int(
            rng.choice(levels[:-1]))
    lv = plan.level(level)
    r0, r1, c0, c1 = box_tiles(plan, level, box)
    # Random margins: the object is not always central, nor alone.
    r0, c0 = max(0, r0 - int(rng.integers(0, 2))), max(0, c0 - int(rng.integers(0, 2)))
    r1, c1 = min(lv.rows - 1, r1 + int(rng.integers(0, 2))), min(lv.cols - 1, c1 + int(rng.integers(0, 2)))
    side = max(1, int(math.isqrt(max_tiles)))
    # A big object at a coarse level could exceed the cap: keep the window around its centre.
    if r1 - r0 + 1 > side:
        mid = (r0 + r1) // 2
        r0, r1 = mid - (side - 1) // 2, mid - (side - 1) // 2 + side - 1
    if c1 - c0 + 1 > side:
        mid = (c0 + c1) // 2
        c0, c1 = mid - (side - 1) // 2, mid - (side - 1) // 2 + side - 1
    tiles = {(r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)}
    if rng.random() < P_DISTRACTORS and len(tiles) < max_tiles:
        extra = int(rng.integers(1, max_tiles - len(tiles) + 1))
        for _ in range(extra):
            tiles.add((int(rng.integers(0, lv.rows)), int(rng.integers(0, lv.cols))))
    keep = alpha if rng.random() < P_PRUNED else 1.0
    return ViewSpec("zoom", level, sorted(tiles), keep)


def _block(rows: int, cols: int, r: int, c: int, half: int):
    """Tiles of the (2*half+1)^2 block centred on (r, c), clipped to the level's grid."""
    return {(i, j) for i in range(max(0, r - half), min(rows, r + half + 1))
            for j in range(max(0, c - half), min(cols, c + half + 1))}


def search_view(plan, box: Box, rng: np.random.Generator, max_tiles: int) -> Optional[ViewSpec]:
    """The object's tiles plus 1-3 other clusters of tiles at a random deeper level, all tokens:
    8..max_tiles tiles in all, in raster order."""
    levels = zoom_levels(plan)
    if not levels:
        return None
    level = int(rng.choice(levels))
    lv = plan.level(level)
    r0, r1, c0, c1 = box_tiles(plan, level, box)
    rc, cc = (r0 + r1) // 2, (c0 + c1) // 2
    # The object's own cluster: a block around it (dip's kept tokens near the object map to it).
    tiles = _block(lv.rows, lv.cols, rc, cc, int(rng.integers(0, 2)))
    want = int(rng.integers(min(8, max_tiles), max_tiles + 1))
    want = min(want, lv.rows * lv.cols)
    for _ in range(int(rng.integers(1, 4))):
        if len(tiles) >= want:
            break
        r, c = int(rng.integers(0, lv.rows)), int(rng.integers(0, lv.cols))
        tiles |= _block(lv.rows, lv.cols, r, c, int(rng.integers(0, 3)))
    while len(tiles) < want:        # scattered singles, as a diffuse RFM would also select
        tiles.add((int(rng.integers(0, lv.rows)), int(rng.integers(0, lv.cols))))
    if len(tiles) > max_tiles:      # drop far tiles first, never the object's
        far = sorted(tiles, key=lambda t: -max(abs(t[0] - rc), abs(t[1] - cc)))
        tiles -= set(far[:len(tiles) - max_tiles])
    return ViewSpec("search", level, sorted(tiles), 1.0)


def level1_view(plan) -> ViewSpec:
    return ViewSpec("level1", 1, plan.level(1).tiles(), 1.0)


def token_box_flags(plan, level: int, rows: np.ndarray, cols: np.ndarray,
                    box: Optional[Box]) -> np.ndarray:
    """True for tokens whose source footprint overlaps the box (the heat cells' mapping)."""
    flags = np.zeros(len(rows), dtype=bool)
    if box is None or len(rows) == 0:
        return flags
    cell = plan.tile_size / plan.token_grid
    bx1, by1, bx2, by2 = (float(v) for v in box)
    for i, (r, c) in enumerate(zip(np.asarray(rows).tolist(), np.asarray(cols).tolist())):
        x0, y0, x1, y1 = level_cell_to_source(plan, level, c * cell, r * cell,
                                              (c + 1) * cell, (r + 1) * cell)
        flags[i] = x0 < bx2 and x1 > bx1 and y0 < by2 and y1 > by1
    return flags


def token_box_distance(plan, level: int, rows: np.ndarray, cols: np.ndarray,
                       box: Optional[Box]) -> np.ndarray:
    """Gap between each token's footprint and the box, in token cells of that level (0: touching;
    inf without a box): the soft grounding target decays with it, so the RFM's runners-up sit
    next to the object and the next level's tiles stay few."""
    dist = np.full(len(rows), np.inf, dtype=np.float32)
    if box is None or len(rows) == 0:
        return dist
    cell = plan.tile_size / plan.token_grid
    side = cell / plan.level(level).scale          # a token cell in source pixels
    bx1, by1, bx2, by2 = (float(v) for v in box)
    for i, (r, c) in enumerate(zip(np.asarray(rows).tolist(), np.asarray(cols).tolist())):
        x0, y0, x1, y1 = level_cell_to_source(plan, level, c * cell, r * cell,
                                              (c + 1) * cell, (r + 1) * cell)
        dx = max(0.0, bx1 - x1, x0 - bx2)
        dy = max(0.0, by1 - y1, y0 - by2)
        dist[i] = float(np.hypot(dx, dy)) / side
    return dist


def prune_keep(box_flags: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices to keep: ceil(fraction * N) tokens, the box's tokens first, then random others."""
    n = len(box_flags)
    k = max(1, int(math.ceil(fraction * n)))
    if k >= n:
        return np.arange(n)
    box = np.flatnonzero(box_flags)
    rest = np.flatnonzero(~box_flags)
    rng.shuffle(box)
    rng.shuffle(rest)
    chosen = np.concatenate([box, rest])[:k]
    return np.sort(chosen)


def views_for_question(plan, box: Optional[Box], kinds: Sequence[str], rng: np.random.Generator,
                       max_tiles: int, alpha: float, search_tiles: int = 32) -> List[ViewSpec]:
    views: List[ViewSpec] = []
    for kind in kinds:
        if kind == "thumbnail":
            # The thumbnail alone (what mode `thumbnail` gives the LLM): a fair baseline needs
            # the model to have seen such sequences too.
            views.append(ViewSpec("thumbnail", 0, [], 1.0))
        elif kind == "level1":
            views.append(level1_view(plan))
        elif kind == "zoom" and box is not None:
            view = zoom_view(plan, box, rng, max_tiles, alpha)
            if view is not None:
                views.append(view)
        elif kind == "search" and box is not None:
            view = search_view(plan, box, rng, search_tiles)
            if view is not None:
                views.append(view)
    return views
