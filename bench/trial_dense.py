"""A short, same-data same-steps trial of train-default recipes, compared on held-out val views.

Arms (see ARMS): `old` = the shipped recipe (no dense heads, no answer-kind loss) with the dense
heads as a detached linear probe (so its tower's dense accuracy can be read without changing its
training); `new` = the current default recipe (dense supervision + answer-kind loss); `new-p4` =
the same with 4 px patches (8 px pooled tokens at full resolution); `dense-only`, `kind-only`
split the two changes. Every arm trains on the same scenes and questions (one shared data
folder; the train split only, selection data from val; never test) for exactly --steps steps;
the figures are the run's final validation (done.json): teacher-forced exact match by view kind
and by question category, greedy answers of the asked kind, the dense heads' accuracy.

    python bench/trial_dense.py --out /tmp/trial --arms old,new --steps 300 \\
        [--train-scenes 6] [--val-scenes 2] [--threads 2]
Resumable (an arm with a finished run is only read back). Prints a markdown table and writes
OUT/trial.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def arm_recipe(name: str, seed: int):
    from rs_vqa_plugin.modeling.train_default.recipe import Recipe, legacy_recipe

    if name == "old":
        recipe = legacy_recipe(seed)
        recipe.dense_probe = True
    elif name == "new":
        recipe = Recipe(seed=seed)
    elif name == "new-p4":
        recipe = Recipe(seed=seed, patch_size=4)
    elif name == "new-p8":
        recipe = Recipe(seed=seed, patch_size=8)
    elif name == "dense-only":
        recipe = Recipe(seed=seed, lambda_kind=0.0)
    elif name == "kind-only":
        recipe = legacy_recipe(seed)
        recipe.lambda_kind, recipe.dense_probe = Recipe().lambda_kind, True
    else:
        raise SystemExit(f"unknown arm {name!r}: one of {', '.join(ARMS)}")
    return recipe


ARMS = ("old", "new", "new-p4", "new-p8", "dense-only", "kind-only")


def run_arm(out: Path, name: str, args) -> dict:
    from rs_vqa_plugin.modeling.train_default.run import train_default

    folder = out / name
    if not (folder / "recipe.json").is_file():
        recipe = arm_recipe(name, args.seed)
        recipe.train_scenes, recipe.val_scenes = args.train_scenes, args.val_scenes
        recipe.max_steps = args.steps
        recipe.val_every_minutes = 0.0       # one validation, at the end
        recipe.val_questions = 10 ** 6       # every val view
        folder.mkdir(parents=True, exist_ok=True)
        recipe.save(folder / "recipe.json")
        # the same scenes and questions for every arm
        (out / "data").mkdir(exist_ok=True)
        os.symlink(Path("..") / "data", folder / "data")
    train_default(folder, resume=True, threads=args.threads, echo=args.echo)
    summary = json.loads((folder / "summary.json").read_text())
    val = json.loads((folder / "checkpoints" / "done.json").read_text())
    bundle = folder / "bundle"
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    return {"steps": summary["steps"], "train_seconds": summary["train_seconds"],
            "seconds_per_step": summary["train_seconds"] / max(1, summary["steps"]),
            "bundle_mb": round(size / 2 ** 20, 2), "val": val,
            "recipe": {k: summary["recipe"][k] for k in ("patch_size", "lambda_dense", "dense_probe",
                                                         "lambda_kind")}}


def evaluate_more_val(out: Path, name: str, args) -> dict:
    """The arm's final weights validated on --more-val further val scenes (the next ones of the
    split that the recipe's size cap allows; their own questions and views, cached per arm)."""
    import torch
    from transformers import AutoTokenizer

    from rs_vqa_plugin.modeling.train_default.data_source import make_split
    from rs_vqa_plugin.modeling.train_default.dataset import ViewCache, build_view_cache
    from rs_vqa_plugin.modeling.train_default.loop import Trainer
    from rs_vqa_plugin.modeling.train_default.model import DefaultModel, build_llava
    from rs_vqa_plugin.modeling.train_default.recipe import Recipe
    from rs_vqa_plugin.modeling.train_default.run import VAL_KINDS
    from rs_vqa_plugin.modeling.train_default.text import PromptText

    folder = out / name
    recipe = Recipe.load(folder / "recipe.json")
    scenes = make_split(recipe.val_split, args.more_val, recipe.val_max_size, 0,
                        out / "data" / "val-more", start=recipe.val_scenes)
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    text = PromptText(tokenizer)
    path = folder / "cache" / "val-more.npz"
    if path.is_file():
        cache = ViewCache.load(path)
    else:
        cache = build_view_cache(scenes, recipe, text, VAL_KINDS, seed=recipe.seed + 10 ** 6 + 1)
        cache.save(path)
    model = DefaultModel(build_llava(recipe, tokenizer), recipe)
    model.set_answer_kinds(text.kind_first_tokens(len(tokenizer)))
    state = torch.load(folder / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    trainer = Trainer(model, recipe, cache, cache, text, folder / "more-val", log=lambda r: None)
    return trainer.validate()


def vision_only(out: Path, patch: int, args) -> dict:
    """The tower alone (+ projector, pooling and the dense heads), trained on the dense loss only
    for --steps steps of VISION_BATCH train images, then its dense accuracy on the val images:
    how well tokens of this patch size can hold small objects, without the LLM's cost."""
    import time

    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from rs_vqa_plugin.modeling.train_default.dataset import ViewCache
    from rs_vqa_plugin.modeling.train_default.loop import dense_accuracy
    from rs_vqa_plugin.modeling.train_default.model import DefaultModel, build_llava, dense_targets
    from rs_vqa_plugin.modeling.train_default.recipe import Recipe
    from rs_vqa_plugin.modeling.train_default.run import train_default

    folder = out / f"vision-p{patch}"
    if not (folder / "recipe.json").is_file():
        recipe = Recipe(seed=args.seed, patch_size=patch, train_scenes=args.train_scenes,
                        val_scenes=args.val_scenes)
        folder.mkdir(parents=True, exist_ok=True)
        recipe.save(folder / "recipe.json")
        os.symlink(Path("..") / "data", folder / "data")
    train_default(folder, resume=True, threads=args.threads, echo=args.echo, stop_after="data")
    recipe = Recipe.load(folder / "recipe.json")
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    train, val = (ViewCache.load(folder / "cache" / f"{s}.npz") for s in ("train", "val"))
    model = DefaultModel(build_llava(recipe, tokenizer), recipe)
    params = list(model.vision.parameters()) + list(model.dense_heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=1.5e-3, weight_decay=recipe.weight_decay)
    rng = np.random.default_rng(args.seed)
    cpu = 0.0
    for step in range(args.steps):
        ids = sorted(rng.choice(train.images.shape[0], VISION_BATCH, replace=False).tolist())
        thumbs = {k for k, i in enumerate(ids) if int(train.image_level[i]) == 0}
        batch = dense_targets(train, ids, thumbs)
        for group in optimizer.param_groups:
            group["lr"] = 1.5e-3 * min(1.0, (step + 1) / 50) * 0.5 * (1 + np.cos(np.pi * step / args.steps))
        start = time.process_time()
        images = torch.from_numpy(np.ascontiguousarray(train.images[ids]))
        loss = model.dense_loss(batch, *model.encode(images))["dense"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        cpu += time.process_time() - start
    model.eval()
    return {"patch": patch, "steps": args.steps, "cpu_seconds_per_step": cpu / max(1, args.steps),
            "dense": dense_accuracy(model, val)}


VISION_BATCH = 48


def table(results: dict) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.0f}"

    cats = sorted({c for r in results.values() for c in r["val"].get("em_by_category", {})})
    dense = ("category", "none", "category_finest", "color", "color_finest", "shape", "status",
             "background", "landcover")
    lines = ["| arm | s/step | val EM | " + " | ".join(f"EM {c}" for c in cats)
             + " | answer of the asked kind | " + " | ".join(f"dense {d}" for d in dense)
             + " | RFM top-25% on box | bundle MB |"]
    lines.append("|" + "---|" * (len(cats) + len(dense) + 6))
    for name, r in results.items():
        v = r["val"]
        row = [name, f"{r['seconds_per_step']:.2f}", pct(v["em"])]
        row += [pct(v.get("em_by_category", {}).get(c)) for c in cats]
        row += [pct(v.get("kind_rate"))]
        row += [pct(v.get("dense", {}).get(d)) for d in dense]
        row += [pct(v.get("rfm_box_hit")), f"{r['bundle_mb']:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    kinds = ["", "answers of the asked kind, by category:", "",
             "| arm | " + " | ".join(cats) + " |", "|" + "---|" * (len(cats) + 1)]
    for name, r in results.items():
        kinds.append(f"| {name} | " + " | ".join(
            pct(r["val"].get("kind_by_category", {}).get(c)) for c in cats) + " |")
    return "\n".join(lines + kinds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--arms", default="old,new")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--train-scenes", type=int, default=6)
    parser.add_argument("--val-scenes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--echo", action="store_true", help="print the training log lines")
    parser.add_argument("--more-val", type=int, default=0,
                        help="also validate each arm's final weights on this many further val "
                             "scenes (less noise; a table of its own)")
    parser.add_argument("--vision-only", default="",
                        help="patch sizes (e.g. 8,4): train the tower on the dense loss alone "
                             "for --steps steps each and compare dense accuracy (no LLM)")
    args = parser.parse_args(argv)

    from rs_vqa_plugin.modeling.quiet import quiet_model_libraries

    quiet_model_libraries()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.vision_only:
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
        found = {f"p{p}": vision_only(out, int(p), args) for p in args.vision_only.split(",") if p}
        (out / "vision_only.json").write_text(json.dumps(found, indent=2) + "\n")
        heads = ("category", "none", "category_finest", "color", "color_finest", "shape", "status",
                 "background", "landcover")
        print("| patch | CPU s/step | " + " | ".join(heads) + " |")
        print("|" + "---|" * (len(heads) + 2))
        for r in found.values():
            print(f"| {r['patch']} | {r['cpu_seconds_per_step']:.2f} | " + " | ".join(
                f"{100 * r['dense'][h]:.0f}" if r["dense"].get(h) is not None else "-"
                for h in heads) + " |")
        return 0
    results = {}
    for name in [a for a in args.arms.split(",") if a]:
        results[name] = run_arm(out, name, args)
        print(f"{name}: {json.dumps(results[name]['val'])}", file=sys.stderr, flush=True)
    (out / "trial.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    if args.more_val:
        more = {name: dict(r, val=evaluate_more_val(out, name, args)) for name, r in results.items()}
        (out / "trial.more-val.json").write_text(json.dumps(more, indent=2) + "\n")
        print(f"\non {args.more_val} further val scenes:\n")
        print(table(more))
    return 0


if __name__ == "__main__":
    sys.exit(main())
