"""The default model's recipe: sizes, data, losses and training stages, in one JSON-able dataclass.

The recipe is written beside the checkpoints (recipe.json) so that a resumed run continues with
exactly the settings it started with, and into the bundle's provenance."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Dict, List


@dataclass
class Stage:
    name: str
    fraction: float          # share of the time budget (or of max_steps)
    lr: float
    views: List[str]         # view kinds drawn in this stage (see views.py)


@dataclass
class Recipe:
    seed: int = 0
    # ---- model (the manifest carries these sizes)
    tile_size: int = 64
    patch_size: int = 8
    vision_hidden: int = 96
    vision_layers: int = 3
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 384
    vocab_size: int = 700
    max_positions: int = 16384
    export_context: int = 32768     # the shipped LLM's context (RoPE: no learned positions)
    rfm_layers: List[int] = field(default_factory=lambda: [1, 3])
    alpha: float = 0.25
    n_max: int = 32
    # The bundle's default selection (manifest.json `selection`; {} = the paper's), chosen on val.
    selection: Dict[str, object] = field(default_factory=lambda: {"name": "focus"})
    # ---- data (train split only; val for selection)
    train_split: str = "train"
    val_split: str = "val"
    train_scenes: int = 24
    val_scenes: int = 2
    scene_max_size: int = 4096      # the train split's scenes up to this size (CPU time)
    val_max_size: int = 8192
    scene_size_override: int = 0    # tests only: render the split's seeds at this size
    questions_per_scene: int = 0    # 0: the split's own number
    zoom_views: int = 3      # zoom views per question (besides the paper's level-1 view)
    max_view_tiles: int = 9
    # dip-like 'search' views (the object's tiles among other clusters at a deeper level): off by
    # default. Measured as a continued run (models/default/README.md): they raised the share of
    # val questions whose object stays in dip's tiles at every level but not the answers, so the
    # shipped model does not use them. Turn on with search_views: 1 and a stage that draws them
    # (SEARCH_STAGE) in a run's recipe.json.
    search_views: int = 0
    search_tiles: int = 32
    # The focus stage (focus.py), after the joint training: the RFM alone (everything else frozen)
    # on level-1 views and 'search' views of up to focus_tiles tiles at every deeper level, for
    # focus_minutes (0: no focus stage, as runs saved before it).
    # Its scenes: the train split's up to focus_max_size px (the joint training stops at 4,096 px
    # for CPU time; level 1 of an 8k scene is twice as coarse, and dip's first step is there).
    focus_minutes: float = 20.0
    focus_lr: float = 5e-4
    focus_tiles: int = 32
    focus_scenes: int = 48
    focus_max_size: int = 8192
    # > 0: the focus stage gives the RFM the HR tokens' place in the image (rfm_torch
    # RFMConfig.image_xy, this many frequencies per axis): region references need it.
    focus_xy: int = 6
    # ---- optimisation
    batch_size: int = 12
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    budget_minutes: float = 60.0
    max_steps: int = 0       # > 0: stop after this many steps whatever the budget (tests)
    checkpoint_minutes: float = 5.0
    log_every: int = 10
    val_every_minutes: float = 10.0
    val_questions: int = 200
    # ---- losses: LM on answer tokens + the paper's RFM distillation + box grounding (ours)
    lambda_distill: float = 1.0
    lambda_ground: float = 0.5      # teacher (LLM) query attention onto the asked object's tokens
    lambda_rfm_box: float = 0.5     # the RFM score mass on the asked object's tokens
    # The distillation loss's MSE form (distill_loss.MSE_FORMS): the shipped model was trained
    # with 'probs' (recipes saved before this field read as it), so that stays this recipe's.
    distill_mse_form: str = "probs"
    # Grounding target: 'soft' = cross-entropy to exp(-gap / sigma) over the HR tokens (gap to the
    # box in token cells), so the top-alpha set is a compact blob around the object; 'hard' =
    # -log of the mass on the box's tokens. soft_from_step: hard before it (the shipped run
    # switched at a resume; 0 for new runs).
    ground_target: str = "soft"
    ground_sigma: float = 1.0
    soft_from_step: int = 0
    # Dense supervision of the vision tower (dense.py; training only, the heads are not exported):
    # per LLM vision token, linear heads on the projected tokens predict the cell's object
    # category (or none), colour, shape, status, background and land cover. The LM loss alone
    # never taught the tower to keep a 5 x 10 px vehicle's colour in its token.
    lambda_dense: float = 1.0
    dense_weights: Dict[str, float] = field(default_factory=lambda: {
        "category": 1.0, "color": 1.0, "shape": 0.5, "status": 0.5, "background": 0.5,
        "landcover": 0.5})
    dense_none_weight: float = 0.2   # class weight of "no object" (most cells are empty)
    # True: the heads read detached tokens (a linear probe trained alongside, no effect on the
    # model): measures what an old-recipe tower encodes, for comparisons.
    dense_probe: bool = False
    # Answer of the asked kind: -log of the probability mass the first answer token puts on the
    # first tokens of the question category's answers (benchmark.answer_kinds).
    lambda_kind: float = 0.5
    stages: List[Stage] = field(default_factory=lambda: [
        Stage("warm-up on zoomed views", 0.2, 1.5e-3, ["zoom"]),
        Stage("joint: thumbnail, level 1 and zoomed views", 0.8, 1e-3,
              ["level1", "zoom", "thumbnail", "zoom", "level1", "zoom"]),
    ])

    @property
    def patch_grid(self) -> int:
        return self.tile_size // self.patch_size

    @property
    def pooled_grid(self) -> int:
        return -(-self.patch_grid // 2)

    @property
    def uses_dense_heads(self) -> bool:
        return self.lambda_dense > 0 or self.dense_probe

    def train_kinds(self) -> tuple:
        """View kinds drawn per training question (the train cache holds exactly these)."""
        return tuple(["thumbnail", "level1"] + ["zoom"] * self.zoom_views
                     + ["search"] * self.search_views)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name, value in LEGACY.items():
            # a recipe.json written before the field existed: the run it describes had it off
            values.setdefault(name, value)
        if "stages" in values:
            values["stages"] = [Stage(**s) for s in values["stages"]]
        return cls(**values)

    def save(self, path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path) -> "Recipe":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# Fields added after the shipped run, with the values that reproduce runs saved without them.
LEGACY = {"lambda_dense": 0.0, "dense_probe": False, "lambda_kind": 0.0, "focus_minutes": 0.0,
          "selection": {}, "n_max": 24}


def legacy_recipe(seed: int = 0) -> Recipe:
    """The recipe of the shipped bundle (models/default): no dense heads, no answer-kind loss."""
    return Recipe(seed=seed, **LEGACY)


# dip's deeper sequences hold the object among many selected tiles; this stage trains the RFM to
# find it there (the continued-run experiment used fractions 0.2 / 0.4 / 0.4 with it last).
SEARCH_STAGE = Stage("search: dip-like deeper views with the other kinds", 0.4, 1e-3,
                     ["search", "level1", "search", "zoom", "thumbnail", "search"])


def tiny_recipe(seed: int = 0) -> Recipe:
    """A few-second recipe for tests: two small scenes, a handful of steps."""
    return Recipe(seed=seed, vision_hidden=32, vision_layers=2, vision_heads=2, text_hidden=64,
                  text_layers=4, text_heads=4, text_kv_heads=2, text_intermediate=128,
                  vocab_size=500, rfm_layers=[1, 3], train_split="smoke", val_split="smoke",
                  train_scenes=1, val_scenes=1, scene_size_override=512, questions_per_scene=6, zoom_views=1, search_views=1, search_tiles=8,
                  stages=[Stage("warm-up", 0.25, 1.5e-3, ["zoom"]),
                          Stage("joint", 0.25, 1e-3, ["level1", "zoom", "thumbnail"]),
                          SEARCH_STAGE],    # every view kind's code path runs in the tests
                  batch_size=4,
                  warmup_steps=2, max_steps=4, budget_minutes=1.0, checkpoint_minutes=0.0,
                  log_every=1, val_questions=6, focus_minutes=0.05, focus_tiles=8,
                  focus_scenes=1)
