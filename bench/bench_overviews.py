"""Benchmark: peak memory and time of building a raster's overviews, GDAL's default block cache
against the block cache the engine sets for the build (engine/overviews.OVERVIEW_BLOCK_CACHE_MB).

Each arm runs in a fresh subprocess (GDAL's cache is per process) that builds the overviews into
its own temporary cache folder (the raster is never touched) and reports its peak RSS (VmHWM),
the seconds of the build and GDAL's block cache limit during it. The arms run one after the other
on the same file, so the page cache is warm for both after the first read (a first arm is run
once untimed to warm it).

    python bench/bench_overviews.py RASTER [--arms default,capped]
    python bench/bench_overviews.py --render 27328 --seed 3005 [--keep bench/out/ovr_27k.tif]
Prints a markdown table; writes bench/out/overviews_memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ARMS = ("default", "capped")


def child(raster: str, arm: str) -> dict:
    """Build overviews of `raster` into a temporary cache; the arm picks GDAL's block cache."""
    import time

    from osgeo import gdal

    from rs_vqa_plugin.engine import overviews

    if arm == "default":   # leave GDAL's own default (5 % of RAM) in force during the build
        overviews.OVERVIEW_BLOCK_CACHE_MB = 2**20
    limits = []
    with tempfile.TemporaryDirectory(prefix="rs-vqa-ovr-bench-") as cache:
        def events(event):
            if event.get("type") == "progress" and not limits:
                limits.append(gdal.GetCacheMax() / 2**20)

        started = time.perf_counter()
        state = overviews.build_overviews(raster, cache_dir=cache, use_cache=True, events=events)
        seconds = time.perf_counter() - started
    with open("/proc/self/status") as status:
        peak = next(int(l.split()[1]) / 1024.0 for l in status if l.startswith("VmHWM:"))
    return {"arm": arm, "peak_rss_mb": round(peak, 1), "seconds": round(seconds, 2),
            "block_cache_mb_during_build": round(limits[0], 1) if limits else None,
            "gdal_default_cache_mb": round(gdal.GetCacheMax() / 2**20, 1), "factors": state.factors}


def run_arm(raster: str, arm: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", arm, raster], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raster", nargs="?", help="raster to build overviews for (never modified)")
    parser.add_argument("--render", type=int, default=0, help="render a synthetic scene of this size")
    parser.add_argument("--seed", type=int, default=3005)
    parser.add_argument("--keep", default=None, help="where the rendered scene goes (kept)")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.raster, args.child)))
        return 0
    raster = args.raster
    if args.render:
        raster = args.keep or str(ROOT / "bench" / "out" / f"ovr_bench_{args.render}.tif")
        Path(raster).parent.mkdir(parents=True, exist_ok=True)
        if not Path(raster).is_file():
            subprocess.run([sys.executable, "-m", "rs_vqa_plugin", "synth-scene", raster, "--size",
                            str(args.render), "--seed", str(args.seed), "--quiet"], check=True, cwd=ROOT)
    if not raster:
        parser.error("give a RASTER or --render SIZE")
    arms = [a for a in args.arms.split(",") if a]
    run_arm(raster, arms[0])      # warm the page cache: the timed arms then read from memory alike
    rows = [run_arm(raster, arm) for arm in arms]
    from osgeo import gdal

    ds = gdal.Open(raster)
    size = f"{ds.RasterXSize} x {ds.RasterYSize}"
    ds = None
    print(f"overviews of {raster} ({size} px), factors {rows[0]['factors']}\n")
    print("| arm | GDAL block cache during the build | peak RSS | seconds |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['arm']} | {r['block_cache_mb_during_build']} MB | {r['peak_rss_mb']:.0f} MB "
              f"| {r['seconds']:.1f} |")
    out = ROOT / "bench" / "out" / "overviews_memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"raster": raster, "size": size, "arms": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
