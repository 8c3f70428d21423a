"""`overviews IMAGE`: build missing overviews (average) beside the raster or in the cache folder."""

from __future__ import annotations

import json
import signal
import sys
import threading

HELP = "build missing overviews (average) beside a raster, or in a cache folder; never rewrites it"


def add_arguments(parser):
    parser.add_argument("image", help="raster file GDAL can open")
    parser.add_argument("--cache-dir", default=None,
                        help="build into this folder instead of beside the raster")
    parser.add_argument("--cache", action="store_true",
                        help="build into the default cache (~/.cache/rs-vqa/overviews or $RS_VQA_CACHE)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _stderr_progress(event):
    if event.get("type") == "progress":
        end = "\n" if event["fraction"] >= 1.0 else ""
        sys.stderr.write(f"\r{event['message']}: {event['fraction'] * 100:5.1f}%{end}")
        sys.stderr.flush()


def run(args) -> int:
    from ..engine.overviews import build_overviews
    from ..engine.progress import CancelToken
    from ..engine.raster import open_dataset

    open_dataset(args.image)  # bad input fails here with a clear message, before anything is written
    cancel = CancelToken()
    outcome = {}

    def work():
        try:
            outcome["state"] = build_overviews(args.image, cache_dir=args.cache_dir,
                                               use_cache=bool(args.cache_dir or args.cache),
                                               events=_stderr_progress, cancel=cancel)
        except BaseException as exc:  # handed to the main thread below
            outcome["error"] = exc

    # GDAL runs with the main thread blocked in C, where Python signal handlers never run; so the
    # build runs in a thread and the main thread stays free to turn Ctrl-C into a cancel request,
    # which the progress callback sees and GDAL stops cleanly.
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.cancel())
    try:
        worker = threading.Thread(target=work, name="rs-vqa-overviews", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
    finally:
        signal.signal(signal.SIGINT, previous)
    if "error" in outcome:
        raise outcome["error"]
    state = outcome["state"]
    if args.json:
        print(json.dumps(state.to_dict(), indent=2))
    else:
        verb = "built" if state.built else "already present"
        where = {"internal": "inside the file", "external": f"in {state.ovr_path}",
                 "cache": f"in {state.ovr_path}"}.get(state.location, "")
        if state.location == "none":
            print(f"{args.image}: no overviews needed (small image: reads are cheap without them)")
        else:
            print(f"{args.image}: overviews {verb} {where} (factors {state.factors})")
        if state.note and (state.location != "none" or state.ignored):
            print(f"  note: {state.note}")
    return 0
