"""`convert SRC OUT_DIR`: make a bundle from a transformers LLaVA or Qwen2.5-VL folder or a released
LRS-VQA one."""

from __future__ import annotations

HELP = ("convert a LLaVA-family model (hf-llava), a Qwen2.5-VL model (hf-qwen2.5-vl) or a "
        "released LRS-VQA checkpoint into a bundle")

SOURCES = ("hf-llava", "hf-qwen2.5-vl", "lrs-vqa")


def add_arguments(parser):
    parser.add_argument("src", help="source model folder (config.json + *.safetensors)")
    parser.add_argument("out_dir", help="bundle folder to create")
    parser.add_argument("--from", dest="source", choices=SOURCES, default="hf-llava",
                        help="source layout (hf-llava)")
    parser.add_argument("--tile-size", type=int, default=None,
                        help="hf-qwen2.5-vl only: pyramid tile size in px, a multiple of 28 "
                             "(default 336: 12 x 12 = 144 tokens a tile)")
    parser.add_argument("--rfm-layers", default=None,
                        help="LLM layers for the RFM, e.g. 1,5,11,14 (default: the paper's list "
                             "scaled to the LLM depth; lrs-vqa: the checkpoint's own)")
    parser.add_argument("--vision-tower", default=None,
                        help="lrs-vqa only: local transformers CLIP folder when the checkpoint "
                             "does not carry its vision tower's weights")
    parser.add_argument("--fp16", action="store_true",
                        help="export the ONNX parts with float16 weights (for GPU inference)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle")


def parse_layers(text):
    from ..engine.errors import InputError

    if text is None:
        return None
    try:
        layers = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError as exc:
        raise InputError(f"--rfm-layers {text!r} must be comma-separated integers.") from exc
    if not layers or layers[0] < 1 or any(b <= a for a, b in zip(layers, layers[1:])):
        raise InputError(f"--rfm-layers {text!r} must be increasing and start at 1 or more.")
    return layers


def run(args) -> int:
    import importlib
    import sys
    from pathlib import Path

    from ..engine.errors import InputError, RuntimeSetupError
    from ..modeling.quiet import quiet_model_libraries

    layers = parse_layers(args.rfm_layers)
    if not Path(args.src).is_dir():
        raise InputError(f"Source folder {args.src} does not exist.")
    if args.vision_tower and args.source != "lrs-vqa":
        raise InputError("--vision-tower applies to --from lrs-vqa only (a LLaVA folder carries "
                         "its own tower).")
    if args.tile_size is not None and args.source != "hf-qwen2.5-vl":
        raise InputError("--tile-size applies to --from hf-qwen2.5-vl only (the other sources "
                         "have the tile size of their vision tower).")
    quiet_model_libraries()
    events = _print_progress
    if args.source == "hf-qwen2.5-vl":
        from ..modeling.convert_qwen25 import DEFAULT_TILE, convert_hf_qwen25

        path = convert_hf_qwen25(args.src, args.out_dir, rfm_layers=layers,
                                 tile_size=args.tile_size or DEFAULT_TILE, fp16=args.fp16,
                                 events=events, overwrite=args.overwrite)
    elif args.source == "hf-llava":
        from ..modeling.convert_hf import convert_hf_llava

        path = convert_hf_llava(args.src, args.out_dir, rfm_layers=layers, fp16=args.fp16,
                                events=events, overwrite=args.overwrite)
    else:
        try:
            module = importlib.import_module("rs_vqa_plugin.modeling.convert_lrs")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith("convert_lrs"):
                raise RuntimeSetupError("This build has no converter for released LRS-VQA "
                                        "checkpoints (rs_vqa_plugin/modeling/convert_lrs.py).") from exc
            raise
        extra = {"vision_tower": args.vision_tower} if args.vision_tower else {}
        path = module.convert(args.src, args.out_dir, rfm_layers=layers, fp16=args.fp16,
                              events=events, overwrite=args.overwrite, **extra)
    print(f"bundle written to {path}", file=sys.stderr)
    print(path)
    return 0


def _print_progress(event) -> None:
    import sys

    if event.get("type") == "progress":
        print(f"[{event['fraction'] * 100:3.0f}%] {event['message']}", file=sys.stderr)
