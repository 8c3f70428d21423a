"""`cost`: the paper's FLOPs accounting for an image size and LLM dimensions, without a model."""

from __future__ import annotations

import argparse
import json

from ..engine.errors import InputError

HELP = "FLOPs and token counts of a mode for an image size and LLM dimensions (METHOD §6), no model run"

FAMILIES = ("llava", "qwen2.5-vl")


def _tile_list(text: str):
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated tile counts like 9,36,50, got '{text}'")
    if not values:
        raise argparse.ArgumentTypeError("expected at least one tile count")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..engine.cost import MODES

    parser.add_argument("--image-size", nargs=2, type=int, metavar=("W", "H"), required=True)
    parser.add_argument("--hidden", type=int, required=True, help="LLM hidden size d (Qwen2-7B: 3584)")
    parser.add_argument("--ffn", type=int, required=True, help="LLM FFN width m (Qwen2-7B: 18944)")
    parser.add_argument("--layers", type=int, required=True, help="LLM decoder layers (Qwen2-7B: 28)")
    parser.add_argument("--rfm-layers", type=int, default=4,
                        help="RFM layers that run at every scoring pass (paper: 4)")
    parser.add_argument("--mode", choices=MODES, default="dip")
    parser.add_argument("--selected-tiles", type=_tile_list, default=None,
                        help="dip: tiles encoded at each pass, coarsest first, e.g. 9,36,50")
    parser.add_argument("--alpha", type=float, default=0.25, help="keep ratio of the last pass")
    parser.add_argument("--level", type=int, default=1, help="grid / prune-only: the fixed level")
    parser.add_argument("--family", choices=FAMILIES, default="llava",
                        help="token geometry: llava (thumbnail 24^2 patches, tiles pooled to 12^2, "
                             "one separator) or qwen2.5-vl (thumbnail and tiles (B/28)^2 merged "
                             "tokens, two separator tokens)")
    parser.add_argument("--tile-size", type=int, default=336)
    parser.add_argument("--patch-grid", type=int, default=None,
                        help="thumbnail tokens per side (llava: 24, 576 = 24^2; qwen2.5-vl: B/28)")
    parser.add_argument("--token-grid", type=int, default=None,
                        help="pooled tokens per tile side (144 = 12^2; qwen2.5-vl: B/28)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    from ..engine.cost import ModelDims, paper_estimate

    if args.selected_tiles and args.mode != "dip":
        raise InputError("--selected-tiles only applies to --mode dip.")
    dims = ModelDims(hidden=args.hidden, ffn=args.ffn, layers=args.layers, rfm_layers=args.rfm_layers)
    geometry = {"patch_grid": args.patch_grid or 24, "token_grid": args.token_grid or 12}
    if args.family == "qwen2.5-vl":
        if args.tile_size < 28 or args.tile_size % 28:
            raise InputError(f"--tile-size {args.tile_size} must be a multiple of 28 for "
                             "qwen2.5-vl (14 px patches merged 2x2).")
        merged = args.tile_size // 28
        geometry = {"patch_grid": args.patch_grid or merged, "token_grid": args.token_grid or merged,
                    "separator_tokens": 2, "encoder_grid": args.tile_size // 14}
    estimate = paper_estimate(args.image_size[0], args.image_size[1], dims, mode=args.mode,
                              selected_tiles=args.selected_tiles, alpha=args.alpha,
                              tile_size=args.tile_size, level=args.level, **geometry)
    if args.json:
        print(json.dumps(estimate))
        return 0
    t = estimate["tflops"]
    w, h = estimate["image_size"]
    print(f"{w} x {h} px, mode {estimate['mode']}, pyramid long sides {estimate['levels']}")
    print(f"tiles per pass      {estimate['tiles_per_pass']} (total {estimate['tiles_encoded']})")
    print(f"encoder tokens      {estimate['encoder_tokens']}")
    print(f"RFM tokens per pass {estimate['rfm_tokens']}")
    print(f"LLM vision tokens   {estimate['llm_vision_tokens']}")
    print(f"TFLOPs              {t['total']:.2f} (LLM {t['llm']:.2f}, RFM {t['rfm']:.2f})")
    return 0
