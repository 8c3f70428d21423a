"""The Dynamic Image Pyramid plan (METHOD.md §2) as pure functions: levels, tile grids, thumbnail.

No GDAL here: the plan only depends on the image size, the tile size B and the pooled token grid g.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

# The coarsest level holds at most COARSEST_TILES x COARSEST_TILES tiles (3B = 1008 px for B = 336).
COARSEST_TILES = 3
# How partly padded token rows/columns are treated ("unpad"): kept (ours) or dropped (reference).
UNPAD_RULES = ("ceil", "floor")


@dataclass(frozen=True)
class PyramidLevel:
    """One level of the pyramid: the image resampled so that one side fills its tiles exactly."""

    index: int            # 1 = coarsest; len(levels) = finest (original resolution)
    long_side: int        # nominal long side (1008, 1708, 3416, ...): the source long side x 2^-k
    scale: float          # content pixels per source pixel along the long side (the short
                          # side's rounding differs by < 1 px: scale_x / scale_y are exact)
    content_width: int    # resampled image inside the tile grid, without padding
    content_height: int
    rows: int             # tile grid
    cols: int
    scale_x: float = 0.0  # content_width / source width: the exact per-axis scales of the read
    scale_y: float = 0.0

    def tile_count(self) -> int:
        return self.rows * self.cols

    def tiles(self):
        """All (row, col) tile indices in raster order."""
        return [(r, c) for r in range(self.rows) for c in range(self.cols)]


@dataclass(frozen=True)
class ThumbnailGeometry:
    """The whole image with its long side scaled to B, pasted top-left in a B x B canvas."""

    size: int
    content_width: int
    content_height: int
    scale: float


@dataclass(frozen=True)
class PyramidPlan:
    source_width: int     # of the scope window (whole raster by default)
    source_height: int
    tile_size: int        # B
    token_grid: int       # pooled tokens per tile side (g)
    thumbnail: ThumbnailGeometry
    levels: Tuple[PyramidLevel, ...]
    unpad: str = "ceil"   # see level_valid_token_shape

    def level(self, index: int) -> PyramidLevel:
        if not 1 <= index <= len(self.levels):
            raise IndexError(f"pyramid level {index} does not exist (levels 1..{len(self.levels)})")
        return self.levels[index - 1]

    @property
    def finest(self) -> PyramidLevel:
        return self.levels[-1]

    def to_dict(self) -> dict:
        """JSON-ready description (used by `pyramid --json`)."""
        t = self.thumbnail
        return {
            "source_size": [self.source_width, self.source_height],
            "tile_size": self.tile_size,
            "token_grid": self.token_grid,
            "thumbnail": {"size": t.size, "content_size": [t.content_width, t.content_height],
                          "scale": t.scale},
            "levels": [{"index": lv.index, "long_side": lv.long_side, "scale": lv.scale,
                        "content_size": [lv.content_width, lv.content_height],
                        "tile_grid": [lv.rows, lv.cols], "tiles": lv.tile_count(),
                        "valid_token_grid": list(level_valid_token_shape(self, lv))}
                       for lv in self.levels],
        }


def level_ratios(long_side: int, tile_size: int = 336) -> Tuple[float, ...]:
    """Resize ratios of the levels, finest first, as the reference computes them: 1, 1/2, 1/4, ...
    while the ratio stays >= 3B / L, then 3B / L itself if the last one is still above it."""
    min_ratio = min(COARSEST_TILES * tile_size / long_side, 1.0)
    ratios, ratio = [], 1.0
    while ratio >= min_ratio:
        ratios.append(ratio)
        ratio /= 2
    if ratios[-1] > min_ratio:
        ratios.append(min_ratio)
    return tuple(ratios)


def level_long_sides(long_side: int, tile_size: int = 336) -> Tuple[int, ...]:
    """Nominal long sides, coarsest first: L, L/2, L/4, ... while >= 3B, then 3B if still above it."""
    return tuple(_scaled_side(long_side, r) for r in reversed(level_ratios(long_side, tile_size)))


def _scaled_side(side: int, scale: float) -> int:
    # Python's round (half to even), as the reference; never below one pixel (thin strips).
    return max(1, int(round(side * scale)))


def level_geometry(width: int, height: int, ratio: float, tile_size: int) -> Tuple[int, int, int, int]:
    """(content_width, content_height, rows, cols) of one level, the reference's rule: scale the
    image by `ratio` (rounded), then enlarge it by the smaller of the two factors that make a side
    fill its ceil-ed tile count (that side fills its tiles exactly, the other is padded), round
    again and count the tiles."""
    h, w = _scaled_side(height, ratio), _scaled_side(width, ratio)
    rows, cols = math.ceil(h / tile_size), math.ceil(w / tile_size)
    grow = min(rows * tile_size / h, cols * tile_size / w)
    content_h, content_w = _scaled_side(h, grow), _scaled_side(w, grow)
    return content_w, content_h, math.ceil(content_h / tile_size), math.ceil(content_w / tile_size)


def plan_pyramid(width: int, height: int, tile_size: int = 336, token_grid: int = 12,
                 unpad: str = "ceil", skip_equal_grids: bool = True) -> PyramidPlan:
    """The DIP for a width x height image (or scope window) and tile size B.

    unpad: how partly padded token rows/columns are treated (see level_valid_token_shape).
    skip_equal_grids: drop a level whose tile grid equals the next coarser level's (e.g. 1008 and
    1010 px, both 3 x 3 tiles): zooming into it would change nothing but cost."""
    width, height, tile_size, token_grid = int(width), int(height), int(tile_size), int(token_grid)
    if width < 1 or height < 1:
        raise ValueError(f"image size must be at least 1 x 1, got {width} x {height}")
    if tile_size < 1 or token_grid < 1 or tile_size % token_grid:
        raise ValueError(f"tile size {tile_size} must be a positive multiple of the token grid {token_grid}")
    if unpad not in UNPAD_RULES:
        raise ValueError(f"unpad must be one of {', '.join(UNPAD_RULES)}, got {unpad!r}")
    long_side = max(width, height)
    ratios = level_ratios(long_side, tile_size)

    # The thumbnail is the smallest of the reference's ratios: long side B, or the image as it is
    # when it is smaller than one tile (never enlarged), pasted top-left in a B x B canvas.
    t_ratio = min(tile_size / long_side, ratios[-1])
    thumbnail = ThumbnailGeometry(size=tile_size,
                                  content_width=min(tile_size, _scaled_side(width, t_ratio)),
                                  content_height=min(tile_size, _scaled_side(height, t_ratio)),
                                  scale=t_ratio)

    levels: list = []
    for ratio in reversed(ratios):
        content_w, content_h, rows, cols = level_geometry(width, height, ratio, tile_size)
        if skip_equal_grids and levels and (levels[-1].rows, levels[-1].cols) == (rows, cols):
            continue
        levels.append(PyramidLevel(
            index=len(levels) + 1, long_side=_scaled_side(long_side, ratio),
            scale=content_w / width if width >= height else content_h / height,
            content_width=content_w, content_height=content_h, rows=rows, cols=cols,
            scale_x=content_w / width, scale_y=content_h / height))
    return PyramidPlan(source_width=width, source_height=height, tile_size=tile_size,
                       token_grid=token_grid, thumbnail=thumbnail, levels=tuple(levels),
                       unpad=unpad)


def level_valid_token_shape(plan: PyramidPlan, level) -> Tuple[int, int]:
    """(rows, cols) of the level's stitched token grid that are kept after "unpad".

    'ceil' keeps every token row/column that holds any content. 'floor' is the reference's
    unpad: only the padded side is cropped, to floor(content * g / B) tokens, so a partly padded
    row/column is dropped (at least one is kept)."""
    lv = level if isinstance(level, PyramidLevel) else plan.level(int(level))
    g, b = plan.token_grid, plan.tile_size
    grid_rows, grid_cols = lv.rows * g, lv.cols * g
    if plan.unpad == "floor":
        if lv.content_width / lv.content_height > grid_cols / grid_rows:
            return max(1, min(grid_rows, int(lv.content_height * grid_cols / lv.content_width))), grid_cols
        return grid_rows, max(1, min(grid_cols, int(lv.content_width * grid_rows / lv.content_height)))
    cell = b / g  # content pixels per pooled token
    return (min(grid_rows, math.ceil(lv.content_height / cell)),
            min(grid_cols, math.ceil(lv.content_width / cell)))


def tile_content_rect(plan: PyramidPlan, level, row: int, col: int) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a tile's non-padding part in level content pixels; empty if all padding."""
    lv = level if isinstance(level, PyramidLevel) else plan.level(int(level))
    if not (0 <= row < lv.rows and 0 <= col < lv.cols):
        raise IndexError(f"tile ({row}, {col}) is outside level {lv.index}'s {lv.rows} x {lv.cols} grid")
    b = plan.tile_size
    x0, y0 = col * b, row * b
    return x0, y0, min(x0 + b, lv.content_width), min(y0 + b, lv.content_height)
