"""Multimodal rotary positions (M-RoPE) of a sequence, for families that use them (Qwen2.5-VL).

Such an LLM rotates each query and key by three positions, (t, h, w): temporal, height, width,
each over its own section of the rotary frequencies (config rope_parameters.mrope_section). Text
tokens have t = h = w = their index; an image placed at position s with a merged-token grid of R
rows and C columns gives the token at (row, col) the positions (s, s + row, s + col), and the text
after it continues at s + max(R, C) (transformers' get_rope_index for one still image).

rs-vqa's sequence is [prefix][thumbnail][separator][pyramid tokens][suffix]. The positions
(METHOD-style, the same in the RFM pass and in the LLM):

- prefix tokens (ending with the family's vision-start token): 0 .. p-1;
- thumbnail, a G x G grid of merged tokens: (p, p + row, p + col), exactly as transformers
  places one image of that grid, so `thumbnail` mode reproduces the model's own input; n = p + G;
- separator tokens (vision-end, vision-start): text, n, n + 1, ...; s = n + S;
- the pyramid tokens of one level (all of its tiles in an RFM pass, the kept ones in the LLM):
  each keeps its (row, col) in its level's stitched grid of R x C tokens: (s, s + row, s + col).
  Tokens lying in padding were dropped before; pruned tokens leave gaps, not shifts, so a kept
  token has the same position in the RFM pass that scored it and in the LLM;
- suffix tokens (vision-end first, the question, the assistant turn): text from s + max(R, C),
  the level's full grid (not the kept tokens' extent), again the same in both sequences;
- decoding continues one position a token after the last suffix position.

Without pyramid tokens (mode `thumbnail`) there is no separator and the suffix follows at n."""

from __future__ import annotations

from typing import Optional

import numpy as np


def _text(start: int, count: int) -> np.ndarray:
    return np.broadcast_to(np.arange(start, start + count, dtype=np.int64), (3, count))


def grid_positions(start: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(t, h, w) [3, N] of image tokens at (rows, cols) of a grid placed at `start`."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    return np.stack([np.full(rows.shape, start, dtype=np.int64), start + rows, start + cols])


def sequence_positions(prefix: int, thumbnail: int, separator: int, tokens: Optional[object],
                       suffix: int) -> np.ndarray:
    """int64 [3, L] for the layout above; tokens: the LevelTokens after the separator or None."""
    side = int(round(thumbnail ** 0.5))
    if side * side != thumbnail:
        raise ValueError(f"M-RoPE needs a square thumbnail grid, got {thumbnail} tokens")
    rows, cols = np.divmod(np.arange(thumbnail, dtype=np.int64), side)
    parts = [_text(0, prefix), grid_positions(prefix, rows, cols)]
    after = prefix + side
    if tokens is not None and len(tokens):
        parts.append(_text(after, separator))
        start = after + separator
        parts.append(grid_positions(start, tokens.rows, tokens.cols))
        after = start + max(tokens.shape())
    parts.append(_text(after, suffix))
    return np.ascontiguousarray(np.concatenate(parts, axis=1))
