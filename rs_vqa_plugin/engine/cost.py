"""FLOPs accounting of METHOD.md §6: the paper's convention, for a planned run or a measured one.

Per decoder layer with n tokens, hidden d and FFN width m: 4nd^2 + 2n^2d + 3ndm (a multiply-add
counts once; 3ndm because the SwiGLU FFN has three d x m matrices). The vision encoder is not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

from .errors import InputError

MODES = ("dip", "prune-only", "grid", "thumbnail", "full")
TERA = 1e12


@dataclass(frozen=True)
class ModelDims:
    """What the count needs of an LVLM: the LLM's width, FFN width and depth, and the RFM's depth."""

    hidden: int
    ffn: int
    layers: int
    rfm_layers: int

    def __post_init__(self):
        for name in ("hidden", "ffn", "layers"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"--{name} must be a positive integer, got {getattr(self, name)}.")
        if int(self.rfm_layers) < 0:
            raise InputError(f"--rfm-layers must be zero or positive, got {self.rfm_layers}.")


def layer_flops(n: int, hidden: int, ffn: int) -> int:
    """One decoder layer over n tokens: projections 4nd^2, attention 2n^2d, SwiGLU FFN 3ndm."""
    n, d, m = int(n), int(hidden), int(ffn)
    return 4 * n * d * d + 2 * n * n * d + 3 * n * d * m


def stack_flops(n: int, hidden: int, ffn: int, layers: int) -> int:
    return int(layers) * layer_flops(n, hidden, ffn)


def keep_count(candidates: int, alpha: float, rounding: str = "ceil") -> int:
    """Tokens kept by top-alpha selection: ceil(alpha * N), or int(alpha * N) with rounding
    'floor' (the reference's count); at least one when there are candidates.

    Shared with the selection step so that the estimate and a real run count the same way."""
    if candidates <= 0:
        return 0
    if rounding == "floor":
        wanted = int(float(alpha) * candidates + 1e-9)
    else:
        wanted = int(math.ceil(float(alpha) * candidates - 1e-9))
    return max(1, min(int(candidates), wanted))


def run_flops(dims: ModelDims, llm_tokens: int, rfm_tokens: Iterable[int]) -> Dict[str, int]:
    """FLOPs of one answer: the LLM at its prefill length plus the RFM at each scoring pass's length."""
    rfm = sum(stack_flops(n, dims.hidden, dims.ffn, dims.rfm_layers) for n in rfm_tokens)
    llm = stack_flops(llm_tokens, dims.hidden, dims.ffn, dims.layers)
    return {"rfm": int(rfm), "llm": int(llm), "total": int(rfm + llm)}


def paper_estimate(width: int, height: int, dims: ModelDims, mode: str = "dip",
                   selected_tiles: Optional[Sequence[int]] = None, alpha: float = 0.25,
                   tile_size: int = 336, patch_grid: int = 24, token_grid: int = 12,
                   level: int = 1, separator_tokens: int = 1,
                   encoder_grid: Optional[int] = None) -> dict:
    """The paper's accounting without running a model (its Table 4 convention).

    Vision tokens only: patch_grid^2 (576) for the thumbnail, token_grid^2 (144) per pyramid tile,
    newline tokens ignored. In `dip` and `prune-only` the RFM runs at every pass on the thumbnail,
    the separator and that pass's tiles; the LLM then gets the thumbnail plus alpha of the last
    pass's tile tokens. `selected_tiles` lists the tiles encoded at each pass, coarsest first
    (default: level 1 only, i.e. pruning at level 1). separator_tokens: 1 (LLaVA) or 2
    (Qwen2.5-VL's <|vision_end|><|vision_start|>); encoder_grid: the vision encoder's tokens per
    side of one image (default patch_grid; Qwen2.5-VL: tile / 14, before its 2x2 merger).
    """
    from .pyramid import plan_pyramid

    if mode not in MODES:
        raise InputError(f"Unknown mode '{mode}': choose one of {', '.join(MODES)}.")
    if width < 1 or height < 1:
        raise InputError(f"--image-size must be two positive integers, got {width} {height}.")
    if not 0.0 < alpha <= 1.0:
        raise InputError(f"alpha must be in (0, 1], got {alpha}.")
    plan = plan_pyramid(width, height, tile_size=tile_size, token_grid=token_grid)
    thumb = patch_grid * patch_grid
    per_tile = token_grid * token_grid
    passes: List[int] = []
    if mode == "full":
        passes = [plan.finest.tile_count()]
    elif mode in ("grid", "prune-only"):
        passes = [_checked_level(plan, level).tile_count()]
    elif mode == "dip":
        passes = list(selected_tiles) if selected_tiles else [plan.level(1).tile_count()]
        _check_passes(plan, passes)

    if mode == "thumbnail":
        llm_vision, rfm_tokens = thumb, []
    elif mode in ("full", "grid"):
        llm_vision, rfm_tokens = thumb + passes[0] * per_tile, []
    else:
        rfm_tokens = [thumb + separator_tokens + tiles * per_tile for tiles in passes]
        llm_vision = thumb + keep_count(passes[-1] * per_tile, alpha)
    flops = run_flops(dims, llm_vision, rfm_tokens)
    return {
        "mode": mode,
        "image_size": [int(width), int(height)],
        "levels": [lv.long_side for lv in plan.levels],
        "tiles_per_pass": passes,
        "tiles_encoded": sum(passes),
        "encoder_tokens": int(encoder_grid or patch_grid) ** 2 * (1 + sum(passes)),
        "rfm_tokens": rfm_tokens,
        "llm_vision_tokens": llm_vision,
        "flops": flops,
        "tflops": {k: v / TERA for k, v in flops.items()},
    }


def _checked_level(plan, level: int):
    if not 1 <= int(level) <= len(plan.levels):
        raise InputError(f"--level {level} does not exist: this image has levels 1..{len(plan.levels)}.")
    return plan.level(int(level))


def _check_passes(plan, passes: Sequence[int]) -> None:
    if len(passes) > len(plan.levels):
        raise InputError(f"--selected-tiles lists {len(passes)} passes but this image has only "
                         f"{len(plan.levels)} pyramid levels.")
    for index, tiles in enumerate(passes, start=1):
        available = plan.level(index).tile_count()
        if not 1 <= int(tiles) <= available:
            raise InputError(f"--selected-tiles: pass {index} uses {tiles} tiles but level {index} "
                             f"has {available}; give 1..{available}.")
