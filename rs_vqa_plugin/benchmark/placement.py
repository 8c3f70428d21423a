"""Layout bookkeeping shared by the structure builders: free space, land tests, object creation."""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .objects import object_bbox
from .scene import Context, Patch, Scene, SceneObject
from .terrain import water_mask

Rect = Tuple[float, float, float, float]

SHIP_COLORS = (("white", 30), ("grey", 20), ("red", 12), ("blue", 12), ("black", 10), ("orange", 6),
               ("green", 5), ("yellow", 5))
CAR_COLORS = (("white", 24), ("black", 15), ("grey", 20), ("red", 11), ("blue", 11), ("green", 6),
              ("yellow", 6), ("orange", 7))
AIRCRAFT_COLORS = (("white", 45), ("grey", 15), ("blue", 10), ("red", 10), ("yellow", 6), ("green", 6),
                   ("black", 4), ("orange", 4))
TANK_COLORS = (("white", 55), ("grey", 20), ("green", 15), ("black", 10))
SERVICE_COLORS = (("yellow", 35), ("white", 25), ("orange", 25), ("blue", 15))
CONTAINER_COLORS = (("red", 20), ("blue", 20), ("green", 15), ("orange", 15), ("grey", 15), ("white", 15))


def overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class Builder:
    """Owns the scene under construction, a seeded RNG and the rectangles already taken."""

    def __init__(self, scene: Scene, rng: np.random.Generator):
        self.scene = scene
        self.rng = rng
        self.occupied: List[Rect] = []
        self._counts = {}

    # --- space -----------------------------------------------------------------------------
    def inside(self, rect: Rect, margin: float = 0) -> bool:
        return (rect[0] >= margin and rect[1] >= margin and rect[2] <= self.scene.width - margin
                and rect[3] <= self.scene.height - margin)

    def is_free(self, rect: Rect, margin: float = 40) -> bool:
        grown = (rect[0] - margin, rect[1] - margin, rect[2] + margin, rect[3] + margin)
        return not any(overlaps(grown, other) for other in self.occupied)

    def water_fraction(self, rect: Rect, samples: int = 9) -> float:
        xs = np.linspace(rect[0], rect[2], samples)[None, :]
        ys = np.linspace(rect[1], rect[3], samples)[:, None]
        return float(water_mask(self.scene, xs, ys).mean())

    def on_land(self, rect: Rect) -> bool:
        return self.water_fraction(rect) == 0.0

    def take(self, rect: Rect) -> None:
        self.occupied.append(tuple(rect))

    def random_rect(self, w: float, h: float, margin: float = 150) -> Optional[Rect]:
        if w + 2 * margin >= self.scene.width or h + 2 * margin >= self.scene.height:
            return None
        x = self.rng.uniform(margin, self.scene.width - margin - w)
        y = self.rng.uniform(margin, self.scene.height - margin - h)
        return (x, y, x + w, y + h)

    # --- content ---------------------------------------------------------------------------
    def choose(self, weighted: Sequence[Tuple[str, int]]) -> str:
        names = [n for n, _ in weighted]
        p = np.array([w for _, w in weighted], dtype=np.float64)
        return names[int(self.rng.choice(len(names), p=p / p.sum()))]

    def patch(self, cls: int, rect: Rect, layer: int = 0) -> None:
        x1, y1, x2, y2 = rect
        self.scene.patches.append(Patch(cls, min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2), layer))

    def context(self, kind: str, rect: Rect, name: str, parent: Optional[str] = None) -> Context:
        n = self._counts[kind] = self._counts.get(kind, 0) + 1
        bbox = (max(0, int(math.floor(rect[0]))), max(0, int(math.floor(rect[1]))),
                min(self.scene.width, int(math.ceil(rect[2]))), min(self.scene.height, int(math.ceil(rect[3]))))
        ctx = Context(f"{kind}-{n}", kind, bbox, name, parent)
        self.scene.contexts.append(ctx)
        return ctx

    def add_object(self, category: str, color: str, shape: str, length: float, width: float,
                   status: Optional[str], context: Optional[Context], background: str,
                   cx: float, cy: float, angle: float, wake: bool = False) -> Optional[SceneObject]:
        sc = self.scene
        bbox = object_bbox(cx, cy, length, width, angle, category, sc.width, sc.height)
        if bbox[2] - bbox[0] < 3 or bbox[3] - bbox[1] < 3 or not (0 <= cx < sc.width and 0 <= cy < sc.height):
            return None
        obj = SceneObject(id=f"o{len(sc.objects) + 1}", category=category, color=color, shape=shape,
                          size_px=int(round(length)), width_px=max(2, int(round(width))), status=status,
                          context_id=context.id if context else None, background=background,
                          cx=float(cx), cy=float(cy), angle=float(angle) % (2 * math.pi), bbox=bbox, wake=wake)
        sc.objects.append(obj)
        return obj
