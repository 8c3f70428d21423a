"""What one question returns: the answer text, a trace of what was looked at, and heat cells (where)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Tuple

CELL_KINDS = ("token", "tile")


@dataclass
class HeatCell:
    """A kept token's or a selected tile's footprint in the raster's CRS, with its RFM score."""

    ring: List[Tuple[float, float]]   # closed ring (first point repeated last)
    score: float
    level: int
    tile: Tuple[int, int]             # (row, col) in the level's tile grid
    rank: int                         # 1 = highest score among cells of the same kind and level
    kind: str = "token"               # 'token' | 'tile'


@dataclass
class Answer:
    question: str
    text: str
    mode: str
    trace: dict = field(default_factory=dict)
    heat_cells: List[HeatCell] = field(default_factory=list)
    crs_wkt: str = ""
    raster: str = ""


def answer_to_dict(answer: Answer) -> dict:
    """JSON-ready dict (lists instead of tuples); inverse of answer_from_dict."""
    data = asdict(answer)
    data["heat_cells"] = [{"ring": [[float(x), float(y)] for x, y in c.ring], "score": float(c.score),
                           "level": int(c.level), "tile": [int(c.tile[0]), int(c.tile[1])],
                           "rank": int(c.rank), "kind": c.kind} for c in answer.heat_cells]
    return data


def heat_cell_from_dict(c: dict) -> HeatCell:
    return HeatCell(ring=[(float(x), float(y)) for x, y in c["ring"]], score=float(c["score"]),
                    level=int(c["level"]), tile=(int(c["tile"][0]), int(c["tile"][1])),
                    rank=int(c["rank"]), kind=str(c.get("kind", "token")))


def answer_from_dict(data: dict) -> Answer:
    cells = [heat_cell_from_dict(c) for c in data.get("heat_cells", [])]
    return Answer(question=data["question"], text=data["text"], mode=data["mode"],
                  trace=dict(data.get("trace", {})), heat_cells=cells,
                  crs_wkt=data.get("crs_wkt", ""), raster=data.get("raster", ""))
