"""Cached training views: pixels read through the engine's pyramid reader, sequences laid out by
the engine's own `assemble`, stored as flat numpy arrays (npz, no pickle) so training is CPU-light.

Sequence codes: a code >= 0 is a vision token (0..G*G-1 the thumbnail's, then the view's tiles'
pooled tokens in tile order); a code < 0 is the text token id -1 - code (the separator and the
row newlines are the "\\n" token, as the converter's embeddings are).

Dense targets (dense.py) belong to images, not views: per cached image the labels of its LLM
vision tokens (the thumbnail's G x G patch tokens, a tile's g x g pooled tokens)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...benchmark.answer_kinds import KINDS as ANSWER_KINDS
from .dense import HEADS, SceneTruth
from .views import prune_keep, token_box_distance, token_box_flags, views_for_question

KINDS = {"level1": 0, "zoom": 1, "zoom-pruned": 2, "thumbnail": 3, "search": 4}
CACHE_VERSION = 3


class StaleCache(ValueError):
    """A view cache written by an older version of this code: rebuild it."""


@dataclass
class ViewCache:
    images: np.ndarray          # uint8 [N, B, B, 3]; invalid pixels already the mean colour
    codes: np.ndarray           # int32 flat sequence codes (prompt + image, no answer)
    code_offsets: np.ndarray    # int64 [S + 1]
    hr: np.ndarray              # bool flat, aligned with codes: HR token positions
    box: np.ndarray             # bool flat: HR tokens whose footprint touches the asked box
    dist: np.ndarray            # float16 flat: HR token's gap to the box in token cells (inf: none)
    answers: np.ndarray         # int32 flat answer ids (+ <|im_end|>)
    answer_offsets: np.ndarray  # int64 [S + 1]
    thumb: np.ndarray           # int32 [S] image index of the thumbnail
    tile_start: np.ndarray      # int32 [S]
    tile_count: np.ndarray      # int32 [S]
    kind: np.ndarray            # int8 [S] (KINDS)
    level: np.ndarray           # int16 [S]
    question: np.ndarray        # int32 [S] index into meta['questions']
    category: np.ndarray        # int8 [S] index into answer_kinds.KINDS (-1: not a benchmark one)
    dense: np.ndarray           # int8 [cells, len(dense.HEADS)] per image token cell (empty: none)
    dense_offsets: np.ndarray   # int64 [N + 1] (all zero without dense targets)
    image_level: np.ndarray     # int16 [N] pyramid level of each image (0: thumbnail)
    image_finest: np.ndarray    # bool [N] the image is a tile of its scene's finest level
    meta: dict
    # float16 [len(codes), 2]: HR tokens' normalised centres in the image (the RFM's image_xy
    # input; 0 elsewhere). Empty in caches written before it.
    xy: np.ndarray = None

    def __len__(self) -> int:
        return int(self.thumb.size)

    def sample(self, i: int) -> dict:
        a, b = self.code_offsets[i], self.code_offsets[i + 1]
        c, d = self.answer_offsets[i], self.answer_offsets[i + 1]
        return {"codes": self.codes[a:b], "hr": self.hr[a:b], "box": self.box[a:b],
                "dist": self.dist[a:b],
                "answer": self.answers[c:d], "thumb": int(self.thumb[i]),
                "tiles": np.arange(self.tile_start[i], self.tile_start[i] + self.tile_count[i]),
                "kind": int(self.kind[i]), "level": int(self.level[i]),
                "category": int(self.category[i]),
                "xy": (self.xy[a:b] if self.xy is not None and len(self.xy) else
                       np.zeros((b - a, 2), np.float16))}

    @property
    def has_dense(self) -> bool:
        return self.dense.shape[0] > 0

    def image_targets(self, i: int) -> np.ndarray:
        """int8 [cells, heads] of image i (its token grid in raster order)."""
        return self.dense[self.dense_offsets[i]:self.dense_offsets[i + 1]]

    def save(self, path) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        arrays = {k: getattr(self, k) for k in self.__dataclass_fields__
                  if k != "meta" and getattr(self, k) is not None}
        np.savez(tmp, meta=np.frombuffer(json.dumps(self.meta).encode(), dtype=np.uint8), **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path) -> "ViewCache":
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            if meta.get("version") != CACHE_VERSION:
                raise StaleCache(f"{path} is an old view cache; delete it to rebuild")
            values = {k: data[k] for k in cls.__dataclass_fields__ if k != "meta" and k in data}
        return cls(meta=meta, **values)


class _Builder:
    def __init__(self, recipe, text):
        self.recipe, self.text = recipe, text
        self.images: List[np.ndarray] = []
        self.n_images = 0
        self.dense: List[np.ndarray] = []
        self.image_level: List[np.ndarray] = []
        self.image_finest: List[np.ndarray] = []
        self.rows: Dict[str, list] = {k: [] for k in ("codes", "hr", "box", "dist", "xy", "answers", "thumb",
                                                        "tile_start", "tile_count", "kind",
                                                        "level", "question", "category")}
        self.questions: List[dict] = []
        mean = np.asarray(recipe_mean(), dtype=np.float32) * 255.0
        self.fill = np.round(mean).astype(np.uint8)

    def add_images(self, pixels: np.ndarray, valid: np.ndarray, level: int, finest: bool,
                   targets: Optional[np.ndarray] = None) -> int:
        """Append images (a thumbnail or tiles of one level) and their dense targets, if any:
        int8 [n_images * cells, heads], each image's cells in raster order."""
        pixels = np.array(pixels, dtype=np.uint8, copy=True)
        pixels[~valid] = self.fill      # what the engine's normalise does with padding / nodata
        start = self.n_images
        self.images.append(pixels.reshape(-1, *pixels.shape[-3:]))
        n = self.images[-1].shape[0]
        self.n_images += n
        self.image_level.append(np.full(n, level, np.int16))
        self.image_finest.append(np.full(n, finest, bool))
        if targets is not None:
            self.dense.append(np.asarray(targets, np.int8).reshape(n, -1, targets.shape[-1]))
        return start

    def finish(self, meta: dict) -> ViewCache:
        r = self.rows
        def flat(parts, dtype):
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
        def offsets(parts):
            return np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        b = self.recipe.tile_size
        images = (np.concatenate(self.images) if self.images
                  else np.zeros((0, b, b, 3), np.uint8))
        meta = dict(meta, version=CACHE_VERSION, questions=self.questions)
        if self.dense:
            per_image = [t for block in self.dense for t in block]
            dense = np.concatenate(per_image)
            dense_offsets = offsets(per_image)
        else:
            dense = np.zeros((0, len(HEADS)), np.int8)
            dense_offsets = np.zeros(self.n_images + 1, np.int64)
        return ViewCache(dense=dense, dense_offsets=dense_offsets,
                         image_level=flat(self.image_level, np.int16),
                         image_finest=flat(self.image_finest, bool),
                         category=np.asarray(r["category"], np.int8),images=images, codes=flat(r["codes"], np.int32),
                         code_offsets=offsets(r["codes"]), hr=flat(r["hr"], bool),
                         box=flat(r["box"], bool), dist=flat(r["dist"], np.float16),
                         xy=(np.concatenate(r["xy"]).astype(np.float16) if r["xy"]
                             else np.zeros((0, 2), np.float16)),
                         answers=flat(r["answers"], np.int32),
                         answer_offsets=offsets(r["answers"]),
                         thumb=np.asarray(r["thumb"], np.int32),
                         tile_start=np.asarray(r["tile_start"], np.int32),
                         tile_count=np.asarray(r["tile_count"], np.int32),
                         kind=np.asarray(r["kind"], np.int8), level=np.asarray(r["level"], np.int16),
                         question=np.asarray(r["question"], np.int32), meta=meta)


