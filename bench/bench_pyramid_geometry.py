"""Benchmark: the pyramid geometry choices of METHOD §2 (levels equal in tile grid are skipped).

1. A sweep of image sizes: how often two successive levels have the same tile grid (L / 2^k within
   half a pixel of 3B, e.g. 2,017 or 16,132 px), i.e. how often skipping matters.
2. One such image answered in `dip` with the skip on and off, side by side in one run (tiny random
   bundle, tile 112, so 673 px gives two identical 3 x 3 levels): RFM passes, tiles encoded, seconds.

    python bench/bench_pyramid_geometry.py
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTION = "How many ships are in the harbour? Answer the question using a single word or phrase."


def sweep() -> dict:
    from rs_vqa_plugin.engine.pyramid import plan_pyramid

    sizes = [(w, h) for w in range(1000, 28001, 7) for h in (w, int(w * 0.75))]
    hits = [(w, h) for w, h in sizes
            if len(plan_pyramid(w, h, skip_equal_grids=False).levels) != len(plan_pyramid(w, h).levels)]
    return {"sizes": len(sizes), "with_equal_grids": len(hits), "examples": hits[:6]}


def side_by_side(repeats: int = 3) -> dict:
    from rs_vqa_plugin.engine.pipeline import AskOptions, Engine
    from rs_vqa_plugin.modeling.tiny_model import TinyModelConfig, make_tiny_bundle
    from tests.rasters import make_rgb_scene

    work = Path(tempfile.mkdtemp(prefix="rs-vqa-geometry-"))
    try:
        bundle = make_tiny_bundle(work / "tiny", TinyModelConfig())
        off = work / "tiny-noskip"
        shutil.copytree(bundle, off)
        manifest = json.loads((off / "manifest.json").read_text())
        manifest["pyramid"] = {"skip_equal_grids": False}
        (off / "manifest.json").write_text(json.dumps(manifest))
        scene = make_rgb_scene(work / "scene.tif", size=673, seed=5)
        # No tile cache: each timed run is a cold question (the warm-up would otherwise serve it).
        engines = {"skip": Engine(bundle, device="cpu", tile_cache_mb=0),
                   "no skip": Engine(off, device="cpu", tile_cache_mb=0)}
        options = AskOptions(mode="dip", max_new_tokens=1, n_max=1000)
        rows = {}
        for name, engine in engines.items():
            engine.ask(scene, QUESTION, options)          # warm-up (overviews, sessions)
        for name, engine in engines.items():
            times, trace = [], None
            for _ in range(repeats):
                start = time.perf_counter()
                trace = engine.ask(scene, QUESTION, options).trace
                times.append(time.perf_counter() - start)
            rows[name] = {"levels": trace["levels"], "tiles_encoded": trace["tiles_encoded"],
                          "rfm_tokens": trace["rfm_tokens"], "seconds": statistics.median(times)}
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    s = sweep()
    print(f"sizes swept: {s['sizes']} (1,000-28,000 px, square and 4:3); with two equal-grid "
          f"levels: {s['with_equal_grids']}, e.g. {s['examples']}")
    rows = side_by_side()
    print("\n| dip on 673 px, tile 112 | levels visited | tiles encoded | RFM tokens per pass | s / question |")
    print("|---|---|---:|---|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['levels']} | {r['tiles_encoded']} | {r['rfm_tokens']} | {r['seconds']:.3f} |")
    ratio = rows["no skip"]["seconds"] / rows["skip"]["seconds"]
    print(f"\nno skip / skip time: {ratio:.2f}x")


if __name__ == "__main__":
    main()
