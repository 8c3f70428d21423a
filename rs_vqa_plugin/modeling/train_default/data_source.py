"""Scenes and questions of a benchmark split for training, made with the project's generator.

Only the `train` and `val` splits are accepted here: the test split is never generated, read or
looked at by training or model selection. The recipe may take the split's smaller scenes only
(CPU time); the scenes are the split's own (seed, size), never resized."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Tuple

from ...engine.errors import InputError

ALLOWED_SPLITS = ("train", "val", "smoke")   # never "test"


def split_scenes(split: str, count: int, max_size: int, size_override: int = 0, start: int = 0):
    from ...benchmark.splits import get_split

    if split not in ALLOWED_SPLITS:
        raise InputError(f"train-default reads only the {' and '.join(ALLOWED_SPLITS)} splits, "
                         f"not '{split}'.")
    scenes = [s for s in get_split(split).scenes if max(s[1], s[2]) <= max_size]
    if size_override:
        # Tests only (tiny recipe): the split's seeds rendered small, so a run takes seconds.
        scenes = [(seed, size_override, size_override) for seed, _, _ in get_split(split).scenes]
    scenes = scenes[start:]
    if len(scenes) < count:
        raise InputError(f"The {split} split has {len(scenes)} scenes of at most {max_size} px; "
                         f"the recipe asks for {count}.")
    return scenes[:count]


def make_split(split: str, count: int, max_size: int, per_scene: int, dest,
               log=None, cancel=None, size_override: int = 0, start: int = 0) -> List[Tuple[Path, List[dict]]]:
    """[(scene.tif, [LRS-VQA question dicts])] for `count` scenes of the split (cached in dest)."""
    from ...benchmark.generate import make_scene, write_questions
    from ...benchmark.scene import read_sidecar, sidecar_path
    from ...benchmark.splits import get_split, scene_file_name

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    images = []
    for seed, width, height in split_scenes(split, count, max_size, size_override, start):
        if cancel is not None:
            cancel.raise_if_cancelled()
        image = dest / scene_file_name(seed)
        side = sidecar_path(image)
        existing = read_sidecar(side) if side.is_file() and image.is_file() else None
        if not existing or existing.get("size") != [width, height]:
            summary = make_scene(image, seed, width, height, cancel=cancel)
            if log is not None:
                log({"event": "scene", "split": split, "image": image.name,
                     "size": width, "seconds": summary["seconds"]})
        images.append(image)
    listing = dest / f"{split}.jsonl"
    if not listing.is_file():
        # All at once, in split order: the generator balances answers across the whole file.
        write_questions([sidecar_path(p) for p in images], listing,
                        per_scene or get_split(split).per_scene)
    questions = [json.loads(l) for l in listing.read_text(encoding="utf-8").splitlines() if l.strip()]
    by_image = {}
    for q in questions:
        by_image.setdefault(q["image"], []).append(q)
    return [(p, by_image.get(p.name, [])) for p in images]
