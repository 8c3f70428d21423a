"""build_scene: seed + size -> the complete vector description (terrain, structures, objects, land-cover
summary). Pure numpy, deterministic, cheap even for 27,328 px scenes."""

from __future__ import annotations

import math

import numpy as np

from .airport import build_airport
from .facilities import build_parking_lot, build_tank_farm
from .harbour import build_bridges, build_harbour, build_sea_ships
from .placement import CAR_COLORS, Builder, overlaps
from .scene import Curve, Lake, Scene, Sea
from .terrain import sea_depth, urban_field_points, veg_field_points, water_mask

DEFAULT_EPSG = 32633          # WGS 84 / UTM zone 33N
DEFAULT_GSD = 0.5


def _terrain(sc: Scene, rng: np.random.Generator) -> None:
    w, h = sc.width, sc.height
    e = min(w, h)
    if rng.random() < 0.85:
        side = str(rng.choice(["N", "S", "E", "W"]))
        orient = "h" if side in "NS" else "v"
        across = h if orient == "h" else w
        along = w if orient == "h" else h
        depth = rng.uniform(0.14, 0.24) * across
        base = across - depth if side in "SE" else depth
        coast = Curve(orient, base, 0.05 * across + 60, max(400.0, along / 3), sc.seed + 1, kind="coast")
        sc.sea = Sea(coast, +1 if side in "SE" else -1, side)
    if rng.random() < 0.8:
        orient = ("v" if sc.sea.coast.orient == "h" else "h") if sc.sea else str(rng.choice(["h", "v"]))
        across = w if orient == "v" else h
        along = h if orient == "v" else w
        sc.rivers.append(Curve(orient, rng.uniform(0.3, 0.7) * across, 0.08 * across, max(300.0, along / 4),
                               sc.seed + 2, width=float(np.clip(0.006 * e, 40, 120)), kind="river"))
    for k in range(int(rng.integers(0, 3))):
        r = rng.uniform(0.03, 0.07) * e
        cx, cy = rng.uniform(r + 100, w - r - 100), rng.uniform(r + 100, h - r - 100)
        if not water_mask(sc, np.array([cx, cx - r, cx + r, cx, cx]), np.array([cy, cy, cy, cy - r, cy + r])).any():
            sc.lakes.append(Lake(cx, cy, r, sc.seed + 40 + k))
    # main roads: a loose grid, nearly straight, avoiding the sea band they run along
    for orient in ("h", "v"):
        across = h if orient == "h" else w
        n = max(1, int(round(across / 3200)))
        for k in range(n):
            base = (k + rng.uniform(0.3, 0.7)) * across / n
            if sc.sea is not None and sc.sea.coast.orient == orient:
                margin = sc.sea.sign * (base - sc.sea.coast.base)
                if margin > -(sc.sea.coast.amp + 350):
                    continue
            sc.roads.append(Curve(orient, base, 0.01 * across + 20, max(500.0, across / 2),
                                  sc.seed + 60 + len(sc.roads), width=float(rng.uniform(16, 22)), kind="road"))
    for _ in range(int(rng.integers(1, 3))):
        for _try in range(20):
            cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
            if not water_mask(sc, np.array([cx]), np.array([cy])).any():
                sc.city_centres.append((float(cx), float(cy), float(rng.uniform(0.08, 0.15) * e)))
                break


def _urban_threshold(sc: Scene, rng) -> float:
    xs = np.linspace(0, sc.width, 48)[None, :]
    ys = np.linspace(0, sc.height, 48)[:, None]
    field = urban_field_points(sc, xs, ys)
    land = ~water_mask(sc, xs, ys)
    values = field[land] if land.any() else field.ravel()
    return float(np.quantile(values, rng.uniform(0.62, 0.85)))


def _road_vehicles(b: Builder) -> None:
    sc = b.scene
    for road in sc.roads:
        along = sc.width if road.orient == "h" else sc.height
        t = b.rng.uniform(50, 500)
        while t < along - 50:
            lane = road.width / 4 * (1 if b.rng.random() < 0.5 else -1)
            c = float(road.centre(t)) + lane
            x, y = (t, c) if road.orient == "h" else (c, t)
            dt = 1.0
            slope = math.atan2(float(road.centre(t + dt) - road.centre(t - dt)), 2 * dt)
            heading = (slope if road.orient == "h" else math.pi / 2 - slope) + (0 if lane > 0 else math.pi)
            spot = (x - 15, y - 15, x + 15, y + 15)
            if (0 < y < sc.height and 0 < x < sc.width and not any(overlaps(spot, o) for o in b.occupied)
                    and not water_mask(sc, np.array([x]), np.array([y])).any()
                    and float(urban_field_points(sc, x, y)) < sc.urban_threshold + 0.2):
                truck = b.rng.random() < 0.2
                length = b.rng.uniform(16, 24) if truck else b.rng.uniform(9, 12)
                b.add_object("vehicle", b.choose(CAR_COLORS), "rectangle", length, 5.5 if truck else 4.5, "moving",
                             None, "road", x, y, heading)
            t += b.rng.uniform(250, 900)


