"""The benchmark splits, by seed: which scenes (seed, width, height) each holds and how many questions.

Seed ranges never overlap, so no test scene (8k..27k px) is ever seen in training or validation:
  smoke: seeds 9, 17 (2048 and 2560 px), 8 questions each  - CI, a few seconds
  train: seeds 1000-1047 (3072..8192 px), 80 questions each  - 3,840 questions
  val:   seeds 2000-2007 (6144..10240 px), 40 questions each  - 320 questions
  test:  seeds 3000-3011 (8192..27328 px), 40 questions each  - 480 questions
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

from ..engine.errors import InputError

SceneSpec = Tuple[int, int, int]     # seed, width, height


@dataclass(frozen=True)
class Split:
    name: str
    scenes: Tuple[SceneSpec, ...]
    per_scene: int

    def seeds(self):
        return [seed for seed, _, _ in self.scenes]


def _cycle(first_seed: int, count: int, sizes) -> Tuple[SceneSpec, ...]:
    return tuple((first_seed + k, sizes[k % len(sizes)], sizes[k % len(sizes)]) for k in range(count))


SPLITS: Dict[str, Split] = {
    "smoke": Split("smoke", ((9, 2048, 2048), (17, 2560, 2560)), 8),
    "train": Split("train", _cycle(1000, 48, (3072, 4096, 6144, 8192)), 80),
    "val": Split("val", _cycle(2000, 8, (6144, 8192, 10240)), 40),
    "test": Split("test", _cycle(3000, 12, (8192, 10240, 12288, 16384, 20480, 27328)), 40),
}


def get_split(name: str) -> Split:
    try:
        return SPLITS[name]
    except KeyError:
        raise InputError(f"Unknown split {name!r}: choose one of {', '.join(SPLITS)}.") from None


def scene_file_name(seed: int) -> str:
    return f"synth_{seed}.tif"
