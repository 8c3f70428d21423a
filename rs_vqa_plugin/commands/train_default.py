"""`train-default OUT_DIR`: train the bundled default model on the synthetic train split (CPU)."""

from __future__ import annotations

HELP = ("train the default model (small LLaVA + distilled RFM) on synthetic scenes; resumable; "
        "the bundle lands in OUT_DIR/bundle")


def add_arguments(parser):
    parser.add_argument("out_dir", help="working folder: data, caches, checkpoints, log, bundle")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="training time budget in minutes (recipe default: 60); on --resume, "
                             "the total budget of the run")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved in OUT_DIR (same recipe, same batches)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, weights and batches (0)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="train exactly this many steps instead of filling the time budget "
                             "(an exactly reproducible run)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--tiny", action="store_true",
                        help="a few-step recipe on tiny scenes (a check that everything runs)")
    parser.add_argument("--data-only", action="store_true",
                        help="stop after making scenes, questions and view caches (then --resume)")
    parser.add_argument("--copy-to", default=None,
                        help="also copy the finished bundle to this folder (e.g. models/default)")


def run(args) -> int:
    import shutil
    import sys
    from pathlib import Path

    from ..modeling.train_default.recipe import tiny_recipe
    from ..modeling.train_default.run import train_default

    recipe = tiny_recipe(args.seed) if args.tiny and not args.resume else None
    if args.max_steps is not None and not args.resume:
        from ..modeling.train_default.recipe import Recipe
        recipe = recipe or Recipe(seed=args.seed)
        recipe.max_steps = int(args.max_steps)
    bundle = train_default(args.out_dir, budget_minutes=args.budget_minutes, resume=args.resume,
                           seed=args.seed, recipe=recipe, threads=args.threads,
                           stop_after="data" if args.data_only else None)
    if bundle is None:
        print(f"data ready in {args.out_dir}; continue with --resume", file=sys.stderr)
        return 0
    if args.copy_to:
        # Replace the bundle's own files only: a model card or figures beside them stay.
        target = Path(args.copy_to)
        target.mkdir(parents=True, exist_ok=True)
        for entry in Path(bundle).iterdir():
            old = target / entry.name
            if old.is_dir():
                shutil.rmtree(old)
            elif old.exists():
                old.unlink()
            if entry.is_dir():
                shutil.copytree(entry, old)
            else:
                shutil.copy2(entry, old)
        bundle = target
    print(f"default model bundle written to {bundle}", file=sys.stderr)
    print(bundle)
    return 0
