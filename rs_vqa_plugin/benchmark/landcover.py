"""Ground classes of a pixel window: fields, forest, bare soil, urban blocks, water, beaches, roads,
then the structures' patches; each class has a colour and a texture strength."""

from __future__ import annotations

import numpy as np

from .noise import hash2, unit
from .scene import Scene
from .terrain import lake_mask, urban_field_grid, veg_field_grid

# class id -> (name, RGB, texture amplitude)
CLASSES = [
    ("grass", (96, 128, 64), 0.25), ("forest", (40, 70, 38), 0.75), ("bare soil", (150, 124, 92), 0.3),
    ("crop green", (112, 150, 72), 0.2), ("crop yellow", (186, 170, 102), 0.2),
    ("ploughed", (122, 96, 72), 0.3), ("crop dark", (72, 110, 56), 0.2), ("hedge", (48, 78, 44), 0.5),
    ("urban ground", (146, 146, 136), 0.25), ("street", (86, 86, 90), 0.1), ("water", (36, 68, 94), 0.06),
    ("sand", (205, 190, 150), 0.12), ("road", (80, 80, 84), 0.08), ("concrete", (178, 176, 170), 0.1),
    ("runway", (68, 68, 72), 0.08), ("taxiway", (96, 96, 98), 0.08), ("marking white", (236, 236, 236), 0.0),
    ("marking yellow", (222, 192, 44), 0.0), ("gravel", (170, 160, 140), 0.2), ("parking", (62, 62, 66), 0.08),
    ("airfield grass", (112, 140, 74), 0.15), ("bund", (118, 108, 94), 0.2),
    ("roof red", (152, 72, 56), 0.08), ("roof grey", (120, 120, 126), 0.08), ("roof white", (214, 214, 208), 0.05),
    ("roof blue", (82, 100, 128), 0.08), ("roof beige", (190, 170, 140), 0.08), ("roof dark", (62, 62, 66), 0.08),
    ("tree", (38, 64, 38), 0.7), ("warehouse", (150, 160, 176), 0.05), ("shallow water", (52, 92, 112), 0.12),
]
C = {name.replace(" ", "_").upper(): index for index, (name, _, _) in enumerate(CLASSES)}
PALETTE = np.array([rgb for _, rgb, _ in CLASSES], dtype=np.float32)
TEXTURE = np.array([amp for _, _, amp in CLASSES], dtype=np.float32)
ROOFS = np.array([C["ROOF_RED"], C["ROOF_GREY"], C["ROOF_WHITE"], C["ROOF_BLUE"], C["ROOF_BEIGE"],
                  C["ROOF_DARK"], C["ROOF_GREY"], C["ROOF_RED"], C["TREE"], C["URBAN_GROUND"]], np.uint8)
FIELD_TYPES = np.array([C["GRASS"], C["CROP_GREEN"], C["CROP_YELLOW"], C["PLOUGHED"], C["CROP_DARK"],
                        C["CROP_GREEN"]], np.uint8)

PARCEL_W, PARCEL_H = 340, 280        # agricultural parcels (px)
CELL = 40                            # urban building lot (px); a street every 3 lots
STREET = 10