def _beach_vehicles(b: Builder) -> None:
    sc = b.scene
    if sc.sea is None or min(sc.width, sc.height) < 1000:
        return
    for _ in range(int(b.rng.integers(0, 3))):
        for _try in range(40):
            x, y = b.rng.uniform(200, sc.width - 200), b.rng.uniform(200, sc.height - 200)
            d = float(sea_depth(sc, x, y))
            spot = (x - 40, y - 40, x + 40, y + 40)
            if -32 < d < -14 and not any(overlaps(spot, o) for o in b.occupied):
                b.add_object("vehicle", b.choose(CAR_COLORS), "rectangle", b.rng.uniform(9, 12), 4.5, "parked",
                             None, "sand", x, y, b.rng.uniform(0, 2 * math.pi))
                break


def _landcover_summary(sc: Scene) -> dict:
    """Urban and water fractions on a coarse grid (4x4 samples per cell) for rural/urban questions."""
    cell = int(max(256, math.ceil(max(sc.width, sc.height) / 64 / 64) * 64))
    nx, ny = math.ceil(sc.width / cell), math.ceil(sc.height / cell)
    sub = (np.arange(4) + 0.5) / 4
    xs = ((np.arange(nx)[:, None] + sub[None, :]) * cell).ravel()[None, :]
    ys = ((np.arange(ny)[:, None] + sub[None, :]) * cell).ravel()[:, None]
    xs, ys = np.minimum(xs, sc.width - 1), np.minimum(ys, sc.height - 1)
    water = water_mask(sc, xs, ys)
    urban = (urban_field_points(sc, xs, ys) > sc.urban_threshold) & ~water
    veg = veg_field_points(sc, xs, ys)
    forest = (veg > 0.6) & ~urban & ~water
    bare = (veg < 0.29) & ~urban & ~water

    def cells(mask):
        return np.round(mask.reshape(ny, 4, nx, 4).mean(axis=(1, 3)), 2).tolist()

    land = max(1e-6, float((~water).mean()))
    fractions = {"water": round(float(water.mean()), 3), "urban": round(float(urban.mean()), 3),
                 "forest": round(float(forest.mean()), 3), "bare soil": round(float(bare.mean()), 3)}
    fractions["fields and grass"] = round(max(0.0, 1 - sum(fractions.values())), 3)
    return {"cell": cell, "grid": [nx, ny], "urban": cells(urban), "water": cells(water),
            "fractions": fractions, "urban_share_of_land": round(float(urban.mean()) / land, 3),
            "scene_type": "urban" if float(urban.mean()) / land > 0.35 else "rural",
            "note": "urban/water: fraction of each cell (row-major, rows top to bottom)"}


def build_scene(seed: int, width: int, height: int, gsd: float = DEFAULT_GSD, epsg: int = DEFAULT_EPSG) -> Scene:
    rng = np.random.default_rng([int(seed), 20250])
    # a plausible UTM 33N origin that differs per seed (whole metres: stable text in the sidecar)
    origin = (300000.0 + float(seed % 97) * 2000.0, 4700000.0 + float(seed % 89) * 2000.0)
    sc = Scene(seed=int(seed), width=int(width), height=int(height), gsd=float(gsd), epsg=int(epsg), origin=origin)
    _terrain(sc, rng)
    sc.urban_threshold = _urban_threshold(sc, rng)
    b = Builder(sc, rng)
    harbour = build_harbour(b)
    build_sea_ships(b, harbour)
    airport = build_airport(b)
    build_bridges(b)
    for k in range(int(np.clip(width * height / 150e6, 1, 4))):
        build_tank_farm(b, harbour if k == 0 else None)
    lots = int(np.clip(width * height / 60e6, 1, 5))
    anchors = [airport, harbour] + [None] * lots
    for anchor in anchors[:max(lots, 2)]:
        build_parking_lot(b, anchor)
    _road_vehicles(b)
    _beach_vehicles(b)
    sc.landcover = _landcover_summary(sc)
    return sc
