"""The embedding sequence the RFM and the LLM read (METHOD.md §3, §5), built from selected tiles.

Layout: [prefix text][thumbnail G*G][separator][HR tokens, newline after each token row][suffix text].

Rows of a partial selection: the HR tokens of a level are indexed by their (row, col) in the
level's stitched token grid (row = tile_row * g + token_row). A sequence holds the given tokens
sorted by (row, col), i.e. grouped by tile row, then by token row, with the selected tiles of that
tile row concatenated left to right; one newline follows every stitched row that holds at least
one token. With every tile selected this is exactly the full stitched grid; after pruning it is
"the kept tokens in raster order, a newline after each kept row". Tokens lying entirely in
padding are dropped ("unpad") before any of this.

Families without image-newline tokens (manifest newline "none", Qwen2.5-VL) get no newlines, and
their separator may be several tokens (Qwen2.5-VL: <|vision_end|><|vision_start|>, closing the
thumbnail and opening the pyramid tokens). Families with multimodal rotary positions (manifest
positions "mrope") get explicit positions per token: see mrope.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence as Seq, Tuple

import numpy as np


@dataclass
class LevelTokens:
    """HR tokens of one pyramid level, in raster order of its stitched grid."""

    level: int
    features: np.ndarray      # float32 [N, D]
    rows: np.ndarray          # int64 [N] row in the level's stitched token grid
    cols: np.ndarray          # int64 [N] column in the stitched grid
    tile_rows: np.ndarray     # int64 [N] tile the token comes from
    tile_cols: np.ndarray
    # (rows, cols) of the level's stitched grid without padding; None: the extent of the tokens.
    # M-RoPE positions use it, so that text after the image sits at the same position whichever
    # tokens of the level were kept (the RFM pass and the LLM see the same positions).
    grid_shape: Optional[Tuple[int, int]] = None

    def __len__(self) -> int:
        return int(self.rows.size)

    def subset(self, indices) -> "LevelTokens":
        idx = np.sort(np.asarray(indices, dtype=np.int64))
        return LevelTokens(self.level, self.features[idx], self.rows[idx], self.cols[idx],
                           self.tile_rows[idx], self.tile_cols[idx], self.shape())

    def shape(self) -> Tuple[int, int]:
        """(rows, cols) of the level's grid: grid_shape, else the extent of these tokens."""
        if self.grid_shape is not None:
            return int(self.grid_shape[0]), int(self.grid_shape[1])
        if not len(self):
            return 0, 0
        return int(self.rows.max()) + 1, int(self.cols.max()) + 1

    def row_count(self) -> int:
        """Distinct stitched rows: the number of newline tokens this set adds to a sequence."""
        return int(np.unique(self.rows).size)

    def tiles(self):
        """Tiles contributing at least one token, raster order."""
        pairs = sorted(set(zip(self.tile_rows.tolist(), self.tile_cols.tolist())))
        return [(int(r), int(c)) for r, c in pairs]


def level_tokens(plan, level_index: int, tiles: Seq[Tuple[int, int]], features: np.ndarray,
                 valid_shape: Tuple[int, int]) -> LevelTokens:
    """Flatten the pooled features [T, g, g, D] of `tiles` into raster-ordered LevelTokens.

    valid_shape: (rows, cols) of the level's stitched grid that are not entirely padding;
    tokens beyond it are dropped."""
    g = plan.token_grid
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 4 or features.shape[0] != len(tiles) or features.shape[1:3] != (g, g):
        raise ValueError(f"expected features [{len(tiles)}, {g}, {g}, D], got {features.shape}")
    local_r, local_c = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    tile_r = np.array([t[0] for t in tiles], dtype=np.int64)[:, None, None]
    tile_c = np.array([t[1] for t in tiles], dtype=np.int64)[:, None, None]
    rows = (tile_r * g + local_r[None]).ravel()
    cols = (tile_c * g + local_c[None]).ravel()
    tr = np.broadcast_to(tile_r, (len(tiles), g, g)).ravel()
    tc = np.broadcast_to(tile_c, (len(tiles), g, g)).ravel()
    flat = features.reshape(-1, features.shape[-1])
    keep = (rows < valid_shape[0]) & (cols < valid_shape[1])
    order = np.lexsort((cols[keep], rows[keep]))
    return LevelTokens(level_index, flat[keep][order], rows[keep][order], cols[keep][order],
                       tr[keep][order].astype(np.int64), tc[keep][order].astype(np.int64),
                       (int(valid_shape[0]), int(valid_shape[1])))


