"""The global, vector description of one synthetic scene (curves, rectangles, contexts, objects).

Everything the renderer paints and everything the questions ask about lives here; the sidecar
`<scene>.objects.json` is this description written out for people, the oracle and the trainer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .noise import noise1

SIDECAR_SUFFIX = ".objects.json"
SIDECAR_VERSION = 1

Box = Tuple[int, int, int, int]


@dataclass
class Curve:
    """A wiggly band: centre = base + amp * (2 * noise1(t) - 1) across the parameter axis.

    orient 'h': runs left-right, t is x and the centre is a y value; 'v': runs top-down.
    """
    orient: str
    base: float
    amp: float
    cell: float
    seed: int
    width: float = 0.0
    kind: str = "road"

    def centre_range(self, start: int, count: int) -> np.ndarray:
        """centre() at pixel centres start..start+count-1, cached: every block row (or column) of
        a scene asks for the same ranges again."""
        cache = self.__dict__.setdefault("_cache", {})
        key = (int(start), int(count))
        if key not in cache:
            if len(cache) > 256:
                cache.clear()
            cache[key] = self.centre(np.arange(start, start + count) + 0.0).astype(np.float32)
        return cache[key]

    def centre(self, t) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        wiggle = noise1(t, (self.cell, self.cell / 4.0), self.seed).astype(np.float64)
        return self.base + self.amp * (2.0 * wiggle - 1.0)


@dataclass
class Sea:
    coast: Curve
    sign: int          # +1: sea where the cross coordinate is larger than the coast centre
    side: str          # N, S, E or W: the image edge the sea touches


@dataclass
class Lake:
    cx: float
    cy: float
    radius: float
    seed: int


@dataclass
class Patch:
    """An axis-aligned rectangle painted with a ground class (structures, markings, buildings)."""
    cls: int
    x1: float
    y1: float
    x2: float
    y2: float
    layer: int = 0     # paint order: lower first


@dataclass
class Context:
    id: str
    kind: str          # harbour | airport | apron | taxiway | bridge | tank_farm | parking_lot | sea
    bbox: Box
    name: str
    parent: Optional[str] = None


@dataclass
class SceneObject:
    id: str
    category: str      # ship | aircraft | helicopter | vehicle | storage tank | container
    color: str
    shape: str         # elongated | rectangle | cross | triangle | round
    size_px: int       # long side in pixels
    width_px: int
    status: Optional[str]
    context_id: Optional[str]
    background: str    # surface under the object: water, road, runway, taxiway, concrete, ...
    cx: float
    cy: float
    angle: float       # radians, long axis direction in pixel space (x right, y down)
    bbox: Box = (0, 0, 0, 0)
    wake: bool = False


@dataclass
class Scene:
    seed: int
    width: int
    height: int
    gsd: float
    epsg: int
    origin: Tuple[float, float]          # map X, Y of the top-left corner
    sea: Optional[Sea] = None
    rivers: List[Curve] = field(default_factory=list)
    lakes: List[Lake] = field(default_factory=list)
    roads: List[Curve] = field(default_factory=list)
    urban_threshold: float = 0.6
    city_centres: List[Tuple[float, float, float]] = field(default_factory=list)  # x, y, sigma
    patches: List[Patch] = field(default_factory=list)
    water_patches: List[Patch] = field(default_factory=list)   # dredged basins: forced water
    contexts: List[Context] = field(default_factory=list)
    objects: List[SceneObject] = field(default_factory=list)
    landcover: Dict = field(default_factory=dict)

    @property
    def geotransform(self):
        return (self.origin[0], self.gsd, 0.0, self.origin[1], 0.0, -self.gsd)

    def context(self, context_id: str) -> Context:
        for ctx in self.contexts:
            if ctx.id == context_id:
                return ctx
        raise KeyError(context_id)


def sidecar_path(image_path) -> Path:
    path = Path(image_path)
    return path.with_name(path.stem + SIDECAR_SUFFIX)


def sidecar_dict(scene: Scene, image_name: str, crs_wkt: str) -> dict:
    """The sidecar: what the benchmark README documents (image, size, gsd, crs, seed, contexts, objects,
    landcover) plus the geotransform."""
    objects = []
    for obj in scene.objects:
        item = asdict(obj)
        item["bbox"] = [int(v) for v in obj.bbox]
        item["cx"], item["cy"] = round(obj.cx, 1), round(obj.cy, 1)
        item["angle"] = round(obj.angle, 4)
        objects.append(item)
    return {
        "format": "rs-vqa-synth", "version": SIDECAR_VERSION,
        "image": image_name, "size": [scene.width, scene.height], "gsd": scene.gsd,
        "crs": f"EPSG:{scene.epsg}", "crs_wkt": crs_wkt, "geotransform": list(scene.geotransform),
        "seed": scene.seed,
        "contexts": [dict(asdict(c), bbox=[int(v) for v in c.bbox]) for c in scene.contexts],
        "objects": objects,
        "landcover": scene.landcover,
    }


def write_sidecar(scene: Scene, image_path, crs_wkt: str) -> Path:
    path = sidecar_path(image_path)
    text = json.dumps(sidecar_dict(scene, Path(image_path).name, crs_wkt), indent=1, sort_keys=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_sidecar(path) -> dict:
    from ..engine.errors import InputError

    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        path = sidecar_path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"No sidecar {path}: make the scene with `synth-scene` first.") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"Sidecar {path} is not valid JSON ({exc}); regenerate the scene.") from None
