"""Harbour (quay, piers, warehouses, docked ships, containers), ships at sea and river bridges."""

from __future__ import annotations

import math

import numpy as np

from .frames import Frame
from .landcover import C
from .placement import CAR_COLORS, CONTAINER_COLORS, SHIP_COLORS, Builder
from .terrain import curve_offset, sea_depth

PIER_WIDTH = 28


def _ship(b: Builder, ctx, cx, cy, angle, length, status, wake=False):
    shape = "rectangle" if b.rng.random() < 0.25 else "elongated"
    width = length * b.rng.uniform(0.17, 0.24)
    return b.add_object("ship", b.choose(SHIP_COLORS), shape, length, width, status, ctx, "water",
                        cx, cy, angle, wake)


def build_harbour(b: Builder):
    sc = b.scene
    if sc.sea is None:
        return None
    coast = sc.sea.coast
    frame = Frame(coast.orient)
    along = frame.along_extent(sc.width, sc.height)
    across = frame.across_extent(sc.width, sc.height)
    length = float(np.clip(0.22 * along, 600, 2000))
    sign = sc.sea.sign
    if 0.84 * along <= length:
        return None         # the scene is too small for a harbour
    for _ in range(30):
        a0 = b.rng.uniform(0.08 * along, 0.92 * along - length)
        if any(abs(float(r.centre(coast.base)) - (a0 + length / 2)) < length / 2 + r.width + 150
               for r in sc.rivers):
            continue
        seaward = sign * coast.centre(np.arange(a0, a0 + length, 8.0))     # coast, seaward coordinate
        quay_front = float(seaward.max()) + 30
        quay_back = float(seaward.min()) - 150
        pier_len = float(np.clip(0.3 * length, 240, 650))
        basin_end = quay_front + pier_len + 110
        c_lo, c_hi = sorted((sign * quay_back, sign * basin_end))
        if c_lo < 60 or c_hi > across - 60:
            continue
        rect = frame.rect(a0, sign * quay_back, a0 + length, sign * basin_end)
        if b.is_free(rect, 100):
            break
    else:
        return None
    b.take(rect)
    ctx = b.context("harbour", rect, "harbour")
    c = lambda s: sign * s      # seaward coordinate -> across pixel coordinate  # noqa: E731
    from .scene import Patch
    sc.water_patches.append(Patch(C["WATER"], *frame.rect(a0, c(quay_front), a0 + length, c(basin_end))))
    b.patch(C["CONCRETE"], frame.rect(a0, c(quay_back), a0 + length, c(quay_front)), layer=1)
    # warehouses at the back of the quay
    a = a0 + 30
    while a < a0 + length - 150:
        w = b.rng.uniform(110, 240)
        b.patch(C["WAREHOUSE"], frame.rect(a, c(quay_back + 20), min(a + w, a0 + length - 20),
                                           c(quay_back + 20 + b.rng.uniform(60, 90))), layer=2)
        a += w + b.rng.uniform(30, 90)
    n_piers = max(2, int(length // 260))
    pitch = length / n_piers
    angle_out = frame.across_angle if sign > 0 else frame.across_angle + math.pi
    for i in range(n_piers):
        pa = a0 + (i + 0.5) * pitch
        b.patch(C["CONCRETE"], frame.rect(pa - PIER_WIDTH / 2, c(quay_front - 5), pa + PIER_WIDTH / 2,
                                          c(quay_front + pier_len)), layer=1)
        for side in (-1, 1):
            s = quay_front + 15
            while True:
                ship_len = b.rng.uniform(30, 80)
                if s + ship_len > quay_front + pier_len - 5:
                    break
                if b.rng.random() < 0.6:
                    offset = PIER_WIDTH / 2 + ship_len * 0.12 + 4
                    x, y = frame.point(pa + side * offset, c(s + ship_len / 2))
                    heading = angle_out + (math.pi if b.rng.random() < 0.5 else 0)
                    _ship(b, ctx, x, y, heading, ship_len, "docked")
                s += ship_len + b.rng.uniform(12, 40)
    # containers in rows on the quay front, trucks between them
    quay_depth = quay_front - quay_back
    row_s = quay_front - 40
    a = a0 + 40
    while a < a0 + length - 60 and quay_depth > 120:
        if b.rng.random() < 0.45:
            for k in range(int(b.rng.integers(2, 6))):
                x, y = frame.point(a, c(row_s - k * 8))
                b.add_object("container", b.choose(CONTAINER_COLORS), "rectangle", 24, 5, None, ctx,
                             "concrete", x, y, frame.along_angle)
        elif b.rng.random() < 0.5:
            x, y = frame.point(a, c(row_s - 12))
            b.add_object("vehicle", b.choose(CAR_COLORS), "rectangle", b.rng.uniform(14, 20), 5.5,
                         "parked", ctx, "concrete", x, y, frame.along_angle + math.pi * int(b.rng.integers(0, 2)))
        a += b.rng.uniform(34, 60)
    return ctx


def build_sea_ships(b: Builder, harbour_ctx):
    sc = b.scene
    if sc.sea is None:
        return None
    xs = np.linspace(0, sc.width - 1, 64)[None, :]
    ys = np.linspace(0, sc.height - 1, 64)[:, None]
    depth = sea_depth(sc, xs, ys)
    sea = depth > 0
    if not sea.any():
        return None
    yy, xx = np.nonzero(sea)
    rect = (float(xs[0, xx.min()]), float(ys[yy.min(), 0]), float(xs[0, xx.max()]) + 1, float(ys[yy.max(), 0]) + 1)
    ctx = b.context("sea", rect, "sea")
    area = float(sea.mean()) * sc.width * sc.height
    wanted = int(np.clip(area / 2.0e6, 2, 14))
    placed, tries = [], 0
    while len(placed) < wanted and tries < 400:
        tries += 1
        x, y = b.rng.uniform(0, sc.width), b.rng.uniform(0, sc.height)
        if float(sea_depth(sc, x, y)) < 220:
            continue
        if harbour_ctx is not None:
            hx1, hy1, hx2, hy2 = harbour_ctx.bbox
            if hx1 - 300 < x < hx2 + 300 and hy1 - 300 < y < hy2 + 300:
                continue
        if any(math.hypot(x - px, y - py) < 260 for px, py in placed):
            continue
        length = b.rng.uniform(30, 80)
        moving = b.rng.random() < 0.6
        obj = _ship(b, ctx, x, y, b.rng.uniform(0, 2 * math.pi), length, "moving" if moving else "anchored",
                    wake=moving)
        if obj is not None:
            placed.append((x, y))
    return ctx


def _crossing(road, river):
    """Where a road crosses a river running the other way: fixed-point iteration on the two centres."""
    t_river = float(river.base)
    for _ in range(8):
        t_road = float(road.centre(t_river))
        t_river = float(river.centre(t_road))
    return (t_river, t_road) if road.orient == "h" else (t_road, t_river)


def build_bridges(b: Builder):
    sc = b.scene
    bridges = []
    for river in sc.rivers:
        for road in sc.roads:
            if road.orient == river.orient:
                continue
            x, y = _crossing(road, river)
            if not (300 < x < sc.width - 300 and 300 < y < sc.height - 300):
                continue
            depth = sea_depth(sc, x, y)
            if depth is not None and float(depth) > -200:
                continue
            half_len = river.width * 0.65 + 45    # margin: the river may cross at a slant
            frame = Frame(road.orient)
            along_c = x if road.orient == "h" else y
            across_c = y if road.orient == "h" else x
            half_w = road.width / 2 + 6
            rect = frame.rect(along_c - half_len, across_c - half_w, along_c + half_len, across_c + half_w)
            if not b.is_free(rect, 20):
                continue
            b.take(rect)
            b.patch(C["CONCRETE"], rect, layer=3)
            for edge in (-1, 1):
                b.patch(C["MARKING_WHITE"], frame.rect(along_c - half_len, across_c + edge * half_w - 1.5,
                                                       along_c + half_len, across_c + edge * half_w + 1.5), layer=4)
            ctx = b.context("bridge", rect, "bridge")
            for _ in range(int(b.rng.integers(0, 4))):
                lane = road.width / 4 * (1 if b.rng.random() < 0.5 else -1)
                pos = along_c + b.rng.uniform(-half_len + 20, half_len - 20)
                px, py = frame.point(pos, across_c + lane)
                if any(abs(o.cx - px) + abs(o.cy - py) < 20 for o in sc.objects[-4:]):
                    continue
                heading = frame.along_angle + (0 if lane > 0 else math.pi)
                truck = b.rng.random() < 0.25
                b.add_object("vehicle", b.choose(CAR_COLORS), "rectangle", b.rng.uniform(16, 22) if truck else
                             b.rng.uniform(9, 12), 5.5 if truck else 4.5, "moving", ctx, "bridge", px, py, heading)
            bridges.append(ctx)
    return bridges


def river_offset(sc, x, y):
    return min((abs(float(curve_offset(r, x, y))) - r.width / 2 for r in sc.rivers), default=1e9)
