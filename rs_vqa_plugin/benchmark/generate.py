"""Make scenes (GeoTIFF + sidecar) and whole splits (scenes + LRS-VQA questions jsonl)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

from ..engine.errors import InputError
from ..engine.progress import CancelToken, EventSink, emit, progress_event
from .layout import DEFAULT_GSD, build_scene
from .questions import category_balance, questions_for_scenes
from .render import crs_wkt, write_geotiff
from .scene import read_sidecar, sidecar_dict, sidecar_path, write_sidecar
from .splits import get_split, scene_file_name

MAX_SIDE = 100_000


def make_scene(path, seed: int, width: int, height: Optional[int] = None, gsd: float = DEFAULT_GSD,
               workers: Optional[int] = None, events: Optional[EventSink] = None,
               cancel: Optional[CancelToken] = None) -> dict:
    """Write `path` (GeoTIFF) and its `.objects.json` sidecar; return a short summary."""
    height = width if height is None else height
    if not (256 <= width <= MAX_SIDE and 256 <= height <= MAX_SIDE):
        raise InputError(f"Scene size {width}x{height} is out of range: use 256..{MAX_SIDE} px per side.")
    if gsd <= 0:
        raise InputError(f"Ground sample distance must be positive (got {gsd}).")
    start = time.perf_counter()
    scene = build_scene(seed, width, height, gsd)
    write_geotiff(scene, path, events=events, cancel=cancel, workers=workers)
    write_sidecar(scene, path, crs_wkt(scene.epsg))
    return {"image": str(path), "sidecar": str(sidecar_path(path)), "size": [width, height], "seed": seed,
            "gsd": gsd, "objects": len(scene.objects), "contexts": len(scene.contexts),
            "seconds": round(time.perf_counter() - start, 2)}


def sidecars_in(scene_dir) -> List[Path]:
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise InputError(f"{scene_dir} is not a folder of synthetic scenes (make them with synth-scene).")
    found = sorted(scene_dir.glob("*.objects.json"))
    if not found:
        raise InputError(f"No *.objects.json sidecars in {scene_dir}: make scenes with synth-scene first.")
    return found


def write_questions(sidecars, out_path, per_scene: int) -> List[dict]:
    records = questions_for_scenes((read_sidecar(path) for path in sidecars), per_scene)
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    tmp.replace(out_path)
    return records


def make_split(name: str, out_dir, per_scene: Optional[int] = None, workers: Optional[int] = None,
               events: Optional[EventSink] = None, cancel: Optional[CancelToken] = None) -> dict:
    """Scenes of a split into out_dir (kept when already there with the same seed and size) and
    out_dir/<name>.jsonl."""
    split = get_split(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sidecars = []
    for k, (seed, width, height) in enumerate(split.scenes):
        image = out_dir / scene_file_name(seed)
        side = sidecar_path(image)
        existing = read_sidecar(side) if side.is_file() and image.is_file() else None
        if not existing or existing.get("seed") != seed or existing.get("size") != [width, height]:
            make_scene(image, seed, width, height, workers=workers, cancel=cancel)
        sidecars.append(side)
        emit(events, progress_event("scenes", (k + 1) / len(split.scenes), f"{image.name}"))
    records = write_questions(sidecars, out_dir / f"{name}.jsonl", per_scene or split.per_scene)
    return {"split": name, "scenes": len(sidecars), "questions": len(records),
            "jsonl": str(out_dir / f"{name}.jsonl"), "balance": category_balance(records)}


def scene_sidecar(seed: int, width: int, height: int, gsd: float = DEFAULT_GSD) -> dict:
    """The sidecar make_scene would write, without rendering a pixel (the layout is cheap)."""
    scene = build_scene(seed, width, height, gsd)
    # through JSON, so it equals what read_sidecar returns (lists, not tuples)
    return json.loads(json.dumps(sidecar_dict(scene, scene_file_name(seed), crs_wkt(scene.epsg))))


def split_questions(name: str, scenes: Optional[int] = None) -> List[dict]:
    """A split's question records (those of its first `scenes` scenes) without any image: for
    text-only baselines and generator checks. Equal to make_split's jsonl for those scenes."""
    split = get_split(name)
    specs = split.scenes[:scenes] if scenes else split.scenes
    return questions_for_scenes((scene_sidecar(*spec) for spec in specs), split.per_scene)
