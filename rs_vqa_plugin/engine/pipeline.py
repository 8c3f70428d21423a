"""Answer one question about one raster by looking coarse to fine (METHOD.md §5, Algorithm 1).

Modes share the machinery: `dip` zooms level by level where the RFM looks, `prune-only` prunes
all tiles of one fixed level, `grid` gives the LLM all tiles of one level, `thumbnail` only the
thumbnail, `full` all tiles of the finest level. Models are loaded once per Engine, and so is
its tile cache: encodings of tiles (and thumbnails) reused by the next question (tile_cache.py).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import budget
from .answer import Answer
from .cost import MODES, ModelDims, keep_count, run_flops
from .errors import InputError
from .prompt import prepare_question
from .question_text import check_question_text
from .progress import (TIMED_STAGES, CancelToken, EventSink, TrimmedTokens, emit, progress_event,
                       token_event)
from .scope import Scope
from .sequence import LevelTokens, assemble, level_tokens
from .tile_cache import DEFAULT_MB, TileCache, image_identity, model_identity

# Tiles read and encoded together: bounds memory (B*B*3 bytes + features each) and lets a
# cancel or a progress event in between.
TILE_BATCH = 8


@dataclass
class AskOptions:
    mode: str = "dip"
    alpha: Optional[float] = None           # None: the bundle's (paper: 0.25)
    n_max: Optional[int] = None             # None: the bundle's (paper: 80 for Qwen2-7B)
    level: int = 1                          # the fixed level of grid / prune-only
    scope: Scope = None                     # extent (xmin, ymin, xmax, ymax) or polygon WKT, raster CRS
    history: Tuple[Tuple[str, str], ...] = ()
    bands: Optional[Sequence[int]] = None
    max_new_tokens: int = 32
    full_token_limit: int = 30000           # mode 'full': image tokens at most
    # Planned peak memory of one RFM pass or the LLM prefill, checked before any tile is read.
    # None: 80% of the memory available when asking (engine/budget.py).
    memory_limit_mb: Optional[float] = None
    overview_cache_dir: Optional[str] = None  # None: $RS_VQA_CACHE/overviews or ~/.cache/rs-vqa/...
    # Missing overviews go in the cache folder even when the raster's folder is writable (else
    # beside the raster as <file>.ovr, where GDAL and QGIS find them too).
    overviews_in_cache: bool = False
    selection: Optional[str] = None         # None: the bundle's ('paper', 'mass', 'mass:k=v,...')
    # Diagnostic for the benchmark scripts, not for users: score every token by its overlap with
    # this box (x1, y1, x2, y2 in source pixels of the scope) instead of the RFM, i.e. a perfect
    # scorer, to tell whether a selection can reach the asked object at all.
    oracle_box: Optional[Tuple[float, float, float, float]] = None
    # Diagnostic for the benchmark scripts, not for users (mode 'thumbnail' only): the thumbnail
    # is the all-mean image (every pixel marked invalid), so the model answers from the text
    # alone; tells how much of a benchmark the question's wording gives away.
    blind: bool = False


class _Run:
    """Per-question bookkeeping: stage timings, progress events and cancellation."""

    def __init__(self, sinks: List[EventSink], cancel: Optional[CancelToken]):
        self.sinks = sinks
        self.cancel = cancel
        self.seconds = {stage: 0.0 for stage in TIMED_STAGES}
        # What the tile cache is keyed by for this question (None: not cached, e.g. blind).
        self.image_id: Optional[str] = None
        self.tiles_encoded = 0
        self.tiles_from_cache = 0
        self.thumbnail_from_cache = False

    def emit(self, event) -> None:
        for sink in self.sinks:
            emit(sink, event)

    def check(self) -> None:
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()

    @contextmanager
    def stage(self, name: str, fraction: float = 0.0, message: str = ""):
        # Check before and after announcing: a listener may cancel on the announcement itself.
        self.check()
        self.emit(progress_event(name, fraction, message))
        self.check()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start


@dataclass
class _Pass:
    """One RFM scoring pass over a level's tiles."""

    level: int
    tiles: List[Tuple[int, int]]
    tokens: LevelTokens
    scores: Optional[np.ndarray]
    sequence_length: int
    # Oracle runs only: where the RFM would have ranked the asked box on this pass (diagnostics).
    shadow: Optional[dict] = None