def recipe_mean():
    from ..llava_parts import CLIP_MEAN
    return CLIP_MEAN


def build_view_cache(scenes: Sequence[Tuple[Path, Sequence[dict]]], recipe, text, kinds: Sequence[str],
                     seed: int, events=None, cancel=None) -> ViewCache:
    """Views of every question of every (image path, questions) pair, read through the engine."""
    from ...engine.progress import emit, progress_event
    from ...engine.pyramid import level_valid_token_shape, plan_pyramid
    from ...engine.raster import RasterSource
    from ...engine.reader import PyramidReader
    from ...engine.select import image_xy
    from ...engine.sequence import assemble, level_tokens

    builder = _Builder(recipe, text)
    G, g = recipe.patch_grid, recipe.pooled_grid
    with_dense = recipe.uses_dense_heads
    thumb_codes = np.arange(G * G, dtype=np.float32)[:, None]
    newline_code = np.array([[-1.0 - text.newline_id]], dtype=np.float32)
    for scene_index, (image, questions) in enumerate(scenes):
        if cancel is not None:
            cancel.raise_if_cancelled()
        rng = np.random.default_rng([int(seed), scene_index])
        with RasterSource(image) as source:
            plan = plan_pyramid(source.width, source.height, recipe.tile_size, g)
            reader = PyramidReader(source, plan)
            finest = len(plan.levels)
            truth = SceneTruth.from_image(image) if with_dense else None
            thumb = builder.add_images(*reader.read_thumbnail(), 0, False,
                                       truth.targets(plan, 0, [(0, 0)], G) if truth else None)
            level1_start = None     # level 1 is the same for every question of a scene: store once
            for q in questions:
                box = q.get("hbox")
                box = tuple(float(v) for v in box) if box else None
                prefix, suffix = text.segments(q["text"])
                prefix_codes = (-1.0 - np.asarray(prefix, np.float32))[:, None]
                suffix_codes = (-1.0 - np.asarray(suffix, np.float32))[:, None]
                answer = text.answer(q["ground_truth"])
                q_index = len(builder.questions)
                category = q.get("category", "")
                category_index = ANSWER_KINDS.index(category) if category in ANSWER_KINDS else -1
                builder.questions.append({"question_id": q["question_id"], "image": q["image"],
                                          "category": q.get("category", ""),
                                          "ground_truth": q["ground_truth"]})
                for view in views_for_question(plan, box, kinds, rng, recipe.max_view_tiles,
                                               recipe.alpha, recipe.search_tiles):
                    kind = KINDS[view.kind]
                    if view.tiles:
                        if view.kind == "level1" and level1_start is not None:
                            start = level1_start
                        else:
                            pixels, valid = reader.read_tiles(view.level, view.tiles)
                            targets = truth.targets(plan, view.level, view.tiles, g) if truth \
                                else None
                            start = builder.add_images(pixels, valid, view.level,
                                                       view.level == finest, targets)
                            if view.kind == "level1":
                                level1_start = start
                        codes = (G * G + np.arange(len(view.tiles) * g * g, dtype=np.float32))
                        tokens = level_tokens(plan, view.level, view.tiles,
                                              codes.reshape(-1, g, g, 1),
                                              level_valid_token_shape(plan, view.level))
                        flags = token_box_flags(plan, view.level, tokens.rows, tokens.cols, box)
                        dist = token_box_distance(plan, view.level, tokens.rows, tokens.cols, box)
                    else:
                        start, tokens, flags = builder.n_images, None, np.zeros(0, dtype=bool)
                        dist = np.zeros(0, dtype=np.float32)
                    if view.keep_fraction < 1.0:
                        keep = prune_keep(flags, view.keep_fraction, rng)
                        tokens, flags, kind = tokens.subset(keep), flags[keep], KINDS["zoom-pruned"]
                        dist = dist[keep]
                    seq = assemble(prefix_codes, thumb_codes, newline_code, newline_code, tokens,
                                   suffix_codes)
                    xy = image_xy(plan, view.level, tokens.rows, tokens.cols, seq.length,
                                  seq.hr_positions) if tokens is not None else \
                        np.zeros((seq.length, 2), np.float32)
                    box_mask = np.zeros(seq.length, dtype=bool)
                    dist_row = np.full(seq.length, np.inf, dtype=np.float32)
                    if flags.size:
                        box_mask[seq.hr_positions[flags]] = True
                        dist_row[seq.hr_positions] = dist
                    r = builder.rows
                    r["codes"].append(np.rint(seq.embeds[:, 0]).astype(np.int32))
                    r["hr"].append(seq.hr_mask)
                    r["box"].append(box_mask)
                    r["dist"].append(dist_row)
                    r["xy"].append(xy)
                    r["answers"].append(np.asarray(answer, np.int32))
                    r["thumb"].append(thumb)
                    r["tile_start"].append(start)
                    r["tile_count"].append(len(view.tiles))
                    r["kind"].append(kind)
                    r["level"].append(view.level)
                    r["question"].append(q_index)
                    r["category"].append(category_index)
        emit(events, progress_event("data", (scene_index + 1) / len(scenes),
                                    f"views of {Path(image).name}: {len(questions)} questions"))
    return builder.finish({"kinds": list(kinds), "seed": int(seed),
                           "images": [str(Path(p).name) for p, _ in scenes],
                           "dense_grids": [G, g] if with_dense else None})
