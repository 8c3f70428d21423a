"""Tank farms (bunded groups of round tanks) and parking lots (stalls, parked and moving cars)."""

from __future__ import annotations

import math

import numpy as np

from .frames import Frame
from .landcover import C
from .placement import CAR_COLORS, TANK_COLORS, Builder
from .terrain import urban_field_points

STALL_LEN, STALL_W, AISLE = 14, 8, 16


def _near(b: Builder, anchor, w, h, spread=700):
    """A candidate rectangle near an anchor context's box, or anywhere when there is none."""
    if anchor is None or b.rng.random() < 0.3:
        return b.random_rect(w, h)
    x1, y1, x2, y2 = anchor.bbox
    x = b.rng.uniform(x1 - w - spread, x2 + spread)
    y = b.rng.uniform(y1 - h - spread, y2 + spread)
    return (x, y, x + w, y + h)


def build_tank_farm(b: Builder, anchor=None):
    groups = int(b.rng.integers(1, 3))
    diameter = float(b.rng.uniform(18, 44))
    pitch = diameter + 16
    rows, cols = int(b.rng.integers(2, 4)), int(b.rng.integers(2, 5 if groups == 1 else 4))
    group_w, group_h = cols * pitch + 20, rows * pitch + 20
    w, h = groups * group_w + (groups - 1) * 40 + 60, group_h + 90
    for _ in range(60):
        rect = _near(b, anchor, w, h)
        if rect and b.inside(rect, 100) and b.is_free(rect, 60) and b.on_land(rect):
            break
    else:
        return None
    b.take(rect)
    ctx = b.context("tank_farm", rect, "tank farm")
    b.patch(C["GRAVEL"], rect, 0)
    x0, y0 = rect[0] + 30, rect[1] + 30
    b.patch(C["ROAD"], (rect[0] + 10, rect[3] - 40, rect[2] - 10, rect[3] - 26), 1)
    for g in range(groups):
        gx = x0 + g * (group_w + 40)
        for edge in ((gx, y0, gx + group_w, y0 + 4), (gx, y0 + group_h - 4, gx + group_w, y0 + group_h),
                     (gx, y0, gx + 4, y0 + group_h), (gx + group_w - 4, y0, gx + group_w, y0 + group_h)):
            b.patch(C["BUND"], edge, 1)
        for i in range(rows):
            for j in range(cols):
                if b.rng.random() < 0.12:
                    continue        # an empty plinth
                d = diameter * b.rng.uniform(0.85, 1.0)
                cx, cy = gx + 10 + (j + 0.5) * pitch, y0 + 10 + (i + 0.5) * pitch
                b.add_object("storage tank", b.choose(TANK_COLORS), "round", d, d, None, ctx, "gravel", cx, cy, 0.0)
    for _ in range(int(b.rng.integers(0, 3))):
        cx = b.rng.uniform(rect[0] + 40, rect[2] - 40)
        b.add_object("vehicle", b.choose((("white", 50), ("grey", 25), ("orange", 25))), "rectangle",
                     b.rng.uniform(16, 22), 6, "parked", ctx, "road", cx, rect[3] - 33, 0.0)
    return ctx


def build_parking_lot(b: Builder, anchor=None):
    sc = b.scene
    frame = Frame("h" if b.rng.random() < 0.5 else "v")
    double_rows = int(b.rng.integers(1, 4))
    stalls = int(b.rng.integers(8, 22))
    a_len = stalls * STALL_W + 20
    c_len = double_rows * (2 * STALL_LEN + AISLE) + AISLE + 12
    w, h = frame.rect(0, 0, a_len, c_len)[2:]
    for attempt in range(80):
        rect = _near(b, anchor, w, h, spread=400)
        if not (rect and b.inside(rect, 100) and b.is_free(rect, 40) and b.on_land(rect)):
            continue
        if anchor is None and attempt < 60:   # a free-standing lot belongs in town
            cx, cy = (rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2
            if float(urban_field_points(sc, cx, cy)) < sc.urban_threshold:
                continue
        break
    else:
        return None
    b.take(rect)
    ctx = b.context("parking_lot", rect, "parking lot")
    b.patch(C["PARKING"], rect, 1)
    a0, c0 = (rect[0], rect[1]) if frame.orient == "h" else (rect[1], rect[0])
    fill = b.rng.uniform(0.35, 0.85)
    c = c0 + AISLE
    for _ in range(double_rows):
        for row_c, facing in ((c, 1), (c + STALL_LEN, -1)):
            for k in range(stalls + 1):
                a = a0 + 10 + k * STALL_W
                b.patch(C["MARKING_WHITE"], frame.rect(a, row_c + 1, a + 1, row_c + STALL_LEN - 1), 2)
                if k < stalls and b.rng.random() < fill:
                    length = b.rng.uniform(9, 12)
                    x, y = frame.point(a + STALL_W / 2 + 0.5, row_c + STALL_LEN / 2)
                    heading = frame.across_angle + (0 if (facing > 0) == (b.rng.random() < 0.8) else math.pi)
                    b.add_object("vehicle", b.choose(CAR_COLORS), "rectangle", length, length * 0.42, "parked",
                                 ctx, "parking lot", x, y, heading)
        c += 2 * STALL_LEN + AISLE
    if b.rng.random() < 0.5:      # a car driving down an aisle
        x, y = frame.point(a0 + b.rng.uniform(20, a_len - 20), c0 + AISLE / 2 + 2)
        b.add_object("vehicle", b.choose(CAR_COLORS), "rectangle", 11, 4.6, "moving", ctx, "parking lot", x, y,
                     frame.along_angle + math.pi * int(b.rng.integers(0, 2)))
    return ctx
