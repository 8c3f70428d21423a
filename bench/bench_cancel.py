"""Benchmark: how long a cancel takes to end an ask, per stage, and whether the warm model survives.

The shipped model (models/default, CPU) loaded once in this process, as the worker holds it. A
square GeoTIFF (default 1,536 px: 24 x 24 tiles of 64 px at the finest level) and, per stage, the
ask that makes that stage long:

- read / encode: `full` (every finest tile, read and encoded 8 at a time),
- score: `prune-only` at the finest level (one RFM pass over ~9k tokens),
- generate: `full` (the LLM prefill over ~10k tokens, then greedy decoding).

Each case first runs uncancelled (the stage's own seconds, for scale), then again with a cancel
from another thread DELAY seconds after the stage's first event of the level loop arrives; the
latency is the time from cancel() to the Cancelled exception. Then a `dip` ask on the same Engine
must answer (the model stayed warm: no reload).

    python bench/bench_cancel.py [--size 1536] [--delay 0.3] [--repeats 3]
Prints a markdown table and writes bench/out/cancel.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTION = "How many ships are in the harbour?"
# (stage, mode), every mode at the finest level; the timer starts at the stage's first event
# after the thumbnail's (the level loop's), so the cancel lands inside the long part.
CASES = (("read", "full"), ("encode", "full"), ("score", "prune-only"), ("generate", "full"))


def options(mode: str, finest: int):
    from rs_vqa_plugin.engine.pipeline import AskOptions

    return AskOptions(mode=mode, level=finest, max_new_tokens=4, full_token_limit=10 ** 9)


def cancelled_ask(engine, raster, stage: str, mode: str, finest: int, delay: float) -> dict:
    from rs_vqa_plugin.engine.errors import Cancelled
    from rs_vqa_plugin.engine.progress import CancelToken

    token = CancelToken()
    fired = {}

    def fire():
        fired["at"] = time.perf_counter()
        token.cancel()

    def on_event(event):
        if (event.get("type") == "progress" and event.get("stage") == stage and "timer" not in fired
                and "thumbnail" not in str(event.get("message", ""))):
            fired["timer"] = threading.Timer(delay, fire)
            fired["timer"].start()

    t0 = time.perf_counter()
    try:
        engine.ask(raster, QUESTION, options(mode, finest), events=on_event, cancel=token)
        outcome = "answered before the cancel"
    except Cancelled:
        outcome = "cancelled"
    ended = time.perf_counter()
    if "timer" in fired:
        fired["timer"].join()
    latency = ended - fired["at"] if "at" in fired and outcome == "cancelled" else None
    return {"outcome": outcome, "latency_s": latency, "ask_s": ended - t0}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1536)
    parser.add_argument("--delay", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bundle", default=str(ROOT / "models" / "default"))
    parser.add_argument("--workdir", default=str(ROOT / "bench" / "out" / "cancel_data"))
    args = parser.parse_args(argv)

    from rs_vqa_plugin.engine.pipeline import Engine
    from rs_vqa_plugin.engine.pyramid import plan_pyramid
    from tests.rasters import make_rgb_scene

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    raster = workdir / f"scene_{args.size}.tif"
    if not raster.exists():
        make_rgb_scene(raster, size=args.size, seed=5)
    t = time.perf_counter()
    # cold questions: the tile cache is measured by bench_tile_cache.py
    engine = Engine(args.bundle, device="cpu", tile_cache_mb=0)
    load_s = time.perf_counter() - t
    m = engine.manifest
    finest = len(plan_pyramid(args.size, args.size, tile_size=m.tile_size,
                              token_grid=m.pooled_grid, **m.plan_options()).levels)
    engine.ask(str(raster), QUESTION, options("dip", finest))     # warm-up

    rows = []
    for stage, mode in CASES:
        t = time.perf_counter()
        answer = engine.ask(str(raster), QUESTION, options(mode, finest))
        trace = answer.trace
        runs = [cancelled_ask(engine, str(raster), stage, mode, finest, args.delay)
                for _ in range(args.repeats)]
        t = time.perf_counter()
        after = engine.ask(str(raster), QUESTION, options("dip", finest))
        next_s = time.perf_counter() - t
        latencies = [r["latency_s"] for r in runs if r["latency_s"] is not None]
        rows.append({"stage": stage, "mode": mode, "stage_s": trace["seconds"][stage],
                     "rfm_tokens": trace["rfm_tokens"], "llm_tokens": trace["llm_tokens"],
                     "tiles_encoded": trace["tiles_encoded"], "runs": runs,
                     "latency_max_s": max(latencies) if latencies else None,
                     "latency_median_s": sorted(latencies)[len(latencies) // 2] if latencies else None,
                     "next_ask_s": next_s, "next_ask_answered": isinstance(after.text, str)})
        print(f"{stage}: {rows[-1]['latency_max_s']}", file=sys.stderr, flush=True)

    print("| stage | ask | stage's own s | cancel latency median / max (s) | next dip ask (s) |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        what = (f"{r['mode']}, {r['rfm_tokens'][0]:,} RFM tokens" if r["rfm_tokens"]
                else f"{r['mode']}, {r['tiles_encoded']} tiles, {r['llm_tokens']:,} LLM tokens")
        lat = ("not cancelled" if r["latency_max_s"] is None else
               f"{r['latency_median_s']:.3f} / {r['latency_max_s']:.3f}")
        print(f"| {r['stage']} | {what} | {r['stage_s']:.2f} | {lat} | {r['next_ask_s']:.2f} |")
    out = ROOT / "bench" / "out" / "cancel.json"
    out.write_text(json.dumps({"size": args.size, "delay_s": args.delay, "load_s": load_s,
                               "machine": platform.platform(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