def _fields(scene: Scene, x0, y0, w, h, cls, stripes):
    """Parcels in brick rows: type and stripe direction per parcel, hedges on the borders."""
    xs = np.arange(x0, x0 + w)
    ys = np.arange(y0, y0 + h)
    rows = ys // PARCEL_H
    for row in np.unique(rows):
        sel = slice(int(np.searchsorted(rows, row)), int(np.searchsorted(rows, row, side="right")))
        shift = int(unit(hash2(row, 7, scene.seed + 5)) * PARCEL_W)
        col = (xs + shift) // PARCEL_W
        ph = hash2(col, row, scene.seed + 6)
        kind = FIELD_TYPES[(ph % np.uint32(len(FIELD_TYPES))).astype(np.int64)]
        vertical = ((ph >> np.uint32(8)) & np.uint32(1)).astype(bool)
        hedge_x = ((xs + shift) % PARCEL_W) < 4
        yy = ys[sel]
        hedge_y = (yy % PARCEL_H) < 4
        cls[sel] = kind[None, :]
        cls[sel][hedge_y[:, None] | hedge_x[None, :]] = C["HEDGE"]
        stripe_v = ((xs // 3) % 2).astype(np.float32)
        stripe_h = ((yy // 3) % 2).astype(np.float32)
        stripes[sel] = np.where(vertical[None, :], stripe_v[None, :], stripe_h[:, None])


def _urban(scene: Scene, x0, y0, w, h):
    """Urban lots: a building per lot (insets vary per lot column / row), streets every 3 lots."""
    xs = np.arange(x0, x0 + w)
    ys = np.arange(y0, y0 + h)
    ix, iy = xs // CELL, ys // CELL
    lx, ly = xs % CELL, ys % CELL
    seed = scene.seed + 31
    left = 3 + (hash2(ix, 1, seed) % np.uint32(9)).astype(np.int64)
    right = CELL - 3 - (hash2(ix, 2, seed) % np.uint32(9)).astype(np.int64)
    top = 3 + (hash2(iy, 3, seed) % np.uint32(9)).astype(np.int64)
    bottom = CELL - 3 - (hash2(iy, 4, seed) % np.uint32(9)).astype(np.int64)
    in_x = (lx >= left) & (lx < right)
    in_y = (ly >= top) & (ly < bottom)
    street_x = ((ix % 3) == 0) & (lx < STREET)
    street_y = ((iy % 3) == 0) & (ly < STREET)
    cells_x = np.arange(ix[0], ix[-1] + 1)
    cells_y = np.arange(iy[0], iy[-1] + 1)
    roof_of_cell = ROOFS[(hash2(cells_x[None, :], cells_y[:, None], seed) % np.uint32(len(ROOFS))).astype(np.int64)]
    roof = roof_of_cell[(iy - cells_y[0])[:, None], (ix - cells_x[0])[None, :]]
    urban = np.where(in_y[:, None] & in_x[None, :], roof, np.uint8(C["URBAN_GROUND"]))
    # a darker half-roof gives buildings a gable and a sense of height
    gable = (in_y[:, None] & in_x[None, :]) & ((lx < (left + right) // 2)[None, :])
    urban[street_y[:, None] | street_x[None, :]] = C["STREET"]
    return urban, gable


BUSH_CELL = 36                       # at most one bush or rock per cell of open land


def _clutter(scene: Scene, x0, y0, w, h):
    """Bushes and rocks scattered over open land: a disc at a hashed spot in some cells.

    Offsets depend on the cell column / row only and the radius on the cell, so it costs one
    small gather and a few broadcast operations per pixel.
    """
    xs = np.arange(x0, x0 + w)
    ys = np.arange(y0, y0 + h)
    ix, iy = xs // BUSH_CELL, ys // BUSH_CELL
    seed = scene.seed + 41
    ox = 6 + (hash2(ix, 5, seed) % np.uint32(BUSH_CELL - 12)).astype(np.float32)
    oy = 6 + (hash2(iy, 6, seed) % np.uint32(BUSH_CELL - 12)).astype(np.float32)
    dx2 = ((xs % BUSH_CELL) - ox) ** 2
    dy2 = ((ys % BUSH_CELL) - oy) ** 2
    cells_x = np.arange(ix[0], ix[-1] + 1)
    cells_y = np.arange(iy[0], iy[-1] + 1)
    hc = hash2(cells_x[None, :], cells_y[:, None], seed + 1)
    radius = np.where((hc % np.uint32(100)) < 22, 1.5 + ((hc >> np.uint32(8)) % np.uint32(4)), 0).astype(np.float32)
    r2 = np.take(np.take(radius ** 2, iy - cells_y[0], axis=0), ix - cells_x[0], axis=1)
    return (dy2[:, None] + dx2[None, :]) < r2


def paint_patches(patches, x0, y0, w, h, cls):
    for patch in patches:
        px1, py1 = max(int(round(patch.x1)) - x0, 0), max(int(round(patch.y1)) - y0, 0)
        px2, py2 = min(int(round(patch.x2)) - x0, w), min(int(round(patch.y2)) - y0, h)
        if px1 < px2 and py1 < py2:
            cls[py1:py2, px1:px2] = patch.cls


def _band(curve, x0, y0, w, h, half):
    """The part of the window within `half` px of a curve: (slices, signed offset there) or None."""
    if curve.orient == "h":
        centre = curve.centre_range(x0, w)
        lo = max(0, int(np.floor(centre.min() - half)) - y0)
        hi = min(h, int(np.ceil(centre.max() + half)) - y0 + 1)
        if lo >= hi:
            return None
        ys = np.arange(y0 + lo, y0 + hi, dtype=np.float32)[:, None]
        return (slice(lo, hi), slice(0, w)), ys - centre[None, :]
    centre = curve.centre_range(y0, h)
    lo = max(0, int(np.floor(centre.min() - half)) - x0)
    hi = min(w, int(np.ceil(centre.max() + half)) - x0 + 1)
    if lo >= hi:
        return None
    xs = np.arange(x0 + lo, x0 + hi, dtype=np.float32)[None, :]
    return (slice(0, h), slice(lo, hi)), xs - centre[:, None]


def _beyond(curve, sign, x0, y0, w, h, half, band):
    """Slices of the window lying wholly on the `sign` side of a curve's band (or None)."""
    if curve.orient == "h":
        centre = curve.centre_range(x0, w)
        lo = max(0, int(np.floor(centre.min() - half)) - y0)
        hi = min(h, int(np.ceil(centre.max() + half)) - y0 + 1)
        if lo >= hi:       # the band misses the window: all of it is on one side
            side = 1 if y0 > centre.max() else -1
            return (slice(0, h), slice(0, w)) if side == sign else None
        return (slice(hi, h), slice(0, w)) if sign > 0 else (slice(0, lo), slice(0, w))
    centre = curve.centre_range(y0, h)
    lo = max(0, int(np.floor(centre.min() - half)) - x0)
    hi = min(w, int(np.ceil(centre.max() + half)) - x0 + 1)
    if lo >= hi:
        side = 1 if x0 > centre.max() else -1
        return (slice(0, h), slice(0, w)) if side == sign else None
    return (slice(0, h), slice(hi, w)) if sign > 0 else (slice(0, h), slice(0, lo))


def render_ground(scene: Scene, x0: int, y0: int, w: int, h: int, patches=None):
    """Ground class (uint8 [h, w]) and a brightness factor (float32 [h, w]) for a pixel window.

    `patches`: the structure patches meeting the window, in paint order (default: all of them).
    """
    xs = np.arange(x0, x0 + w, dtype=np.float32)[None, :]
    ys = np.arange(y0, y0 + h, dtype=np.float32)[:, None]
    window = (x0, y0, x0 + w, y0 + h)
    cls = np.empty((h, w), dtype=np.uint8)
    stripes = np.zeros((h, w), dtype=np.float32)
    _fields(scene, x0, y0, w, h, cls, stripes)
    veg = veg_field_grid(scene, x0, y0, w, h)
    cls[veg > 0.60] = C["FOREST"]
    cls[(veg < 0.33) & (veg >= 0.29)] = C["GRASS"]
    cls[veg < 0.29] = C["BARE_SOIL"]
    open_land = cls <= C["HEDGE"]
    open_land &= cls != C["FOREST"]
    cls[open_land & _clutter(scene, x0, y0, w, h)] = C["HEDGE"]
    shade = np.ones((h, w), dtype=np.float32)
    urb = urban_field_grid(scene, x0, y0, w, h) > scene.urban_threshold
    gable = None
    if urb.any():
        urban, gable = _urban(scene, x0, y0, w, h)
        cls[urb] = urban[urb]
        gable &= urb
    water = np.zeros((h, w), dtype=bool)
    if scene.sea is not None:
        band = _band(scene.sea.coast, x0, y0, w, h, 60.0)
        sea_side = _beyond(scene.sea.coast, scene.sea.sign, x0, y0, w, h, 60.0, band)
        if sea_side is not None:
            water[sea_side] = True
        if band is not None:
            sl, off = band
            depth = scene.sea.sign * off
            sub = cls[sl]
            sub[(depth > -45) & (depth <= 0)] = C["SAND"]
            sub[(depth > 0) & (depth < 60)] = C["SHALLOW_WATER"]
            water[sl] |= depth >= 60
    for river in scene.rivers:
        band = _band(river, x0, y0, w, h, river.width / 2)
        if band is not None:
            sl, off = band
            water[sl] |= np.abs(off) < river.width / 2
    if scene.lakes:
        water |= lake_mask(scene, xs, ys, window)
    cls[water] = C["WATER"]
    if scene.water_patches:
        paint_patches(scene.water_patches, x0, y0, w, h, cls)
    for road in scene.roads:
        band = _band(road, x0, y0, w, h, road.width / 2)
        if band is None:
            continue
        sl, off = band
        sub = cls[sl]
        off = np.abs(off)
        on_road = (off < road.width / 2) & (sub != C["WATER"]) & (sub != C["SHALLOW_WATER"])
        sub[on_road] = C["ROAD"]
        along = (np.arange(x0, x0 + w)[None, :] if road.orient == "h" else np.arange(y0, y0 + h)[sl[0], None])
        dash = ((along // 24) % 2) == 0
        sub[(off < 1.0) & dash & on_road] = C["MARKING_WHITE"]
    if patches is None:
        patches = sorted(scene.patches, key=lambda p: p.layer)
    paint_patches(patches, x0, y0, w, h, cls)
    if gable is not None:       # shade half-roofs only where buildings survived water and structures
        gable &= (cls >= C["ROOF_RED"]) & (cls <= C["ROOF_DARK"])
        shade[gable] = 0.85
    # crop rows only where crops survived water, roads and structures
    stripes *= (cls <= C["CROP_DARK"]) & (cls >= C["CROP_GREEN"])
    stripes *= 0.07
    shade -= stripes
    return cls, shade
