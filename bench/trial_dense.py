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
    args = parser.parse_args(argv)

    from rs_vqa_plugin.modeling.quiet import quiet_model_libraries

    quiet_model_libraries()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in [a for a in args.arms.split(",") if a]:
        results[name] = run_arm(out, name, args)
        print(f"{name}: {json.dumps(results[name]['val'])}", file=sys.stderr, flush=True)
    (out / "trial.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
