"""`ask IMAGE "QUESTION"`: one question about one raster; progress on stderr, the answer on stdout."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "answer a question about a raster, looking coarse to fine (progress on stderr, answer on stdout)"

from ..engine.cost import MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="raster file (GeoTIFF, COG, VRT, ...)")
    parser.add_argument("question", help="the question, in quotes")
    parser.add_argument("--model", help="model bundle folder (default: models/default)")
    parser.add_argument("--mode", choices=MODES, default="dip",
                        help="dip (coarse-to-fine, default), prune-only, grid, thumbnail or full")
    parser.add_argument("--level", type=int, default=1, help="the fixed level of grid / prune-only (1)")
    parser.add_argument("--alpha", type=float, default=None, help="keep ratio (default: the bundle's)")
    parser.add_argument("--n-max", type=int, default=None, help="tile cap (default: the bundle's)")
    parser.add_argument("--selection", default=None,
                        help="how dip zooms: paper (Algorithm 1), focus[:tile_budget=32,"
                             "max_jump=2,min_tokens=4] or mass[:mass_share=0.6,tile_budget=12,"
                             "max_jump=2] (default: the bundle's)")
    parser.add_argument("--scope", default=None,
                        help="xmin,ymin,xmax,ymax or polygon WKT, in the raster's CRS")
    parser.add_argument("--bands", default=None, help="bands shown as R,G,B (e.g. 3,2,1) or one band")
    parser.add_argument("--history", default=None,
                        help="JSON file of earlier turns: [[question, answer], ...]")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--full-token-limit", type=int, default=30000,
                        help="mode full refuses images above this many image tokens")
    parser.add_argument("--memory-limit-mb", type=float, default=None,
                        help="refuse, before reading, an RFM pass or LLM prefill estimated above "
                             "this (default: 80%% of the memory available)")
    add_device_arguments(parser)
    add_tile_cache_argument(parser)
    parser.add_argument("--cache-dir", default=None, help="folder for overviews of read-only rasters")
    parser.add_argument("--heatmap", default=None,
                        help="write the heat cells to OUT.gpkg or OUT.geojson; an existing GeoPackage "
                             "gets a new layer (heatmap, heatmap_2, ...), its other layers are kept")
    parser.add_argument("--heatmap-layer", default=None,
                        help="name of the heatmap layer in the GeoPackage (default: the first free "
                             "of heatmap, heatmap_2, ...)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing heatmap file (GeoJSON) or layer (GeoPackage); the "
                             "input raster and --history are never replaced")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (answer, mode, trace) instead of streaming")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                        help="the LLM's dtype (auto: the bundle's where the device runs it well, "
                             "float32 on CPUs without native bfloat16)")


def add_run_arguments(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    """The engine options `eval` and `batch` share: model, mode and its knobs, device, caches."""
    parser.add_argument("--model", help="model bundle folder (default: models/default)")
    parser.add_argument("--mode", choices=MODES, default="dip")
    parser.add_argument("--level", type=int, default=1, help="the fixed level of grid / prune-only")
    parser.add_argument("--alpha", type=float, default=None)
    parser.add_argument("--n-max", type=int, default=None)
    parser.add_argument("--selection", default=None,
                        help="how dip zooms: paper or mass[:key=value,...] (default: the bundle's)")
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    add_device_arguments(parser)
    parser.add_argument("--cache-dir", default=None, help="folder for overviews of read-only rasters")
    add_tile_cache_argument(parser)


def add_tile_cache_argument(parser: argparse.ArgumentParser) -> None:
    from ..engine.tile_cache import DEFAULT_MB

    parser.add_argument("--tile-cache-mb", type=float, default=DEFAULT_MB,
                        help="MB of tile encodings kept for the next question about the same "
                             f"raster in this process (default {DEFAULT_MB:g}, 0: off)")


def parse_scope(text):
    """'xmin,ymin,xmax,ymax' -> tuple of floats; anything else is taken as polygon WKT."""
    from ..engine.errors import InputError

    if text is None or not text.strip():
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 4:
        try:
            return tuple(float(p) for p in parts)
        except ValueError:
            pass
    if text.lstrip().upper().startswith(("POLYGON", "MULTIPOLYGON")):
        return text.strip()
    raise InputError(f"--scope '{text}' is neither xmin,ymin,xmax,ymax nor polygon WKT.")


def parse_bands(text):
    from ..engine.errors import InputError

    if not text:
        return None
    try:
        return [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise InputError(f"--bands '{text}' must be band numbers like 3,2,1.") from None


def read_history(path):
    from ..engine.errors import InputError

    if not path:
        return ()
    try:
        turns = json.loads(Path(path).read_text(encoding="utf-8"))
        return tuple((str(q), str(a)) for q, a in turns)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"--history {path}: expected a JSON list of [question, answer] pairs "
                         f"({exc}).") from None


def resolve_model(model):
    """The bundle folder to use, with an actionable error when the default one is absent."""
    from ..engine.errors import BundleError
    from ..paths import default_model_dir

    folder = Path(model) if model else default_model_dir()
    if not folder.is_dir():
        if model:
            raise BundleError(f"Model folder {folder} does not exist: check --model.")
        raise BundleError(f"No default model at {folder}: pass --model DIR, or create one "
                          f"(`python -m rs_vqa_plugin tiny-model {folder}` for a random test model, "
                          "`python -m rs_vqa_plugin convert ...` for a real one).")
    return folder


def check_heatmap_path(args):
    """Fail before any model work when the heatmap cannot be written where asked: a HeatmapTarget."""
    from ..engine.heatmap import heatmap_target
    from ..engine.output_paths import raster_files, refuse_inputs

    if not args.heatmap:
        return None
    out = Path(args.heatmap)
    inputs = [("the input raster", f) for f in raster_files(args.image)]
    inputs.append(("the --history file", args.history))
    refuse_inputs(out, inputs, "--heatmap")
    return heatmap_target(out, args.heatmap_layer, args.overwrite)


def progress_printer():
    def on_event(event) -> None:
        if event.get("type") == "progress":
            # sys.stderr looked up per event: it may be redirected after start-up.
            sys.stderr.write(f"[{event['stage']:>9} {100 * event['fraction']:3.0f}%] {event['message']}\n")
            sys.stderr.flush()
    return on_event


def summary_dict(answer) -> dict:
    """What --json prints: the answer, its mode and the full trace."""
    return {"answer": answer.text, "question": answer.question, "mode": answer.mode,
            "raster": answer.raster, "trace": answer.trace, "heat_cells": len(answer.heat_cells)}


def run(args) -> int:
    from ..engine.pipeline import AskOptions, Engine

    from ..engine.tile_cache import check_megabytes

    heatmap = check_heatmap_path(args)
    check_megabytes(args.tile_cache_mb, "--tile-cache-mb")
    options = AskOptions(mode=args.mode, alpha=args.alpha, n_max=args.n_max, level=args.level,
                         scope=parse_scope(args.scope), history=read_history(args.history),
                         bands=parse_bands(args.bands), max_new_tokens=args.max_new_tokens,
                         full_token_limit=args.full_token_limit, overview_cache_dir=args.cache_dir,
                         memory_limit_mb=args.memory_limit_mb,
                         selection=args.selection)
    if not str(args.question).strip():
        from ..engine.errors import InputError
        raise InputError("The question is empty: type a question about the image.")
    # Cheap checks of the raster and the scope before the (slow) model load.
    from ..engine.raster import open_dataset
    from ..engine.scope import scope_window

    open_dataset(args.image)
    scope_window(args.image, options.scope)
    model = resolve_model(args.model)
    # Before the model loads, and before anything tokenises it: text, and not far too long.
    from ..engine.bundle import LLM_DIR, context_tokens, read_llm_config, read_manifest
    from ..engine.question_text import check_question_text

    limit = context_tokens(read_manifest(model), read_llm_config(Path(model) / LLM_DIR))
    check_question_text(args.question, options.history, limit)
    progress = None if args.quiet else progress_printer()
    if progress:
        progress({"type": "progress", "stage": "load", "fraction": 0.0,
                  "message": f"loading the model from {model}"})
    engine = Engine(model, device=args.device, tile_cache_mb=args.tile_cache_mb, dtype=args.dtype)
    streamed = []

    def on_event(event) -> None:
        if event.get("type") == "token" and not args.json:
            streamed.append(event["text"])
            sys.stdout.write(event["text"])
            sys.stdout.flush()
        elif progress:
            progress(event)

    answer = engine.ask(args.image, args.question, options, events=on_event)
    if heatmap is not None:
        from ..engine.heatmap import write_heatmap
        write_heatmap([answer], heatmap.path, heatmap.layer, args.overwrite)
    if args.json:
        print(json.dumps(summary_dict(answer)))
    else:
        # The streamed pieces may miss trailing text held back for clean decoding; finish the line.
        shown = "".join(streamed)
        rest = answer.text[len(shown.strip()):] if answer.text.startswith(shown.strip()) else ""
        sys.stdout.write(rest + "\n")
        sys.stdout.flush()
        if not args.quiet:
            t = answer.trace
            cached = f" ({t['tiles_from_cache']} more from the cache)" if t["tiles_from_cache"] else ""
            print(f"mode {answer.mode}: levels {t['levels']}, {t['tiles_encoded']} tiles encoded{cached}, "
                  f"{t['llm_vision_tokens']} image tokens to the LLM, "
                  f"{t['flops']['total']:.3g} FLOPs, {t['seconds']['total']:.1f} s"
                  + (f"; heatmap {heatmap.path} (layer {heatmap.layer})" if heatmap else ""),
                  file=sys.stderr)
    return 0
