"""`synth-questions`: LRS-VQA questions (jsonl) for a folder of synthetic scenes, or a whole split."""

from __future__ import annotations

import json
import sys

HELP = "write LRS-VQA questions for synthetic scenes (or make a whole split: scenes + questions)"


def add_arguments(parser):
    parser.add_argument("scene_dir", nargs="?", metavar="SCENE_DIR", help="folder with scenes and their sidecars")
    parser.add_argument("--out", metavar="QUESTIONS.jsonl", help="questions file to write")
    parser.add_argument("--per-scene", type=int, default=None, help="questions per scene (default: split's, or 40)")
    parser.add_argument("--split", metavar="NAME", help="only the scenes of this split (smoke, train, val, test)")
    parser.add_argument("--make-split", metavar="NAME", help="generate the split's scenes and questions into --out-dir")
    parser.add_argument("--out-dir", metavar="DIR", help="folder for --make-split (scenes + NAME.jsonl)")
    parser.add_argument("--workers", type=int, default=None, help="render processes for --make-split")


def run(args) -> int:
    from ..benchmark import generate
    from ..benchmark.questions import category_balance
    from ..benchmark.scene import sidecar_path
    from ..benchmark.splits import get_split, scene_file_name
    from ..engine.errors import InputError
    from pathlib import Path

    if args.make_split:
        if not args.out_dir:
            raise InputError("--make-split needs --out-dir DIR (where the scenes and NAME.jsonl go).")

        def events(event):
            print(f"\r{event['message']:<40}", end="", file=sys.stderr, flush=True)

        report = generate.make_split(args.make_split, args.out_dir, args.per_scene, args.workers, events=events)
        print(file=sys.stderr)
        print(json.dumps(report, indent=1))
        return 0
    if not args.scene_dir or not args.out:
        raise InputError("Give SCENE_DIR and --out QUESTIONS.jsonl (or --make-split NAME --out-dir DIR).")
    per_scene = args.per_scene
    if args.split:
        split = get_split(args.split)
        sidecars = [sidecar_path(Path(args.scene_dir) / scene_file_name(seed)) for seed in split.seeds()]
        missing = [str(p) for p in sidecars if not p.is_file()]
        if missing:
            raise InputError(f"Split {args.split} needs {', '.join(missing[:3])}...: run "
                             f"synth-questions --make-split {args.split} --out-dir {args.scene_dir}")
        per_scene = per_scene or split.per_scene
    else:
        sidecars = generate.sidecars_in(args.scene_dir)
    records = generate.write_questions(sidecars, args.out, per_scene or 40)
    print(json.dumps({"questions": len(records), "out": args.out, "balance": category_balance(records)}, indent=1))
    return 0
