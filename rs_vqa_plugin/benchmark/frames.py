"""An axis-aligned local frame (a = along, c = across) so one structure layout serves both orientations."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Frame:
    orient: str   # 'h': a is x and c is y; 'v': a is y and c is x

    def point(self, a: float, c: float):
        return (a, c) if self.orient == "h" else (c, a)

    def rect(self, a1: float, c1: float, a2: float, c2: float):
        if self.orient == "h":
            return (min(a1, a2), min(c1, c2), max(a1, a2), max(c1, c2))
        return (min(c1, c2), min(a1, a2), max(c1, c2), max(a1, a2))

    @property
    def along_angle(self) -> float:
        return 0.0 if self.orient == "h" else math.pi / 2

    @property
    def across_angle(self) -> float:
        return math.pi / 2 if self.orient == "h" else 0.0

    def along_extent(self, width: int, height: int) -> int:
        return width if self.orient == "h" else height

    def across_extent(self, width: int, height: int) -> int:
        return height if self.orient == "h" else width
