"""Read the thumbnail and any tiles of any pyramid level, one resampled GDAL read per tile."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from .geo import level_cell_to_source
from .progress import CancelToken, EventSink, emit, progress_event
from .pyramid import PyramidPlan, tile_content_rect
from .raster import RasterSource


class PyramidReader:
    """Pixels of a PyramidPlan from a RasterSource; padding comes back as zeros with valid=False."""

    def __init__(self, source: RasterSource, plan: PyramidPlan):
        if (plan.source_width, plan.source_height) != (source.width, source.height):
            raise ValueError(f"plan for {plan.source_width} x {plan.source_height} does not match the "
                             f"source window {source.width} x {source.height}")
        self.source = source
        self.plan = plan

    def read_thumbnail(self) -> Tuple[np.ndarray, np.ndarray]:
        """(uint8 [B, B, 3], valid bool [B, B]) with the image top-left, long side = B."""
        t = self.plan.thumbnail
        pixels = np.zeros((t.size, t.size, 3), np.uint8)
        valid = np.zeros((t.size, t.size), bool)
        rgb, ok = self.source.read(0, 0, self.source.width, self.source.height,
                                   t.content_width, t.content_height)
        pixels[:t.content_height, :t.content_width] = rgb
        valid[:t.content_height, :t.content_width] = ok
        return pixels, valid

    def read_tile(self, level_index: int, row: int, col: int, pixels: np.ndarray, valid: np.ndarray) -> None:
        """Fill one B x B tile (zeros + valid=False first, so padding is marked)."""
        pixels[...] = 0
        valid[...] = False
        x0, y0, x1, y1 = tile_content_rect(self.plan, level_index, row, col)
        if x1 <= x0 or y1 <= y0:
            return  # the whole tile is padding
        sx0, sy0, sx1, sy1 = level_cell_to_source(self.plan, level_index, x0, y0, x1, y1)
        rgb, ok = self.source.read(sx0, sy0, sx1 - sx0, sy1 - sy0, x1 - x0, y1 - y0)
        pixels[:y1 - y0, :x1 - x0] = rgb
        valid[:y1 - y0, :x1 - x0] = ok

    def read_tiles(self, level_index: int, tiles: Sequence[Tuple[int, int]],
                   events: Optional[EventSink] = None, cancel: Optional[CancelToken] = None):
        """(uint8 [N, B, B, 3], valid bool [N, B, B]) for the (row, col) tiles, in the given order."""
        tiles = list(tiles)
        b = self.plan.tile_size
        pixels = np.zeros((len(tiles), b, b, 3), np.uint8)
        valid = np.zeros((len(tiles), b, b), bool)
        for i, (row, col) in enumerate(tiles):
            if cancel is not None:
                cancel.raise_if_cancelled()
            self.read_tile(level_index, int(row), int(col), pixels[i], valid[i])
            emit(events, progress_event("read", (i + 1) / len(tiles),
                                        f"level {level_index}: {i + 1}/{len(tiles)} tiles"))
        return pixels, valid

    def read_level(self, level_index: int, **kwargs):
        """Every tile of a level in raster order (level 1 is at most 3 x 3 tiles)."""
        return self.read_tiles(level_index, self.plan.level(level_index).tiles(), **kwargs)
