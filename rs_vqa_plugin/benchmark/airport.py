"""Airport: runway with markings, parallel taxiway, apron with stands, terminal; aircraft, helicopters
and service vehicles where they belong."""

from __future__ import annotations

import math

import numpy as np

from .frames import Frame
from .landcover import C
from .placement import AIRCRAFT_COLORS, SERVICE_COLORS, Builder

RUNWAY_W, TAXI_W = 80, 36


def build_airport(b: Builder):
    sc = b.scene
    frame = Frame("h" if b.rng.random() < 0.5 else "v")
    along = frame.along_extent(sc.width, sc.height)
    runway_len = float(np.clip(0.42 * along, 900, 5600))
    apron_depth = float(np.clip(0.07 * runway_len, 220, 420))
    # across layout from the box edge: grass 60 | runway | 150 | taxiway | 40 | apron | terminal 90 | 40
    c_run = 60.0
    c_taxi = c_run + RUNWAY_W + 150
    c_apron = c_taxi + TAXI_W + 40
    c_term = c_apron + apron_depth
    depth = c_term + 130
    box_len = runway_len + 300
    for _ in range(80):
        rect = b.random_rect(*(frame.rect(0, 0, box_len, depth)[2:]))
        if rect is None:
            return None
        if b.is_free(rect, 120) and b.on_land(rect):
            break
    else:
        return None
    b.take(rect)
    a0, c0 = (rect[0], rect[1]) if frame.orient == "h" else (rect[1], rect[0])
    flip = b.rng.random() < 0.5      # apron above or below the runway
    cc = (lambda c: c0 + depth - c) if flip else (lambda c: c0 + c)   # noqa: E731
    r = lambda a1, c1, a2, c2: frame.rect(a0 + a1, cc(c1), a0 + a2, cc(c2))   # noqa: E731
    airport = b.context("airport", rect, "airport")
    b.patch(C["AIRFIELD_GRASS"], rect, 0)
    ra1, ra2 = 150.0, 150.0 + runway_len
    b.patch(C["RUNWAY"], r(ra1, c_run, ra2, c_run + RUNWAY_W), 1)
    for a in np.arange(ra1 + 120, ra2 - 120, 90.0):
        b.patch(C["MARKING_WHITE"], r(a, c_run + RUNWAY_W / 2 - 1.5, a + 40, c_run + RUNWAY_W / 2 + 1.5), 2)
    for end in (ra1 + 12, ra2 - 62):
        for k in range(6):
            cs = c_run + 8 + k * 11
            b.patch(C["MARKING_WHITE"], r(end, cs, end + 50, cs + 5), 2)
    for edge in (c_run + 3, c_run + RUNWAY_W - 5):
        b.patch(C["MARKING_WHITE"], r(ra1, edge, ra2, edge + 2), 2)
    taxiway_rect = r(ra1, c_taxi, ra2, c_taxi + TAXI_W)
    b.patch(C["TAXIWAY"], taxiway_rect, 1)
    b.patch(C["MARKING_YELLOW"], r(ra1, c_taxi + TAXI_W / 2 - 1, ra2, c_taxi + TAXI_W / 2 + 1), 2)
    for a in np.linspace(ra1, ra2 - TAXI_W, 5):
        b.patch(C["TAXIWAY"], r(a, c_run + RUNWAY_W, a + TAXI_W, c_taxi), 1)
    taxiway = b.context("taxiway", taxiway_rect, "taxiway", airport.id)
    apron_len = float(np.clip(0.45 * runway_len, 500, 2200))
    aa1 = ra1 + (runway_len - apron_len) / 2
    aa2 = aa1 + apron_len
    apron_rect = r(aa1, c_apron, aa2, c_term)
    b.patch(C["CONCRETE"], apron_rect, 1)
    for a in (aa1 + 60, aa2 - 60 - TAXI_W):
        b.patch(C["TAXIWAY"], r(a, c_taxi + TAXI_W, a + TAXI_W, c_apron), 1)
    b.patch(C["ROOF_WHITE"], r(aa1 + 0.1 * apron_len, c_term, aa2 - 0.1 * apron_len, c_term + 90), 1)
    apron = b.context("apron", apron_rect, "apron", airport.id)
    to_terminal = frame.across_angle + (math.pi if flip else 0.0)
    # stands along the terminal side of the apron
    pitch = 92.0
    for a in np.arange(aa1 + 150, aa2 - 60, pitch):
        b.patch(C["MARKING_YELLOW"], r(a - pitch / 2, c_term - 100, a - pitch / 2 + 2, c_term - 5), 2)
        if b.rng.random() < 0.72:
            length = b.rng.uniform(34, 78)
            x, y = frame.point(a0 + a, cc(c_term - 14 - length / 2))
            shape = "triangle" if b.rng.random() < 0.25 else "cross"
            b.add_object("aircraft", b.choose(AIRCRAFT_COLORS), shape, length, length * 0.95 if shape == "cross"
                         else length * 0.94, "parked", apron, "concrete", x, y, to_terminal)
        elif b.rng.random() < 0.6:
            x, y = frame.point(a0 + a + b.rng.uniform(-20, 20), cc(c_term - b.rng.uniform(20, 90)))
            b.add_object("vehicle", b.choose(SERVICE_COLORS), "rectangle", b.rng.uniform(10, 16), 5,
                         "parked", apron, "concrete", x, y, frame.along_angle + math.pi / 2 * int(b.rng.integers(0, 4)))
    # service vehicles on the open part of the apron (towards the taxiway)
    if apron_depth > 180:
        for _ in range(int(b.rng.integers(2, 7))):
            x, y = frame.point(a0 + b.rng.uniform(aa1 + 160, aa2 - 40), cc(c_apron + b.rng.uniform(25, 70)))
            b.add_object("vehicle", b.choose(SERVICE_COLORS), "rectangle", b.rng.uniform(10, 16), 5, "parked",
                         apron, "concrete", x, y, frame.along_angle + math.pi * int(b.rng.integers(0, 2)))
    # helicopters on the apron's first 150 px
    for k in range(int(b.rng.integers(0, 3))):
        x, y = frame.point(a0 + aa1 + 45 + k * 70, cc(c_apron + apron_depth * 0.55))
        length = b.rng.uniform(30, 44)
        b.add_object("helicopter", b.choose(AIRCRAFT_COLORS), "cross", length, length, "parked", apron,
                     "concrete", x, y, to_terminal)
    # taxiing aircraft on the taxiway
    for _ in range(int(b.rng.integers(1, 3))):
        length = b.rng.uniform(34, 70)
        x, y = frame.point(a0 + b.rng.uniform(ra1 + 100, ra2 - 100), cc(c_taxi + TAXI_W / 2))
        shape = "triangle" if b.rng.random() < 0.25 else "cross"
        b.add_object("aircraft", b.choose(AIRCRAFT_COLORS), shape, length, length * 0.95 if shape == "cross"
                     else length * 0.94, "taxiing", taxiway, "taxiway", x, y,
                     frame.along_angle + math.pi * int(b.rng.integers(0, 2)))
    # light aircraft parked on the grass beyond the apron's end
    for k in range(int(b.rng.integers(0, 3))):
        length = b.rng.uniform(26, 36)
        x, y = frame.point(a0 + aa2 + 60 + k * 55, cc(c_apron + 60))
        b.add_object("aircraft", b.choose(AIRCRAFT_COLORS), "cross", length, length * 0.95, "parked", airport,
                     "grass", x, y, to_terminal)
    return airport
