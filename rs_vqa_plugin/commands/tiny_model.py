"""`tiny-model OUT_DIR`: a small random bundle built from configs through the hf-llava converter."""

from __future__ import annotations

HELP = "build a tiny random model bundle (tests, demos, benchmarks of the machinery)"


def add_arguments(parser):
    parser.add_argument("out_dir", help="bundle folder to create")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (0)")
    parser.add_argument("--tile-size", type=int, default=112,
                        help="vision tile size B in pixels (112; real models use 336)")
    parser.add_argument("--patch-size", type=int, default=14, help="vision patch size (14)")
    parser.add_argument("--hidden", type=int, default=64, help="LLM hidden size (64)")
    parser.add_argument("--layers", type=int, default=4, help="LLM decoder layers (4)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle")


def run(args) -> int:
    import sys

    from ..engine.errors import InputError
    from ..modeling.quiet import quiet_model_libraries
    from ..modeling.tiny_model import TinyModelConfig, make_tiny_bundle

    if args.tile_size % args.patch_size or (args.tile_size // args.patch_size) < 2:
        raise InputError(f"--tile-size {args.tile_size} must be a multiple of --patch-size "
                         f"{args.patch_size} with at least 2 patches per side.")
    if args.hidden % 4 or args.layers < 3:
        raise InputError("--hidden must be a multiple of 4 and --layers at least 3.")
    quiet_model_libraries()
    cfg = TinyModelConfig(seed=args.seed, tile_size=args.tile_size, patch_size=args.patch_size,
                          text_hidden=args.hidden, text_layers=args.layers,
                          text_intermediate=2 * args.hidden)
    path = make_tiny_bundle(args.out_dir, cfg, events=_print_progress,
                            overwrite=args.overwrite)
    print(f"tiny bundle written to {path}", file=sys.stderr)
    print(path)
    return 0


def _print_progress(event) -> None:
    import sys

    if event.get("type") == "progress":
        print(f"[{event['fraction'] * 100:3.0f}%] {event['message']}", file=sys.stderr)