@dataclass
class AssembledSequence:
    embeds: np.ndarray        # float32 [L, D]
    hr_mask: np.ndarray       # bool [L]: True at HR tokens (never at newlines)
    hr_positions: np.ndarray  # int64 [N]: position of tokens[i] in embeds
    query_index: int          # the last prompt token: the RFM's query
    prefix_tokens: int
    thumbnail_tokens: int
    separator_tokens: int
    hr_tokens: int
    newline_tokens: int
    suffix_tokens: int
    positions: Optional[np.ndarray] = None   # int64 [3, L] M-RoPE (t, h, w); None: 0..L-1

    @property
    def length(self) -> int:
        return int(self.embeds.shape[0])

    @property
    def vision_tokens(self) -> int:
        """Thumbnail + HR tokens + newlines (the separator is a marker, not image content)."""
        return self.thumbnail_tokens + self.hr_tokens + self.newline_tokens


def assemble(prefix: np.ndarray, thumbnail: np.ndarray, separator: np.ndarray,
             newline: Optional[np.ndarray], tokens: Optional[LevelTokens], suffix: np.ndarray,
             positions: str = "1d") -> AssembledSequence:
    """Concatenate the pieces; the separator and newlines appear only when HR tokens follow.
    newline None: no newline tokens. separator: [D] or [S, D]. positions "mrope": also the
    sequence's M-RoPE positions (mrope.py; the thumbnail must be a square grid)."""
    d = thumbnail.shape[-1]
    thumb = np.asarray(thumbnail, dtype=np.float32).reshape(-1, d)
    prefix = np.asarray(prefix, dtype=np.float32).reshape(-1, d)
    suffix = np.asarray(suffix, dtype=np.float32).reshape(-1, d)
    if suffix.shape[0] == 0:
        raise ValueError("the prompt suffix is empty: the RFM needs a query token after the image")
    pieces = [prefix, thumb]
    n_hr = n_newline = n_sep = 0
    hr_local = np.zeros(0, dtype=np.int64)
    if tokens is not None and len(tokens):
        sep = np.asarray(separator, dtype=np.float32).reshape(-1, d)
        n_sep = sep.shape[0]
        pieces.append(sep)
        # A newline goes after the last token of each stitched row (none without newlines).
        row_end = np.zeros(len(tokens), dtype=bool)
        if newline is not None:
            row_end[:] = True
            row_end[:-1] = tokens.rows[1:] != tokens.rows[:-1]
        n_newline = int(row_end.sum())
        n_hr = len(tokens)
        # Position of token i within the HR block: i + newlines emitted before it.
        newlines_before = np.concatenate([[0], np.cumsum(row_end)[:-1]]).astype(np.int64)
        hr_local = np.arange(n_hr, dtype=np.int64) + newlines_before
        block = np.empty((n_hr + n_newline, d), dtype=np.float32)
        block[hr_local] = tokens.features
        newline_at = hr_local[row_end] + 1
        if n_newline:
            block[newline_at] = np.asarray(newline, dtype=np.float32).reshape(d)
        pieces.append(block)
    pieces.append(suffix)
    embeds = np.concatenate(pieces, axis=0)
    hr_start = prefix.shape[0] + thumb.shape[0] + n_sep
    hr_positions = hr_local + hr_start
    hr_mask = np.zeros(embeds.shape[0], dtype=bool)
    hr_mask[hr_positions] = True
    position_ids = None
    if positions == "mrope":
        from .mrope import sequence_positions

        position_ids = sequence_positions(prefix.shape[0], thumb.shape[0], n_sep, tokens,
                                          suffix.shape[0])
    elif positions != "1d":
        raise ValueError(f"unknown position scheme {positions!r}: '1d' or 'mrope'")
    return AssembledSequence(embeds=embeds, hr_mask=hr_mask, hr_positions=hr_positions,
                             query_index=embeds.shape[0] - 1, prefix_tokens=prefix.shape[0],
                             thumbnail_tokens=thumb.shape[0], separator_tokens=n_sep,
                             hr_tokens=n_hr, newline_tokens=n_newline,
                             suffix_tokens=suffix.shape[0], positions=position_ids)
