"""Time and peak memory of the synthetic scene generator at 4k, 10k and 27,328 px.

Each size runs in a fresh subprocess (so peak RSS is that run's own): wall time, CPU time and the
peak resident memory of the main process and of its render workers (their sum bounds the total).
    .venv/bin/python bench/bench_synth.py [--sizes 4096 10240 27328] [--workers N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def one(size: int, seed: int, out_dir: str, workers) -> dict:
    sys.path.insert(0, str(REPO))
    from rs_vqa_plugin.benchmark.generate import make_scene

    path = Path(out_dir) / f"bench_{size}.tif"
    start, cpu = time.perf_counter(), time.process_time()
    summary = make_scene(path, seed, size, size, workers=workers)
    wall = time.perf_counter() - start
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"size": size, "seed": seed, "workers": workers, "wall_s": round(wall, 1),
            "cpu_s_main": round(me.ru_utime + me.ru_stime, 1), "cpu_s_workers": round(kids.ru_utime + kids.ru_stime, 1),
            "peak_rss_mb_main": round(me.ru_maxrss / 1024), "peak_rss_mb_worker": round(kids.ru_maxrss / 1024),
            "file_mb": round(path.stat().st_size / 1e6, 1), "objects": summary["objects"],
            "load_avg_1min": round(os.getloadavg()[0], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 10240, 27328])
    parser.add_argument("--seed", type=int, default=3005)
    parser.add_argument("--workers", type=int, default=None, help="render processes (default: generator's choice)")
    parser.add_argument("--keep", metavar="DIR", help="keep the scenes in DIR (default: a temporary folder)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.seed, args.out_dir, args.workers)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.keep or tmp
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        rows = []
        for size in args.sizes:
            cmd = [sys.executable, __file__, "--one", str(size), "--seed", str(args.seed), "--out-dir", out_dir]
            if args.workers:
                cmd += ["--workers", str(args.workers)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                print(done.stderr, file=sys.stderr)
                return done.returncode
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
            if not args.keep:
                for f in Path(out_dir).glob(f"bench_{size}*"):
                    f.unlink()
    print(f"\n{'size':>7} {'wall s':>7} {'cpu main':>8} {'cpu wrk':>8} {'RSS main MB':>11} {'RSS wrk MB':>10} {'file MB':>8}")
    for r in rows:
        print(f"{r['size']:>7} {r['wall_s']:>7} {r['cpu_s_main']:>8} {r['cpu_s_workers']:>8} "
              f"{r['peak_rss_mb_main']:>11} {r['peak_rss_mb_worker']:>10} {r['file_mb']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
