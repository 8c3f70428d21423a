"""How questions name contexts and objects, and how a name is resolved back from the sidecar alone.

Shared by the question generator (which keeps only names that resolve to exactly one thing) and the
oracle (which parses the question text and resolves it again). Positions use bbox centres.
"""

from __future__ import annotations

from typing import Dict, List, Optional

CATEGORIES = ("ship", "aircraft", "helicopter", "vehicle", "storage tank", "container")
PLURALS = {"ship": "ships", "aircraft": "aircraft", "helicopter": "helicopters", "vehicle": "vehicles",
           "storage tank": "storage tanks", "container": "containers"}
SINGULARS = {plural: noun for noun, plural in PLURALS.items()}
COLORS = ("white", "black", "grey", "red", "blue", "green", "yellow", "orange")
SHAPES = ("elongated", "rectangle", "cross", "triangle", "round")
STATUSES = ("docked", "moving", "anchored", "parked", "taxiing")
BACKGROUNDS = ("water", "concrete", "taxiway", "grass", "parking lot", "road", "bridge", "sand", "gravel")
EXTREMES = ("top-most", "bottom-most", "left-most", "right-most", "largest", "smallest")
PREPOSITIONS = {"harbour": "at", "airport": "at", "apron": "on", "taxiway": "on", "tank_farm": "in",
                "parking_lot": "in", "bridge": "on", "sea": "at"}
DIRECTIONS = {"northernmost": (1, 1), "southernmost": (1, -1), "westernmost": (0, 1), "easternmost": (0, -1)}
# (axis, sign): the context with the smallest sign * centre[axis] wins; north is up (small y)
CONTEXT_MARGIN = 200      # px between the extreme context and the next one for "the northernmost ..."
SIZE_RATIO = 1.25         # largest / smallest must beat the runner-up by this factor


def centre(box) -> tuple:
    return ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)


def _extreme_of(items, key, margin) -> Optional[dict]:
    """The item with the smallest key if it beats the runner-up by `margin`, else None."""
    ranked = sorted(items, key=key)
    if not ranked:
        return None
    if len(ranked) > 1 and key(ranked[1]) - key(ranked[0]) < margin:
        return None
    return ranked[0]


def context_phrase(sidecar: dict, ctx: dict) -> Optional[str]:
    """'at the harbour', 'in the northernmost parking lot', 'at sea' ... or None if not unique."""
    prep = PREPOSITIONS.get(ctx["kind"])
    if prep is None:
        return None
    if ctx["kind"] == "sea":
        return "at sea"
    peers = [c for c in sidecar["contexts"] if c["kind"] == ctx["kind"]]
    if len(peers) == 1:
        return f"{prep} the {ctx['name']}"
    for word, (axis, sign) in DIRECTIONS.items():
        best = _extreme_of(peers, lambda c: sign * centre(c["bbox"])[axis], CONTEXT_MARGIN)
        if best is not None and best["id"] == ctx["id"]:
            return f"{prep} the {word} {ctx['name']}"
    return None


def resolve_context(sidecar: dict, phrase: str) -> Optional[dict]:
    for ctx in sidecar["contexts"]:
        if context_phrase(sidecar, ctx) == phrase:
            return ctx
    return None


def objects_in(sidecar: dict, ctx: dict) -> List[dict]:
    """Objects whose context is ctx or a child of it (the airport holds its apron and taxiway)."""
    children = {c["id"] for c in sidecar["contexts"] if c.get("parent") == ctx["id"]} | {ctx["id"]}
    return [o for o in sidecar["objects"] if o.get("context_id") in children]


def _key(extreme: str):
    if extreme == "top-most":
        return lambda o: centre(o["bbox"])[1]
    if extreme == "bottom-most":
        return lambda o: -centre(o["bbox"])[1]
    if extreme == "left-most":
        return lambda o: centre(o["bbox"])[0]
    return lambda o: -centre(o["bbox"])[0]


def pick(candidates: List[dict], extreme: Optional[str]) -> Optional[dict]:
    """The single object a reference names among its candidates, or None when it is ambiguous."""
    if extreme is None:
        return candidates[0] if len(candidates) == 1 else None
    if not candidates:
        return None
    if extreme in ("largest", "smallest"):
        ranked = sorted(candidates, key=lambda o: o["size_px"], reverse=(extreme == "largest"))
        if len(ranked) > 1:
            a, b = ranked[0]["size_px"], ranked[1]["size_px"]
            if max(a, b) < SIZE_RATIO * min(a, b):
                return None
        return ranked[0]
    margin = lambda o: max(10.0, 0.5 * o["size_px"])      # noqa: E731
    ranked = sorted(candidates, key=_key(extreme))
    if len(ranked) > 1 and _key(extreme)(ranked[1]) - _key(extreme)(ranked[0]) < margin(ranked[0]):
        return None
    return ranked[0]


def filter_objects(objects: List[dict], noun: str, color: Optional[str] = None,
                   status: Optional[str] = None) -> List[dict]:
    return [o for o in objects if (noun == "object" or o["category"] == noun)
            and (color is None or o["color"] == color) and (status is None or o.get("status") == status)]


