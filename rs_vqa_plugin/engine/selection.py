"""How `dip` decides where to look next (METHOD.md §5, §5b): the paper's rule, and one that narrows.

`paper` (Algorithm 1): keep the top alpha of the current tokens, read every next-level tile under
them, stop when that is more than N_max tiles. Keeping a fixed quarter of n tiles' tokens needs at
least n tiles at the next level, so the count never shrinks and the rule stops on N_max long before
the finest level of a large image (§5b).

`mass`: keep the fewest current tokens that hold `mass_share` of the RFM mass (compact attention:
a handful; diffuse attention: many), and read every tile under their footprints at the deepest
level within `max_jump` levels where those tiles fit `tile_budget` (so an object anywhere inside a
kept token stays read). Compact attention thus narrows to a few tiles and goes all the way down in
few steps; when even the next level needs more than the budget, the attention is diffuse and the
selection stops there, as the paper's N_max intends. The final pruning to the top alpha of the last
pass's tokens is the same for both.

`focus`: rank the current tokens by RFM score and keep the longest run of top tokens whose tiles at
the target level fit `tile_budget` (the deepest target within `max_jump` levels that still keeps at
least `min_tokens`). A flat score distribution (the RFM at a level too coarse to see the objects)
thus keeps as many candidates as the budget holds instead of stopping, and a peaked one goes down
fast; when not even `min_tokens` fit the next level the attention is diffuse and it stops.

Pure numpy on the plan; the engine calls `next_step` once per pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from .errors import InputError
from .select import exceeds_n_max, tiles_under_tokens, top_alpha

SELECTIONS = ("paper", "mass", "focus")
# Defaults of the `mass` and `focus` selections (a bundle's manifest may set its own, chosen on
# validation data).
MASS_DEFAULTS = {"mass_share": 0.6, "tile_budget": 12, "max_jump": 2}
# start_tiles: the first pass reads the deepest level of at most this many tiles (0: level 1, as
# the paper); a finer first look than level 1's 3 x 3 tiles when the RFM can afford it.
FOCUS_DEFAULTS = {"tile_budget": 32, "max_jump": 2, "min_tokens": 4, "start_tiles": 0}
DEFAULTS = {"mass": MASS_DEFAULTS, "focus": FOCUS_DEFAULTS}
# whole-number parameters and their smallest values
WHOLE = {"tile_budget": 1, "max_jump": 1, "min_tokens": 1, "start_tiles": 0}

Tiles = List[Tuple[int, int]]


@dataclass(frozen=True)
class Selection:
    name: str = "paper"
    params: Dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec, source: str = "--selection") -> "Selection":
        """'paper', 'mass', 'mass:mass_share=0.5,tile_budget=16', or a manifest dict
        {"name": "mass", "mass_share": 0.5, ...}."""
        if isinstance(spec, Selection):
            return spec
        if isinstance(spec, dict):
            params = {k: v for k, v in spec.items() if k not in ("name", "keep_rounding")}
            return cls._checked(str(spec.get("name", "paper")), params, source)
        text = str(spec or "paper").strip()
        name, _, rest = text.partition(":")
        params = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise InputError(f"{source} '{text}': parameters are key=value pairs, e.g. "
                                 "mass:mass_share=0.5,tile_budget=16.")
            try:
                params[key.strip()] = float(value)
            except ValueError:
                raise InputError(f"{source} '{text}': {key.strip()} must be a number.") from None
        return cls._checked(name.strip(), params, source)

    @classmethod
    def _checked(cls, name: str, params: dict, source: str) -> "Selection":
        if name not in SELECTIONS:
            raise InputError(f"{source}: unknown selection '{name}'; choose one of "
                             f"{', '.join(SELECTIONS)}.")
        if name == "paper":
            if params:
                raise InputError(f"{source}: the paper's selection takes no parameters (alpha and "
                                 "N_max are set on their own).")
            return cls("paper", {})
        defaults = DEFAULTS[name]
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise InputError(f"{source}: unknown parameter {unknown[0]} of the {name} selection; "
                             f"it has {', '.join(defaults)}.")
        merged = {**defaults, **{k: float(v) for k, v in params.items()}}
        if "mass_share" in merged and not 0.0 < merged["mass_share"] <= 1.0:
            raise InputError(f"{source}: mass_share must be in (0, 1], got {merged['mass_share']}.")
        for key, least in WHOLE.items():
            if key not in merged:
                continue
            if merged[key] < least or merged[key] != int(merged[key]):
                raise InputError(f"{source}: {key} must be a whole number >= {least}, got "
                                 f"{merged[key]}.")
            merged[key] = int(merged[key])
        return cls(name, merged)

    def describe(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v:g}" for k, v in self.params.items())


@dataclass
class Step:
    """What to do after a scoring pass: zoom to `tiles` of `level`, or stop for `stop` reason."""
    level: Optional[int] = None
    tiles: Optional[Tiles] = None
    stop: Optional[str] = None


def start_level(selection: Optional[Selection], plan) -> int:
    """dip's first level: 1, or with focus:start_tiles=N the deepest level of at most N tiles."""
    most = int((selection.params if selection else {}).get("start_tiles", 0))
    level = 1
    for index in range(2, len(plan.levels) + 1):
        if plan.level(index).tile_count() <= most:
            level = index
    return level


