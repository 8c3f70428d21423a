"""train-default end to end, in resumable stages: data -> tokenizer -> view caches -> training ->
export. Each stage leaves its output in OUT_DIR and is skipped when that output is there."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

from ...engine.errors import InputError
from .recipe import Recipe

VAL_KINDS = ("thumbnail", "level1", "zoom", "zoom")


class RunLog:
    """JSON lines in OUT_DIR/train.log, a short line on stderr."""

    def __init__(self, path: Path, echo=True):
        self.path, self.echo = path, echo

    def __call__(self, record: dict) -> None:
        record = {"time": time.strftime("%H:%M:%S"), **record}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.echo:
            print("train-default: " + " ".join(f"{k}={v}" for k, v in record.items()),
                  file=sys.stderr, flush=True)


def _summary_path(out: Path) -> Path:
    return out / "summary.json"


def _update_summary(out: Path, **values) -> dict:
    path = _summary_path(out)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(values)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data


def prepare_recipe(out: Path, resume: bool, recipe: Optional[Recipe], seed: int,
                   budget_minutes: Optional[float]) -> Recipe:
    saved = out / "recipe.json"
    if resume:
        if not saved.is_file():
            raise InputError(f"--resume: {saved} does not exist; start the run without --resume.")
        return Recipe.load(saved)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} is not empty: pass --resume to continue the run saved there, or "
                         "choose a new folder.")
    recipe = recipe or Recipe(seed=seed)
    if budget_minutes is not None:
        recipe.budget_minutes = float(budget_minutes)
    out.mkdir(parents=True, exist_ok=True)
    recipe.save(saved)
    return recipe


def train_default(out_dir, budget_minutes: Optional[float] = None, resume: bool = False,
                  seed: int = 0, recipe: Optional[Recipe] = None, threads: int = 0,
                  echo: bool = True, cancel=None, stop_after: Optional[str] = None) -> Optional[Path]:
    """Run (or continue) every stage; returns the bundle folder OUT_DIR/bundle."""
    import numpy as np
    import torch

    from ..quiet import quiet_model_libraries
    from .data_source import make_split
    from .dataset import build_view_cache
    from .export import export_bundle
    from .loop import Trainer
    from .model import DefaultModel, build_llava
    from .text import PromptText

    quiet_model_libraries()
    out = Path(out_dir).expanduser().resolve()
    recipe = prepare_recipe(out, resume, recipe, seed, budget_minutes)
    if resume and budget_minutes is not None:
        recipe.budget_minutes = float(budget_minutes)
    if threads:
        torch.set_num_threads(int(threads))
    log = RunLog(out / "train.log", echo)
    log({"event": "start", "resume": resume, "seed": recipe.seed,
         "budget_minutes": recipe.budget_minutes, "threads": torch.get_num_threads()})

    # 1. scenes and questions (train and val splits only; test is never touched here)
    t0 = time.perf_counter()
    splits = {}
    for role, split, count, max_size in (
            ("train", recipe.train_split, recipe.train_scenes, recipe.scene_max_size),
            ("val", recipe.val_split, recipe.val_scenes, recipe.val_max_size)):
        splits[role] = make_split(split, count, max_size, recipe.questions_per_scene,
                                  out / "data" / role, log=log, cancel=cancel,
                                  size_override=recipe.scene_size_override,
                                  # one split for both (tiny recipe): val takes the next scenes
                                  start=recipe.train_scenes if (
                                      role == "val" and recipe.val_split == recipe.train_split) else 0)
    data_seconds = time.perf_counter() - t0

    # 2. tokenizer, trained on the training questions and answers only
    tok_dir = out / "tokenizer"
    if (tok_dir / "tokenizer.json").is_file():
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    else:
        from .vocab import train_tokenizer
        texts = [q["text"] for _, qs in splits["train"] for q in qs]
        texts += [q["ground_truth"] for _, qs in splits["train"] for q in qs]
        tokenizer = train_tokenizer(texts, recipe.vocab_size)
        tokenizer.save_pretrained(tok_dir)
        log({"event": "tokenizer", "vocab": len(tokenizer)})
    text = PromptText(tokenizer)

    # 3. view caches
    t0 = time.perf_counter()
    caches = {}
    val_kinds = VAL_KINDS + (("search",) if recipe.search_views else ())
    grids = [recipe.patch_grid, recipe.pooled_grid] if recipe.uses_dense_heads else None
    for split, kinds in (("train", None), ("val", val_kinds)):
        kinds = kinds or recipe.train_kinds()
        cache, built = view_cache(
            out / "cache" / f"{split}.npz", split, log,
            # The recipe gained view kinds or dense heads (a resumed run with a newer recipe):
            # rebuild.
            fits=lambda c, kinds=kinds: (tuple(c.meta.get("kinds", ())) == tuple(kinds)
                                         and c.meta.get("dense_grids") == grids),
            build=lambda split=split, kinds=kinds: build_view_cache(
                splits[split], recipe, text, kinds,
                seed=recipe.seed + (0 if split == "train" else 10 ** 6), cancel=cancel))
        caches[split] = cache
        if built:
            log({"event": "views", "split": split, "samples": len(cache),
                 "images": int(cache.images.shape[0]),
                 "questions": len(cache.meta["questions"])})
    cache_seconds = time.perf_counter() - t0
    _update_summary(out, data_seconds=round(data_seconds, 1), cache_seconds=round(cache_seconds, 1))
    if stop_after == "data":
        log({"event": "stopped", "after": "data"})
        return None

    done_marker = out / "checkpoints" / "done.json"
    bundle_dir = out / "bundle"
    trained = json.loads(_summary_path(out).read_text()).get("train_seconds", 0.0) \
        if _summary_path(out).is_file() else 0.0
    extending = resume and budget_minutes is not None and done_marker.is_file() \
        and recipe.budget_minutes * 60 - trained > 5
    focus_marker = out / "checkpoints" / "focus_done.json"
    focusing = float(getattr(recipe, "focus_minutes", 0.0)) > 0
    if done_marker.is_file() and (bundle_dir / "manifest.json").is_file() and not extending \
            and (not focusing or focus_marker.is_file()):
        log({"event": "already-exported", "bundle": str(bundle_dir)})
        return bundle_dir

    # 4. training
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)
    model = DefaultModel(build_llava(recipe, tokenizer), recipe)
    model.set_answer_kinds(text.kind_first_tokens(len(tokenizer)))
    trainer = Trainer(model, recipe, caches["train"], caches["val"], text, out, log=log)
    trainer.resume()
    if extending:
        # A finished run resumed with a larger budget: continue it (the schedule stretches to the
        # new total; selection on val restarts, as the val views may have changed).
        trainer.extend(recipe.budget_minutes * 60 - trainer.seconds)
        done_marker.unlink()
        # the focus stage trained the RFM of the old weights: it starts again on the new ones
        for name in ("focus_done.json", "focus_last.pt", "focus_best.pt"):
            (out / "checkpoints" / name).unlink(missing_ok=True)
    if not done_marker.is_file():
        budget = max(0.0, recipe.budget_minutes * 60 - trainer.seconds)
        result = trainer.run(budget, cancel=cancel)
        done_marker.write_text(json.dumps(result) + "\n")
    val = json.loads(done_marker.read_text())

    # 5. export the best checkpoint on val
    best = out / "checkpoints" / "best.pt"
    state = torch.load(best if best.is_file() else out / "checkpoints" / "last.pt",
                       map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    focus = None
    if focusing:
        focus = _focus_stage(out, recipe, model, splits, text, log, cancel, focus_marker)
    summary = _update_summary(
        out, recipe=recipe.to_dict(), steps=int(state["step"]), total_steps=trainer.total,
        train_seconds=round(trainer.seconds, 1), val_at_export=val, best_val_em=state["best"],
        train_questions=len(caches["train"].meta["questions"]), train_views=len(caches["train"]),
        val_questions=len(caches["val"].meta["questions"]), focus=focus,
        train_images=caches["train"].meta["images"], val_images=caches["val"].meta["images"])
    provenance = {"source": "train-default", "seed": recipe.seed, "steps": summary["steps"],
                  "train_seconds": summary["train_seconds"],
                  "data": f"{len(splits['train'])} synthetic train-split scenes, "
                          f"{summary['train_questions']} questions; selected on "
                          f"{summary['val_questions']} val questions",
                  "recipe": recipe.to_dict()}
    bundle = export_bundle(model, tokenizer, recipe, bundle_dir, provenance)
    log({"event": "exported", "bundle": str(bundle)})
    return bundle


def view_cache(path: Path, split: str, log, fits, build):
    """(cache, built): the view cache saved at `path` when it loads and `fits(cache)`, else
    `build()` saved there."""
    from .dataset import StaleCache, ViewCache

    if path.is_file():
        try:
            cache = ViewCache.load(path)
        except StaleCache:
            log({"event": "views-stale", "split": split, "why": "older cache version"})
        else:
            if fits(cache):
                return cache, False
            log({"event": "views-stale", "split": split, "had": cache.meta.get("kinds"),
                 "dense_grids": cache.meta.get("dense_grids")})
            del cache
    path.parent.mkdir(parents=True, exist_ok=True)
    cache = build()
    cache.save(path)
    return cache, True


def _focus_stage(out: Path, recipe, model, splits, text, log, cancel, marker: Path) -> dict:
    """The RFM-only focus stage (focus.py) on the joint training's best weights; resumable."""
    import dataclasses

    from .data_source import make_split
    from .dataset import build_view_cache
    from .focus import FOCUS_KINDS, FocusTrainer

    # No dense targets (the tower is frozen); search views as large as a focus step's tiles.
    views = dataclasses.replace(recipe, search_tiles=int(recipe.focus_tiles), lambda_dense=0.0,
                                dense_probe=False)

    scenes = {"val": splits["val"]}
    if recipe.scene_size_override:      # tests: the joint training's tiny scenes
        scenes["train"] = splits["train"][:int(recipe.focus_scenes)]
    else:
        scenes["train"] = make_split(recipe.train_split, int(recipe.focus_scenes),
                                     int(recipe.focus_max_size), recipe.questions_per_scene,
                                     out / "data" / "focus_train", log=log, cancel=cancel)
    caches = {}
    for split in ("train", "val"):
        cache, built = view_cache(
            out / "cache" / f"focus_{split}.npz", split, log,
            # caches written before the image positions have no xy
            fits=lambda c: (tuple(c.meta.get("kinds", ())) == FOCUS_KINDS and c.xy is not None
                            and len(c.xy) > 0),
            build=lambda split=split: build_view_cache(
                scenes[split], views, text, FOCUS_KINDS,
                seed=recipe.seed + 4243 + (0 if split == "train" else 10 ** 6), cancel=cancel))
        if built:
            log({"event": "focus-views", "split": split, "samples": len(cache),
                 "images": int(cache.images.shape[0])})
        caches[split] = cache
    trainer = FocusTrainer(model, recipe, caches["train"], caches["val"], text, out, log=log)
    trainer.resume()
    if not marker.is_file():
        budget = max(0.0, float(recipe.focus_minutes) * 60 - trainer.seconds)
        marker.write_text(json.dumps(trainer.run(budget, cancel=cancel)) + "\n")
    trainer.load_best()
    model.eval()
    return {**json.loads(marker.read_text()), "steps": trainer.step,
            "seconds": round(trainer.seconds, 1)}