def reference_text(noun: str, color: Optional[str], extreme: Optional[str], ctx_phrase: str) -> str:
    words = ["the"] + ([extreme] if extreme else []) + ([color] if color else []) + [noun, ctx_phrase]
    return " ".join(words)


# --- objects named by a region of the image ---------------------------------------------------
# Attribute questions name their object by a region of the image, never by its context: "the
# left-most object at the pier" would give away "docked", "on the bridge" the background "bridge".
REGION_MARGIN_SHARE = 0.02   # of the image's long side: objects this close to a region's border ...
REGION_MARGIN_MIN = 64       # px ... may be read as in or out, so a reference must not depend on them


def region_phrase(region: str) -> str:
    """'in the north-west quarter of the image', 'in the image' (region 'area')."""
    return "in the image" if region == "area" else f"in the {region} of the image"


def region_of_phrase(phrase: str) -> Optional[str]:
    for region in ("area",) + tuple(REGIONS):
        if region_phrase(region) == phrase:
            return region
    return None


class RegionObjects:
    """The objects a region reference chooses from: those whose centre is in the region grown by
    the margin; a pick counts only if its centre is also in the region shrunk by the margin, so
    the named object is the same wherever a reader draws the border within the margin (an object
    just outside cannot be the right one, one just inside is not needed to decide)."""

    def __init__(self, sidecar: dict, region: str):
        w, h = sidecar["size"]
        self.margin = max(REGION_MARGIN_MIN, REGION_MARGIN_SHARE * max(w, h))
        x1, y1, x2, y2 = region_box(sidecar, region)
        # image borders need no margin: nothing lies beyond them
        self.inner = (x1 + (self.margin if x1 > 0 else 0), y1 + (self.margin if y1 > 0 else 0),
                      x2 - (self.margin if x2 < w else 0), y2 - (self.margin if y2 < h else 0))
        grown = (x1 - self.margin, y1 - self.margin, x2 + self.margin, y2 + self.margin)
        self.objects = [o for o in sidecar["objects"] if _inside(centre(o["bbox"]), grown)]

    def pick(self, noun: str, color: Optional[str], extreme: Optional[str]) -> Optional[dict]:
        obj = pick(filter_objects(self.objects, noun, color), extreme)
        return obj if obj is not None and _inside(centre(obj["bbox"]), self.inner) else None


def _inside(point, box) -> bool:
    return box[0] <= point[0] < box[2] and box[1] <= point[1] < box[3]


def index_contexts(sidecar: dict) -> Dict[str, dict]:
    return {c["id"]: c for c in sidecar["contexts"]}


# --- regions for rural / urban questions -------------------------------------------------------
REGIONS = {  # name -> (x1, y1, x2, y2) as fractions of the image
    "north-west quarter": (0, 0, .5, .5), "north-east quarter": (.5, 0, 1, .5),
    "south-west quarter": (0, .5, .5, 1), "south-east quarter": (.5, .5, 1, 1),
    "northern half": (0, 0, 1, .5), "southern half": (0, .5, 1, 1),
    "western half": (0, 0, .5, 1), "eastern half": (.5, 0, 1, 1), "centre": (.25, .25, .75, .75),
}
AROUND_KINDS = ("harbour", "airport", "tank_farm", "parking_lot", "bridge")
AROUND_MARGIN = 1000      # px added on every side of a context for "the area around ..."
URBAN_SHARE = 0.30        # share of land that is built-up above which an area is "urban"
RURAL_SHARE = 0.06        # ... and below which it is "rural"; areas in between are not asked about


def region_box(sidecar: dict, region: str) -> List[int]:
    w, h = sidecar["size"]
    if region == "area":
        return [0, 0, w, h]
    fx1, fy1, fx2, fy2 = REGIONS[region]
    return [int(fx1 * w), int(fy1 * h), int(fx2 * w), int(fy2 * h)]


def around_name(sidecar: dict, ctx: dict) -> Optional[str]:
    """'the harbour', 'the northernmost parking lot' (a context phrase without its preposition)."""
    if ctx["kind"] not in AROUND_KINDS:
        return None
    phrase = context_phrase(sidecar, ctx)
    return phrase.split(" ", 1)[1] if phrase else None


def around_box(sidecar: dict, ctx: dict) -> List[int]:
    w, h = sidecar["size"]
    x1, y1, x2, y2 = ctx["bbox"]
    return [max(0, x1 - AROUND_MARGIN), max(0, y1 - AROUND_MARGIN), min(w, x2 + AROUND_MARGIN),
            min(h, y2 + AROUND_MARGIN)]


def urban_share(sidecar: dict, box) -> float:
    """Built-up share of the land in a box, from the sidecar's land-cover grid."""
    lc = sidecar["landcover"]
    cell = lc["cell"]
    x1, y1, x2, y2 = (int(v // cell) for v in box)
    rows_u = [row[x1:max(x2, x1 + 1)] for row in lc["urban"][y1:max(y2, y1 + 1)]]
    rows_w = [row[x1:max(x2, x1 + 1)] for row in lc["water"][y1:max(y2, y1 + 1)]]
    urban = sum(sum(r) for r in rows_u)
    land = sum(len(r) - sum(r) for r in rows_w)
    return urban / land if land > 0 else 0.0
