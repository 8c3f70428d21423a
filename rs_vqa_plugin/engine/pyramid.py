"""The Dynamic Image Pyramid plan (METHOD.md §2) as pure functions: levels, tile grids, thumbnail.

No GDAL here: the plan only depends on the image size, the tile size B and the pooled token grid g.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

# The coarsest level holds at most COARSEST_TILES x COARSEST_TILES tiles (3B = 1008 px for B = 336).
COARSEST_TILES = 3


@dataclass(frozen=True)
class PyramidLevel:
    """One level of the pyramid, resampled so that its long side fills `cols` (or `rows`) tiles."""

    index: int            # 1 = coarsest; len(levels) = finest (original resolution)
    long_side: int        # nominal long side (1008, 1708, 3416, ...): the source long side x 2^-k
    scale: float          # content pixels per source pixel
    content_width: int    # resampled image inside the tile grid, without padding
    content_height: int
    rows: int             # tile grid
    cols: int

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


def level_long_sides(long_side: int, tile_size: int = 336) -> Tuple[int, ...]:
    """Nominal long sides, coarsest first: L, L/2, L/4, ... while >= 3B, then 3B if still above it."""
    floor_side = COARSEST_TILES * tile_size
    sides = [long_side]
    while True:
        half = sides[-1] / 2.0
        if half < floor_side:
            break
        sides.append(half)
    if sides[-1] > floor_side:
        sides.append(floor_side)
    # L / 2^k is not always an integer; the nominal side is only a label, the grid below is exact.
    return tuple(int(round(s)) for s in reversed(sides))


def _scaled_side(side: int, scale: float) -> int:
    return max(1, int(round(side * scale)))


def plan_pyramid(width: int, height: int, tile_size: int = 336, token_grid: int = 12) -> PyramidPlan:
    """The DIP for a width x height image (or scope window) and tile size B."""
    width, height, tile_size, token_grid = int(width), int(height), int(tile_size), int(token_grid)
    if width < 1 or height < 1:
        raise ValueError(f"image size must be at least 1 x 1, got {width} x {height}")
    if tile_size < 1 or token_grid < 1 or tile_size % token_grid:
        raise ValueError(f"tile size {tile_size} must be a positive multiple of the token grid {token_grid}")
    long_side, short_side = max(width, height), min(width, height)
    wide = width >= height

    t_scale = tile_size / long_side
    t_short = min(tile_size, _scaled_side(short_side, t_scale))
    thumbnail = ThumbnailGeometry(size=tile_size,
                                  content_width=tile_size if wide else t_short,
                                  content_height=t_short if wide else tile_size,
                                  scale=t_scale)

    levels = []
    for index, nominal in enumerate(level_long_sides(long_side, tile_size), start=1):
        # The long side fills its tile count exactly (the reference scales up to the grid).
        long_tiles = max(1, math.ceil(nominal / tile_size))
        scale = long_tiles * tile_size / long_side
        short_content = min(long_tiles * tile_size, _scaled_side(short_side, scale))
        short_tiles = max(1, math.ceil(short_content / tile_size))
        content_long = long_tiles * tile_size
        levels.append(PyramidLevel(
            index=index, long_side=nominal, scale=scale,
            content_width=content_long if wide else short_content,
            content_height=short_content if wide else content_long,
            rows=short_tiles if wide else long_tiles,
            cols=long_tiles if wide else short_tiles))
    return PyramidPlan(source_width=width, source_height=height, tile_size=tile_size,
                       token_grid=token_grid, thumbnail=thumbnail, levels=tuple(levels))


def level_valid_token_shape(plan: PyramidPlan, level) -> Tuple[int, int]:
    """(rows, cols) of the level's stitched token grid that are not entirely padding ("unpad")."""
    lv = level if isinstance(level, PyramidLevel) else plan.level(int(level))
    cell = plan.tile_size / plan.token_grid  # content pixels per pooled token
    return (min(lv.rows * plan.token_grid, math.ceil(lv.content_height / cell)),
            min(lv.cols * plan.token_grid, math.ceil(lv.content_width / cell)))


def tile_content_rect(plan: PyramidPlan, level, row: int, col: int) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a tile's non-padding part in level content pixels; empty if all padding."""
    lv = level if isinstance(level, PyramidLevel) else plan.level(int(level))
    if not (0 <= row < lv.rows and 0 <= col < lv.cols):
        raise IndexError(f"tile ({row}, {col}) is outside level {lv.index}'s {lv.rows} x {lv.cols} grid")
    b = plan.tile_size
    x0, y0 = col * b, row * b
    return x0, y0, min(x0 + b, lv.content_width), min(y0 + b, lv.content_height)
