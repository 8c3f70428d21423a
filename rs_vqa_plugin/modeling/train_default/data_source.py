"""Scenes and questions of a benchmark split for training, made with the project's generator.

Only the `train` and `val` splits are accepted here: the test split is never generated, read or
looked at by training or model selection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Sequence, Tuple

from ...engine.errors import InputError

ALLOWED_SPLITS = ("train", "val")


def _split_seeds(split: str, count: int) -> List[int]:
    from ...benchmark import splits

    return list(splits.split_seeds(split))[:count]


def _make_scene(seed: int, size: int, path: Path, cancel=None) -> Path:
    from ...benchmark.layout import build_scene
    from ...benchmark.render import crs_wkt, write_geotiff
    from ...benchmark.scene import sidecar_path, write_sidecar

    if path.is_file() and sidecar_path(path).is_file():
        return path
    scene = build_scene(seed, size, size)
    write_geotiff(scene, path, cancel=cancel)
    write_sidecar(scene, path, crs_wkt(scene.epsg))
    return path


def _scene_questions(image: Path, per_scene: int, seed: int) -> List[dict]:
    from ...benchmark import questions

    return list(questions.questions_for_image(image, per_scene=per_scene, seed=seed))


def make_split(split: str, count: int, sizes: Sequence[int], per_scene: int, dest,
               log=None, cancel=None) -> List[Tuple[Path, List[dict]]]:
    """[(scene.tif, [LRS-VQA question dicts])] for `count` scenes of the split (cached in dest)."""
    if split not in ALLOWED_SPLITS:
        raise InputError(f"train-default reads only the {' and '.join(ALLOWED_SPLITS)} splits, "
                         f"not '{split}'.")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    listing = dest / "questions.jsonl"
    seeds = _split_seeds(split, count)
    if len(seeds) < count:
        raise InputError(f"The {split} split has {len(seeds)} scenes, the recipe asks for {count}.")
    done = {}
    if listing.is_file():
        for line in listing.read_text(encoding="utf-8").splitlines():
            q = json.loads(line)
            done.setdefault(q["image"], []).append(q)
    result = []
    for i, seed in enumerate(seeds):
        if cancel is not None:
            cancel.raise_if_cancelled()
        size = int(sizes[i % len(sizes)])
        name = f"{split}_{seed}_{size}.tif"
        image = _make_scene(seed, size, dest / name, cancel)
        if name not in done:
            qs = [dict(q, image=name) for q in _scene_questions(image, per_scene, seed)]
            with listing.open("a", encoding="utf-8") as f:
                f.writelines(json.dumps(q) + "\n" for q in qs)
            done[name] = qs
            if log is not None:
                log({"event": "scene", "split": split, "image": name, "questions": len(qs)})
        result.append((image, done[name]))
    return result