class Engine:
    """The vision encoder, RFM and LLM of one bundle, loaded once and reused between questions."""

    def __init__(self, bundle_dir, device: str = "auto", events: Optional[EventSink] = None,
                 tile_cache_mb: float = DEFAULT_MB, dtype: Optional[str] = None, threads: int = 0):
        """threads: ONNX Runtime's threads per session (0: its default, every core); several
        engines on one machine (Ray actors) each get their share."""
        from .bundle import load_bundle
        from .llm import LanguageModel
        from .rfm import RegionFocus
        from .vision import VisionEncoder

        self.events = events
        self.bundle = load_bundle(bundle_dir)
        self.manifest = self.bundle.manifest
        self.vision = VisionEncoder(self.bundle, device, threads)
        self.rfm = RegionFocus(self.bundle, device, threads)
        self.llm = LanguageModel(self.bundle, device, dtype)
        config = self.bundle.llm_config.get("text_config") or self.bundle.llm_config
        self.dims = ModelDims(hidden=int(self.manifest.hidden_size),
                              ffn=int(config.get("intermediate_size") or 4 * self.manifest.hidden_size),
                              layers=int(config.get("num_hidden_layers") or 1),
                              rfm_layers=len(self.manifest.rfm.get("layers") or []))
        self.budget_dims = budget.dims_of(self.bundle, self.llm)
        self.tile_cache = TileCache(tile_cache_mb)
        # Diagnostics for the benchmark scripts: oracle passes also run the RFM (trace["shadow"]).
        self.shadow_rfm = False
        self._model_id = model_identity(self.bundle, getattr(self.vision, "provider", ""))

    def set_tile_cache_mb(self, megabytes: float) -> None:
        """Bound the tile cache to `megabytes` (0: off), evicting the oldest tiles to fit."""
        self.tile_cache.resize(megabytes)

    # ------------------------------------------------------------------ checks
    def _resolve(self, options: AskOptions) -> Tuple[float, int]:
        if options.mode not in MODES:
            raise InputError(f"Unknown mode '{options.mode}': choose one of {', '.join(MODES)}.")
        alpha = float(options.alpha if options.alpha is not None else self.manifest.alpha)
        if not 0.0 < alpha <= 1.0:
            raise InputError(f"alpha (the keep ratio) must be in (0, 1], got {alpha}.")
        n_max = int(options.n_max if options.n_max is not None else self.manifest.n_max)
        if n_max < 1:
            raise InputError(f"n_max (the tile cap) must be at least 1, got {n_max}.")
        if int(options.max_new_tokens) < 1:
            raise InputError(f"max_new_tokens must be at least 1, got {options.max_new_tokens}.")
        if options.blind and options.mode != "thumbnail":
            raise InputError(f"The blind diagnostic reads no image, so it takes mode 'thumbnail', "
                             f"not '{options.mode}'.")
        return alpha, n_max

    def _selection(self, options: AskOptions):
        from .selection import Selection

        if options.selection:
            return Selection.parse(options.selection)
        return Selection.parse(self.manifest.selection or "paper", "manifest.json selection")

    def _check_context(self, needed: int, what: str) -> None:
        limit = int(self.llm.max_context)
        if needed > limit:
            raise InputError(f"{what} needs {needed} tokens but the language model reads at most "
                             f"{limit}: shorten the question or the conversation, or use a mode "
                             "that gives the model fewer image tokens (dip, thumbnail).")

    # ------------------------------------------------------------------ ask
    def ask(self, raster_path, question, options: Optional[AskOptions] = None,
            events: Optional[EventSink] = None, cancel: Optional[CancelToken] = None) -> Answer:
        from .pyramid import plan_pyramid
        from .raster import RasterSource
        from .reader import PyramidReader
        from .scope import scope_window
        from .scope_mask import scope_mask

        options = options or AskOptions()
        started = time.perf_counter()
        run = _Run([s for s in (self.events, events) if s is not None], cancel)
        # Refuse text that is not text or far beyond the context before tokenising any of it.
        if question is not None:
            check_question_text(question, options.history or (), self.llm.max_context)
        question = prepare_question(question, self.llm.question_text)
        alpha, n_max = self._resolve(options)
        selection = self._selection(options)
        m = self.manifest
        history = tuple((str(q), str(a)) for q, a in (options.history or ()))
        prefix_ids, suffix_ids = self.llm.prompt_segments(question, history)
        text_tokens = len(prefix_ids) + len(suffix_ids)
        self._check_context(text_tokens + m.thumbnail_tokens, "The question with the prompt and the thumbnail")
        window = scope_window(raster_path, options.scope)

        with RasterSource(raster_path, bands=options.bands, window=window,
                          overview_cache_dir=options.overview_cache_dir,
                          use_cache=options.overviews_in_cache,
                          events=run.emit, cancel=cancel) as source:
            # A polygon is read through its bounding-box window, the outside masked as missing.
            source.scope_mask = scope_mask(options.scope, source.georef,
                                           (0, 0, source.width, source.height))
            plan = plan_pyramid(source.width, source.height, tile_size=m.tile_size,
                                token_grid=m.pooled_grid, **m.plan_options())
            start_level = self._start_level(plan, options, selection)
            limit_mb = budget.resolve_limit_mb(options.memory_limit_mb)
            self._plan_budget(plan, source, options, start_level, text_tokens, alpha, n_max, limit_mb)
            reader = PyramidReader(source, plan)
            if options.blind:
                # No pixel read: all invalid, which the encoder turns into the mean (0 after
                # normalisation), the same input for every raster.
                side = plan.thumbnail.size
                thumb_pixels, thumb_valid = np.zeros((side, side, 3), np.uint8), np.zeros((side, side), bool)
            else:
                with run.stage("read", 0.0, "reading the thumbnail"):
                    thumb_pixels, thumb_valid = reader.read_thumbnail()
            if not (options.blind or thumb_valid.any()):
                raise InputError(f"{source.path} holds no valid pixels (everything is nodata or "
                                 "masked) in the area asked about: choose another raster, band "
                                 "set or scope.")
            if not options.blind and self.tile_cache.enabled:
                run.image_id = image_identity(source, thumb_pixels, thumb_valid)
            thumb = self._encode_thumbnail(run, plan, thumb_pixels, thumb_valid)
            prefix = np.asarray(self.llm.embed_ids(prefix_ids), dtype=np.float32)
            suffix = np.asarray(self.llm.embed_ids(suffix_ids), dtype=np.float32)

            kept, kept_scores, passes, stop = self._look(run, reader, plan, options.mode, start_level,
                                                         alpha, n_max, prefix, thumb, suffix,
                                                         selection, options.oracle_box, limit_mb)
            final = assemble(prefix, thumb, self.bundle.separator, self.bundle.newline_embedding,
                             kept, suffix, m.positions)
            self._check_context(final.length + int(options.max_new_tokens),
                                "The kept image tokens with the question and the answer")
            # Stripped as the answer is, so that the streamed tokens add up to its text.
            on_token = TrimmedTokens(lambda text: run.emit(token_event(text)))

            with run.stage("generate", 0.0, f"answering from {final.length} tokens"):
                text = self.llm.generate(final.embeds, max_new_tokens=int(options.max_new_tokens),
                                         on_token=on_token, cancel=cancel,
                                         positions=final.positions)
            run.emit(progress_event("generate", 1.0, "answered"))
            heat = self._heat_cells(plan, source.georef, passes, kept, kept_scores)
            trace = self._trace(run, started, plan, source, window, passes, final, stop,
                                alpha, n_max, options.mode, selection)
            return Answer(question=question, text=str(text).strip(), mode=options.mode, trace=trace,
                          heat_cells=heat, crs_wkt=source.crs_wkt, raster=str(raster_path))

    def _plan_budget(self, plan, source, options: AskOptions, level: int, text_tokens: int,
                     alpha: float, n_max: int, limit_mb: Optional[float]) -> None:
        """Refuse, before any tile is read, a mode whose token count, RFM pass or LLM prefill
        would not fit: the figure and the way out. dip's passes are bounded here by the larger of
        its first level and N_max tiles (every later pass reads at most N_max) and checked exactly again
        before each pass's tiles are read (_look)."""
        from .pyramid import level_valid_token_shape

        m, mode = self.manifest, options.mode
        g, new = m.pooled_grid, int(options.max_new_tokens)
        # + the separator before the HR tokens; newline rows only where the family has them
        base = text_tokens + m.thumbnail_tokens + self._separator_tokens()
        per_row = 0 if m.newline == "none" else 1
        rfm_tokens = 0
        if mode == "thumbnail":
            llm_tokens = text_tokens + m.thumbnail_tokens + new
            way_out = "shorten the question or the conversation"
        elif mode == "dip":
            tiles = max(plan.level(level).tile_count(), n_max)
            hr, rows = tiles * g * g, tiles * g * per_row
            rfm_tokens = base + hr + rows
            llm_tokens = base + keep_count(hr, alpha, m.keep_rounding) + rows + new
            way_out = f"lower N_max (now {n_max}) or ask about a smaller scope"
        else:
            grid_rows, cols = level_valid_token_shape(plan, level)
            rows = grid_rows * per_row
            vision = m.thumbnail_tokens + grid_rows * cols + rows
            if mode == "full" and vision > int(options.full_token_limit):
                raise InputError(
                    f"Mode 'full' would give the language model {vision} image tokens for this "
                    f"{source.width} x {source.height} px image (all {plan.finest.tile_count()} "
                    f"tiles of the finest level), above the limit of {options.full_token_limit}: "
                    "use mode 'dip', ask about a smaller scope, or raise full_token_limit.")
            if mode == "prune-only":
                rfm_tokens = base + grid_rows * cols + rows
                llm_tokens = base + keep_count(grid_rows * cols, alpha, m.keep_rounding) + rows + new
            else:
                llm_tokens = base + grid_rows * cols + rows + new
                self._check_context(llm_tokens, f"Mode '{mode}' on this image")
            coarser = f"choose a level below {level}, " if mode != "full" and level > 1 else ""
            way_out = f"{coarser}use mode 'dip' or ask about a smaller scope"
        where = f" at level {level}" if mode in ("grid", "prune-only") else ""
        if rfm_tokens:
            budget.check(f"Mode '{mode}'{where} would run the region focus module", rfm_tokens,
                         budget.rfm_pass_mb(self.budget_dims, rfm_tokens), limit_mb, way_out)
        budget.check(f"Mode '{mode}'{where} would prefill the language model", llm_tokens,
                     budget.llm_prefill_mb(self.budget_dims, llm_tokens), limit_mb, way_out)

    def _separator_tokens(self) -> int:
        return int(np.asarray(self.bundle.separator).reshape(-1, self.manifest.hidden_size).shape[0])

    def _start_level(self, plan, options: AskOptions, selection=None) -> int:
        if options.mode == "dip":
            from .selection import start_level
            return start_level(selection, plan)
        if options.mode == "full":
            return len(plan.levels)
        if options.mode in ("grid", "prune-only"):
            if not 1 <= int(options.level) <= len(plan.levels):
                raise InputError(f"Level {options.level} does not exist: this image's pyramid has "
                                 f"levels 1..{len(plan.levels)} (long sides "
                                 f"{[lv.long_side for lv in plan.levels]}).")
            return int(options.level)
        return 0   # thumbnail: no pyramid level

    # ------------------------------------------------------------------ Algorithm 1
    def _look(self, run: _Run, reader, plan, mode: str, level: int, alpha: float, n_max: int,
              prefix, thumb, suffix, selection, oracle_box=None, limit_mb=None):
        """Read, encode, score and select until the stop rule; returns the kept HR tokens."""
        from .selection import next_step
        from .select import top_alpha

        if mode == "thumbnail":
            return None, None, [], "mode"
        use_rfm = mode in ("dip", "prune-only")
        tiles = plan.level(level).tiles()
        passes: List[_Pass] = []
        rounding = self.manifest.keep_rounding
        while True:
            if use_rfm and oracle_box is None:
                self._pass_budget(plan, level, tiles, len(prefix) + len(thumb) + len(suffix)
                                  + self._separator_tokens(), n_max, limit_mb)
            tokens = self._encode_level(run, reader, plan, level, tiles)
            if not use_rfm:
                passes.append(_Pass(level, tiles, tokens, None, 0))
                return tokens, None, passes, "mode"
            sequence = assemble(prefix, thumb, self.bundle.separator, self.bundle.newline_embedding,
                                tokens, suffix, self.manifest.positions)
            with run.stage("score", 0.0, f"level {level}: scoring {len(tokens)} tokens"):
                rfm_scores = None
                if oracle_box is None or self.shadow_rfm:
                    rfm_scores = np.asarray(self.rfm.score(
                        sequence.embeds, sequence.hr_mask, sequence.query_index, cancel=run.cancel,
                        positions=sequence.positions,
                        image_xy=self._image_xy(plan, level, tokens, sequence)),
                        dtype=np.float32)[sequence.hr_positions]
                scores = rfm_scores if oracle_box is None else _box_scores(plan, level, tokens,
                                                                           oracle_box)
            shadow = _shadow_ranks(scores, rfm_scores) if oracle_box is not None and \
                rfm_scores is not None else None
            passes.append(_Pass(level, tiles, tokens, scores, sequence.length, shadow))
            with run.stage("select", 0.0, f"level {level}: choosing where to look ({selection.name})"):
                if mode == "prune-only":
                    stop = "mode"
                else:
                    step = next_step(selection, plan, level, tokens, scores, alpha, n_max, rounding)
                    if step.stop is None:
                        level, tiles = step.level, step.tiles
                        continue
                    stop = step.stop
                keep = top_alpha(scores, alpha, rounding)
            return tokens.subset(keep), scores[keep], passes, stop

    def _image_xy(self, plan, level: int, tokens, sequence) -> Optional[np.ndarray]:
        """[L, 2] normalised centres of the HR tokens in the image (0 elsewhere), for an RFM that
        takes them; None for one that does not."""
        from .select import image_xy

        if not getattr(self.rfm, "takes_image_xy", False):
            return None
        return image_xy(plan, level, tokens.rows, tokens.cols, sequence.length,
                        sequence.hr_positions)

    def _pass_budget(self, plan, level: int, tiles, other_tokens: int, n_max: int,
                     limit_mb: Optional[float]) -> None:
        """One RFM pass, checked before its tiles are read (newline rows bounded by the tiles')."""
        g = self.manifest.pooled_grid
        tokens = other_tokens + len(tiles) * (g * g + (0 if self.manifest.newline == "none" else g))
        budget.check(f"The level {level} pass over {len(tiles)} tiles would run the region focus "
                     "module", tokens, budget.rfm_pass_mb(self.budget_dims, tokens), limit_mb,
                     f"lower N_max (now {n_max}) or ask about a smaller scope")

    def _cache_key(self, run: _Run, plan, *where):
        """The tile cache key of a thumbnail or tile of this question's image; None: not cached.
        The plan's geometry is in it: a scope window's level is another resampling."""
        if run.image_id is None:
            return None
        return (self._model_id, run.image_id, plan.source_width, plan.source_height,
                plan.tile_size, plan.thumbnail) + where

    def _encode_thumbnail(self, run: _Run, plan, pixels, valid) -> np.ndarray:
        key = self._cache_key(run, plan, "thumbnail")
        thumb = self.tile_cache.get(key) if key is not None else None
        run.thumbnail_from_cache = thumb is not None
        if thumb is None:
            with run.stage("encode", 0.0, "encoding the thumbnail"):
                thumb = self.vision.encode_thumbnail(pixels, valid, cancel=run.cancel)
                thumb = np.asarray(thumb, dtype=np.float32).reshape(-1, self.manifest.hidden_size)
            if key is not None:
                self.tile_cache.put(key, thumb)
        return thumb

    def _encode_level(self, run: _Run, reader, plan, level: int, tiles) -> LevelTokens:
        """Features of the tiles, in order: from the cache where held, else read and encoded."""
        from .pyramid import level_valid_token_shape

        geometry = plan.level(level)
        keys = [self._cache_key(run, plan, geometry, int(r), int(c)) for r, c in tiles]
        found = [self.tile_cache.get(k) if k is not None else None for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        if len(missing) < len(tiles):
            run.emit(progress_event("encode", 0.0, f"level {level}: {len(tiles) - len(missing)} "
                                                   f"of {len(tiles)} tiles from the cache"))
        for start in range(0, len(missing), TILE_BATCH):
            batch = missing[start:start + TILE_BATCH]
            done = start / len(missing)
            with run.stage("read", done, f"level {level}: reading tiles {start + 1}-"
                                         f"{start + len(batch)} of {len(missing)}"):
                pixels, valid = reader.read_tiles(level, [tiles[i] for i in batch])
            with run.stage("encode", done, f"level {level}: encoding {len(batch)} tiles"):
                encoded = np.asarray(self.vision.encode_tiles(pixels, valid, cancel=run.cancel),
                                     dtype=np.float32)
            for i, features in zip(batch, encoded):
                found[i] = features
                if keys[i] is not None:
                    self.tile_cache.put(keys[i], features)
        run.tiles_encoded += len(missing)
        run.tiles_from_cache += len(tiles) - len(missing)
        run.emit(progress_event("encode", 1.0, f"level {level}: {len(tiles)} tiles encoded"))
        return level_tokens(plan, level, tiles, np.stack(found), level_valid_token_shape(plan, level))

    # ------------------------------------------------------------------ outputs
    def _heat_cells(self, plan, georef, passes: List[_Pass], kept, kept_scores):
        from .heatmap import tile_cells, token_cells

        cells = []
        for p in passes:
            tile_scores = None
            if p.scores is not None:
                # A tile's score is the RFM attention mass of its tokens.
                index = {t: i for i, t in enumerate(p.tiles)}
                tile_scores = np.zeros(len(p.tiles))
                for tr, tc, s in zip(p.tokens.tile_rows, p.tokens.tile_cols, p.scores):
                    tile_scores[index[(int(tr), int(tc))]] += float(s)
            cells += tile_cells(plan, georef, p.level, p.tiles, tile_scores)
        if kept is not None and kept_scores is not None:
            cells += token_cells(plan, georef, kept, kept_scores)
        return cells

    def _trace(self, run: _Run, started: float, plan, source, window, passes: List[_Pass], final,
               stop: str, alpha: float, n_max: int, mode: str, selection) -> dict:
        rfm_tokens = [p.sequence_length for p in passes if p.scores is not None]
        tiles_per_level = {}
        tiles = {}
        for p in passes:
            tiles_per_level[str(p.level)] = tiles_per_level.get(str(p.level), 0) + len(p.tiles)
            tiles[str(p.level)] = [[int(r), int(c)] for r, c in p.tiles]
        seconds = {k: round(v, 4) for k, v in run.seconds.items()}
        seconds["total"] = round(time.perf_counter() - started, 4)
        return {
            "mode": mode,
            "levels": [p.level for p in passes],
            "pyramid": [{"level": lv.index, "long_side": lv.long_side, "tiles": [lv.rows, lv.cols]}
                        for lv in plan.levels],
            "image_size": [int(source.width), int(source.height)],
            # Where the overviews are, and whether this ask built them (the dock says where, once).
            "overviews": source.overviews.to_dict(),
            "bands": source.band_choice.to_dict(),
            "window": list(window) if window else None,
            "tiles_encoded": run.tiles_encoded,          # newly encoded by this question
            "tiles_from_cache": run.tiles_from_cache,    # encoded by an earlier one
            "thumbnail_from_cache": run.thumbnail_from_cache,
            "tile_cache": self.tile_cache.stats(),
            "tiles_per_level": tiles_per_level,
            "tiles": tiles,
            "rfm_tokens": rfm_tokens,
            # how peaked each pass's scores were: the largest score times the tokens scored
            # (1 = flat); diagnostics of where the RFM was sure
            "rfm_peak": [round(float(p.scores.max()) * int(p.scores.size), 2) for p in passes
                         if p.scores is not None and p.scores.size],
            "shadow": [dict(level=p.level, **p.shadow) for p in passes if p.shadow],
            "thumbnail_tokens": final.thumbnail_tokens,
            "kept_tokens": final.hr_tokens,
            "kept_rows": final.newline_tokens,
            "llm_vision_tokens": final.vision_tokens,
            "llm_tokens": final.length,
            "text_tokens": final.prefix_tokens + final.suffix_tokens,
            "pixels_read": int(source.pixels_read),
            "flops": run_flops(self.dims, final.length, rfm_tokens),
            "seconds": seconds,
            "device": str(getattr(self.llm, "device", "cpu")),
            "llm_dtype": str(getattr(self.llm, "dtype", "")).replace("torch.", ""),
            "providers": {"vision": getattr(self.vision, "provider", ""),
                          "rfm": getattr(self.rfm, "provider", "")},
            "stop_reason": stop,
            "selection": selection.describe() if mode == "dip" else None,
            "alpha": alpha,
            "n_max": n_max,
        }


def _shadow_ranks(oracle: np.ndarray, rfm: np.ndarray) -> dict:
    """Where the RFM put the asked box on an oracle pass: the best rank (1 = top) of a token
    touching the box among `tokens`, and the RFM mass on those tokens."""
    from .select import score_ranks

    inside = oracle > 0
    if not inside.any():
        return {"tokens": int(rfm.size), "rank": None, "mass": 0.0}
    ranks = score_ranks(rfm)
    total = float(rfm.sum())
    return {"tokens": int(rfm.size), "rank": int(ranks[inside].min()),
            "mass": float(rfm[inside].sum() / total) if total > 0 else 0.0}


def _box_scores(plan, level: int, tokens, box) -> np.ndarray:
    """The oracle scorer: each token's overlap with the box (source pixels), normalised to 1
    (all zeros when no token touches it)."""
    from .select import token_rects_normalised

    u0, v0, u1, v1 = token_rects_normalised(plan, level, tokens.rows, tokens.cols)
    w, h = plan.source_width, plan.source_height
    x1, y1, x2, y2 = (float(v) for v in box)
    ox = np.clip(np.minimum(u1 * w, x2) - np.maximum(u0 * w, x1), 0, None)
    oy = np.clip(np.minimum(v1 * h, y2) - np.maximum(v0 * h, y1), 0, None)
    overlap = ox * oy
    total = overlap.sum()
    return (overlap / total if total > 0 else overlap).astype(np.float32)


def ask(raster, question, bundle, options: Optional[AskOptions] = None,
        events: Optional[EventSink] = None, cancel: Optional[CancelToken] = None,
        device: str = "auto") -> Answer:
    """One question without keeping the models loaded (loads the bundle each call)."""
    return Engine(bundle, device=device, events=None).ask(raster, question, options, events, cancel)
