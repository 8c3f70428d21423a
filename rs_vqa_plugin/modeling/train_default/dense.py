"""Dense targets for the vision tower: what each LLM vision token's cell shows, from the scene's
known geometry (training only; the heads that predict them are not exported).

Per token cell of a cached image (the thumbnail's patch grid, a tile's pooled grid), six labels:
- category: 0 = no object, 1.. = the category of the object that fills the cell most;
- color, shape, status, background (the surface under it, as the questions' answers): that
  object's attributes;
- landcover: the ground class most of the cell shows (water, built-up, road, concrete, ...).
IGNORE where a label is not knowable from the pixels: padding, cells an object only grazes or
whose object is under MIN_VISIBLE_PX long at that level (the thumbnail's 1-px ships), cells with
only an object's shadow or wake (object heads), objects without a status.

Objects come from the scene's sidecar (boxes and attributes as the questions use them); the ground
classes from re-rendering the scene's ground with the generator (build_scene is a pure function
of seed and size), checked against the sidecar so a changed generator cannot silently mislabel."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ...benchmark.references import BACKGROUNDS, CATEGORIES, COLORS, SHAPES, STATUSES
from ...engine.geo import level_cell_to_source

IGNORE = -1
HEADS = ("category", "color", "shape", "status", "background", "landcover")
# Ground classes of benchmark.landcover.CLASSES grouped into what a question or a map would name.
LANDCOVER = {
    "water": ("water", "shallow water"),
    "sand": ("sand",),
    "grass": ("grass", "airfield grass"),
    "fields": ("crop green", "crop yellow", "ploughed", "crop dark", "hedge"),
    "forest": ("forest", "tree"),
    "bare soil": ("bare soil", "bund"),
    "built-up": ("urban ground", "street", "roof red", "roof grey", "roof white", "roof blue",
                 "roof beige", "roof dark", "warehouse"),
    "road": ("road", "marking white"),
    "concrete": ("concrete",),
    "runway": ("runway",),
    "taxiway": ("taxiway", "marking yellow"),
    "parking lot": ("parking",),
    "gravel": ("gravel",),
}
CLASSES: Dict[str, Tuple[str, ...]] = {
    "category": ("none",) + tuple(CATEGORIES), "color": tuple(COLORS), "shape": tuple(SHAPES),
    "status": tuple(STATUSES), "background": tuple(BACKGROUNDS), "landcover": tuple(LANDCOVER),
}
MIN_VISIBLE_PX = 3.0      # an object shorter than this at a level is a dot: no object label there
MIN_FILL = 0.25           # share of the object's box (or of the cell) inside the cell to label it
MIN_CONTENT = 0.5         # share of a cell that must be image (not padding) to label it at all
GROUND_SAMPLES = 6        # per cell side: the ground class is the majority of 6 x 6 samples


def _index(names: Sequence[str], value) -> int:
    try:
        return list(names).index(value)
    except ValueError:
        return IGNORE


def _ground_lookup() -> np.ndarray:
    """benchmark.landcover class id -> LANDCOVER index."""
    from ...benchmark.landcover import CLASSES as GROUND

    names = list(LANDCOVER)
    lut = np.full(len(GROUND), IGNORE, dtype=np.int8)
    for cid, (name, _, _) in enumerate(GROUND):
        for group, members in LANDCOVER.items():
            if name in members:
                lut[cid] = names.index(group)
    missing = [GROUND[i][0] for i in np.flatnonzero(lut == IGNORE)]
    if missing:
        raise ValueError(f"ground classes {missing} have no land-cover group in dense.LANDCOVER")
    return lut


class SceneTruth:
    """A scene's objects (from its sidecar) and its ground class map, for dense_targets."""

    def __init__(self, sidecar: dict, ground: np.ndarray):
        self.width, self.height = (int(v) for v in sidecar["size"])
        objects = sidecar["objects"]
        self.boxes = np.array([o["bbox"] for o in objects], dtype=np.float64).reshape(-1, 4)
        self.length = np.array([float(o["size_px"]) for o in objects], dtype=np.float64)
        self.labels = np.array([[_index(CLASSES["category"], o["category"]),
                                 _index(COLORS, o["color"]), _index(SHAPES, o["shape"]),
                                 _index(STATUSES, o.get("status")),
                                 _index(BACKGROUNDS, o.get("background"))] for o in objects],
                               dtype=np.int8).reshape(-1, 5)
        self.ground = ground              # uint8 [H, W] land-cover index per source pixel
        self.extents = self.boxes.copy()  # body + shadow + wake: replaced by from_image

    @classmethod
    def from_image(cls, image) -> "SceneTruth":
        """Read the scene's sidecar, rebuild the scene from its seed, render its ground classes."""
        from ...benchmark.landcover import render_ground
        from ...benchmark.layout import build_scene
        from ...benchmark.objects import draw_extent
        from ...benchmark.scene import read_sidecar
        from ...engine.errors import InputError

        sidecar = read_sidecar(image)
        width, height = (int(v) for v in sidecar["size"])
        scene = build_scene(int(sidecar["seed"]), width, height, float(sidecar["gsd"]))
        if [list(map(int, o.bbox)) for o in scene.objects] != [list(o["bbox"]) for o in sidecar["objects"]]:
            raise InputError(f"{Path(image).name}: its sidecar's objects differ from the scene its "
                             "seed builds now (the generator changed?): delete the run's data folder "
                             "to regenerate the scenes.")
        lut = _ground_lookup()
        ground = np.empty((height, width), dtype=np.int8)
        patches = sorted(scene.patches, key=lambda p: p.layer)
        step = 512
        for y in range(0, height, step):
            for x in range(0, width, 2048):
                h, w = min(step, height - y), min(2048, width - x)
                cls_map, _ = render_ground(scene, x, y, w, h, patches)
                ground[y:y + h, x:x + w] = lut[cls_map]
        truth = cls(sidecar, ground)
        truth.extents = np.array([draw_extent(o) for o in scene.objects],
                                 dtype=np.float64).reshape(-1, 4)
        return truth

    # ------------------------------------------------------------------ targets
    def targets(self, plan, level: int, tiles: Sequence[Tuple[int, int]], grid: int) -> np.ndarray:
        """int8 [len(tiles) * grid * grid, len(HEADS)]: the labels of each tile's grid x grid token
        cells (raster order within a tile, tiles in the given order). level 0 = the thumbnail."""
        return np.concatenate([self._tile(plan, level, r, c, grid) for r, c in tiles]) if tiles \
            else np.zeros((0, len(HEADS)), np.int8)

    def _tile(self, plan, level: int, row: int, col: int, grid: int) -> np.ndarray:
        b = plan.tile_size
        cell = b / grid
        if level == 0:
            content = plan.thumbnail
            scale_x, scale_y = content.content_width / self.width, content.content_height / self.height
        else:
            content = plan.level(level)
            scale_x, scale_y = content.scale_x, content.scale_y
        rects = np.array([level_cell_to_source(plan, level, col * b + j * cell, row * b + i * cell,
                                               col * b + (j + 1) * cell, row * b + (i + 1) * cell)
                          for i in range(grid) for j in range(grid)], dtype=np.float64)
        out = np.full((grid * grid, len(HEADS)), IGNORE, dtype=np.int8)
        area = (rects[:, 2] - rects[:, 0]) * (rects[:, 3] - rects[:, 1])
        full = (cell / scale_x) * (cell / scale_y)
        ok = area >= MIN_CONTENT * full
        if not ok.any():
            return out
        out[ok, HEADS.index("landcover")] = self._ground(rects[ok])
        self._objects(rects, ok, area, min(scale_x, scale_y), out)
        return out

    def _ground(self, rects: np.ndarray) -> np.ndarray:
        s = (np.arange(GROUND_SAMPLES) + 0.5) / GROUND_SAMPLES
        xs = rects[:, 0:1] + (rects[:, 2:3] - rects[:, 0:1]) * s[None, :]
        ys = rects[:, 1:2] + (rects[:, 3:4] - rects[:, 1:2]) * s[None, :]
        xs = np.clip(xs.astype(np.int64), 0, self.width - 1)
        ys = np.clip(ys.astype(np.int64), 0, self.height - 1)
        samples = self.ground[ys[:, :, None], xs[:, None, :]].reshape(len(rects), -1)
        counts = np.zeros((len(rects), len(LANDCOVER)), dtype=np.int32)
        np.add.at(counts, (np.repeat(np.arange(len(rects)), samples.shape[1]), samples.ravel()), 1)
        return counts.argmax(1).astype(np.int8)

    def _objects(self, rects, ok, area, scale: float, out) -> None:
        cat = HEADS.index("category")
        out[ok, cat] = 0                       # no object, unless one is found below
        if not len(self.boxes):
            return
        x0, y0 = rects[:, 0].min(), rects[:, 1].min()
        x1, y1 = rects[:, 2].max(), rects[:, 3].max()
        near = np.flatnonzero((self.extents[:, 0] < x1) & (self.extents[:, 2] > x0)
                              & (self.extents[:, 1] < y1) & (self.extents[:, 3] > y0))
        if not near.size:
            return
        def overlap(boxes):
            w = np.minimum(rects[:, None, 2], boxes[None, :, 2]) - np.maximum(rects[:, None, 0], boxes[None, :, 0])
            h = np.minimum(rects[:, None, 3], boxes[None, :, 3]) - np.maximum(rects[:, None, 1], boxes[None, :, 1])
            return np.clip(w, 0, None) * np.clip(h, 0, None)
        touched = (overlap(self.extents[near]) > 0) & ok[:, None]
        inter = overlap(self.boxes[near])
        box_area = np.maximum(1.0, (self.boxes[near, 2] - self.boxes[near, 0])
                              * (self.boxes[near, 3] - self.boxes[near, 1]))
        fills = inter >= MIN_FILL * np.minimum(box_area[None, :], area[:, None])
        visible = self.length[near] * scale >= MIN_VISIBLE_PX
        labelled = fills & visible[None, :] & (inter > 0) & ok[:, None]
        # a shadow, a wake, a grazing or sub-pixel object: the cell is neither empty nor readable
        out[touched.any(1) & ~labelled.any(1), cat] = IGNORE
        rows = np.flatnonzero(labelled.any(1))
        if rows.size:
            best = near[np.argmax(np.where(labelled[rows], inter[rows], -1.0), axis=1)]
            out[rows, :5] = self.labels[best]


def class_counts() -> List[int]:
    return [len(CLASSES[h]) for h in HEADS]