def fewest_tokens_holding(scores, share: float) -> np.ndarray:
    """Indices of the fewest tokens (highest score first, ties by position) whose scores reach
    `share` of the total, in ascending order; empty when there is no mass at all."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    total = float(scores.sum())
    if scores.size == 0 or total <= 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    cumulative = np.cumsum(scores[order])
    count = int(np.searchsorted(cumulative, share * total * (1 - 1e-12)) + 1)
    return np.sort(order[:min(count, scores.size)])


def next_step(selection: Selection, plan, level: int, tokens, scores, alpha: float, n_max: int,
              keep_rounding: str = "ceil") -> Step:
    """After scoring `tokens` of `level`: where to look next, or why to stop."""
    if level >= len(plan.levels):
        return Step(stop="finest-level")
    if selection.name == "paper":
        keep = top_alpha(scores, alpha, keep_rounding)
        wanted = tiles_under_tokens(plan, level, tokens.rows[keep], tokens.cols[keep], level + 1)
        if exceeds_n_max(wanted, n_max):
            return Step(stop="n_max")
        return Step(level=level + 1, tiles=wanted)
    p = selection.params
    if selection.name == "focus":
        return _focus_step(plan, level, tokens, scores, p, n_max)
    budget = min(int(p["tile_budget"]), int(n_max))
    held = fewest_tokens_holding(scores, float(p["mass_share"]))
    if held.size == 0:
        return Step(stop="diffuse")
    rows, cols = tokens.rows[held], tokens.cols[held]
    deepest = min(len(plan.levels), level + int(p["max_jump"]))
    for target in range(deepest, level, -1):
        # Every tile under the footprint of a kept token: an object anywhere inside it stays read.
        tiles = tiles_under_tokens(plan, level, rows, cols, target)
        if len(tiles) <= budget:
            return Step(level=target, tiles=tiles)
    return Step(stop="diffuse")


def top_run_within(plan, level: int, rows, cols, order, target: int, budget: int):
    """(count, tiles): the longest prefix of `order` (token indices, best first) whose tiles at
    `target` number at most `budget`, and those tiles in raster order."""
    tiles: set = set()
    count = 0
    for i in order:
        under = tiles.union(tiles_under_tokens(plan, level, rows[i:i + 1], cols[i:i + 1], target))
        if len(under) > budget:
            break
        tiles, count = under, count + 1
    return count, sorted(tiles)


def _focus_step(plan, level: int, tokens, scores, p: dict, n_max: int) -> Step:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0:
        return Step(stop="diffuse")
    order = np.argsort(-scores, kind="stable")
    budget = min(int(p["tile_budget"]), int(n_max))
    need = min(int(p["min_tokens"]), scores.size)
    deepest = min(len(plan.levels), level + int(p["max_jump"]))
    for target in range(deepest, level, -1):
        count, tiles = top_run_within(plan, level, tokens.rows, tokens.cols, order, target, budget)
        if count >= need:
            return Step(level=target, tiles=tiles)
    return Step(stop="diffuse")
