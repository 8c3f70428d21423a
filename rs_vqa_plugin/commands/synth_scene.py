"""`synth-scene`: write a synthetic georeferenced scene (tiled GeoTIFF) and its objects sidecar."""

from __future__ import annotations

import json
import sys

HELP = "generate a synthetic large scene (GeoTIFF + <scene>.objects.json) from a seed"


def add_arguments(parser):
    parser.add_argument("out", metavar="OUT.tif", help="GeoTIFF to write (the sidecar goes beside it)")
    parser.add_argument("--size", nargs="+", type=int, required=True, metavar="W [H]",
                        help="width and optional height in pixels (256..100000)")
    parser.add_argument("--seed", type=int, required=True, help="scene seed (same seed, same bytes)")
    parser.add_argument("--gsd", type=float, default=0.5, help="ground sample distance in metres (default 0.5)")
    parser.add_argument("--workers", type=int, default=None,
                        help="render processes (default: 2 for scenes over 4096^2 px, else 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run(args) -> int:
    from ..benchmark.generate import make_scene
    from ..engine.errors import InputError

    if len(args.size) > 2:
        raise InputError("--size takes one or two numbers: W [H].")
    width = args.size[0]
    height = args.size[1] if len(args.size) > 1 else width

    def events(event):
        if not args.quiet and event.get("type") == "progress":
            print(f"\r{event['message']:<40}", end="", file=sys.stderr, flush=True)

    summary = make_scene(args.out, args.seed, width, height, gsd=args.gsd, workers=args.workers, events=events)
    if not args.quiet:
        print(file=sys.stderr)
    print(json.dumps(summary))
    return 0
