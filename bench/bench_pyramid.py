"""Benchmark: the pyramid read through GDAL overviews vs the naive whole-image read (issue 3).

For square 3-band tiled GeoTIFFs (generated block by block): time to build overviews, then time and
peak RSS to read the thumbnail + all level-1 tiles + 80 random finest-level tiles, each measured in a
fresh subprocess (VmHWM), the pyramid way and the naive way (whole image in memory, then resize).

    python bench/bench_pyramid.py [--sizes 4000 10000 27328] [--keep] [--workdir DIR]
Writes a markdown table to stdout and bench/out/pyramid.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RANDOM_TILES = 80
STRIP = 512


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- scene generation ----------------------------------------------------------------------------

def _strip_pixels(width: int, y0: int, rows: int, noise: np.ndarray, rng) -> np.ndarray:
    """(3, rows, width) uint8: separable waves (cheap at 27k px) plus a rolled noise tile."""
    x = np.arange(width, dtype=np.float32)
    y = np.arange(y0, y0 + rows, dtype=np.float32)[:, None]
    out = np.empty((3, rows, width), np.uint8)
    for b, (fx, fy) in enumerate(((0.011, 0.017), (0.023, 0.007), (0.005, 0.029))):
        wave = 90 + 45 * np.sin(x * fx + b) + 45 * np.cos(y * fy - b) + 20 * np.sin(x * fx * 7.3) * np.cos(y * fy * 5.1)
        n = np.roll(noise, int(rng.integers(0, noise.shape[1])), axis=1)
        reps = (rows + n.shape[0] - 1) // n.shape[0], (width + n.shape[1] - 1) // n.shape[1]
        out[b] = np.clip(wave + np.tile(n, reps)[:rows, :width], 0, 255)
    return out


def generate_scene(path: Path, size: int, seed: int = 0) -> float:
    from osgeo import gdal, osr

    gdal.UseExceptions()
    t0 = time.perf_counter()
    ds = gdal.GetDriverByName("GTiff").Create(
        str(path), size, size, 3, gdal.GDT_Byte,
        ["TILED=YES", "BLOCKXSIZE=512", "BLOCKYSIZE=512", "COMPRESS=DEFLATE", "ZLEVEL=1",
         "PREDICTOR=2", "BIGTIFF=IF_SAFER", "NUM_THREADS=2"])
    ds.SetGeoTransform((400000.0, 0.3, 0.0, 3300000.0, 0.0, -0.3))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32617)
    ds.SetProjection(srs.ExportToWkt())
    for b, interp in enumerate((gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand), start=1):
        ds.GetRasterBand(b).SetColorInterpretation(interp)
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 12, size=(256, 256)).astype(np.float32)
    for y0 in range(0, size, STRIP):
        rows = min(STRIP, size - y0)
        ds.WriteArray(_strip_pixels(size, y0, rows, noise, rng), 0, y0)
    ds.FlushCache()
    ds = None
    return time.perf_counter() - t0


# -- the two measured paths (run in a fresh child process each) ----------------------------------

def random_finest_tiles(plan, count: int, seed: int):
    lv = plan.finest
    rng = np.random.default_rng(seed)
    picks = rng.choice(lv.tile_count(), size=min(count, lv.tile_count()), replace=False)
    return [(int(i) // lv.cols, int(i) % lv.cols) for i in picks]


def measure_pyramid(path: str) -> dict:
    from rs_vqa_plugin.engine.pyramid import plan_pyramid
    from rs_vqa_plugin.engine.raster import RasterSource
    from rs_vqa_plugin.engine.reader import PyramidReader

    t0 = time.perf_counter()
    with RasterSource(path, build_overviews=False) as src:
        plan = plan_pyramid(src.width, src.height)
        reader = PyramidReader(src, plan)
        thumb, _ = reader.read_thumbnail()
        level1, _ = reader.read_level(1)
        tiles, _ = reader.read_tiles(len(plan.levels), random_finest_tiles(plan, RANDOM_TILES, 0))
        pixels_read = src.pixels_read
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "pixels_read": pixels_read,
            "tiles": 1 + len(level1) + len(tiles), "checksum": int(thumb.sum() + level1.sum() + tiles.sum())}


def _nearest_resize_window(full: np.ndarray, scale: float, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """Pixels [y0:y0+h, x0:x0+w] of the image resized by `scale`, nearest (from the in-memory image)."""
    H, W = full.shape[:2]
    ys = np.minimum(((np.arange(y0, y0 + h) + 0.5) / scale).astype(np.int64), H - 1)
    xs = np.minimum(((np.arange(x0, x0 + w) + 0.5) / scale).astype(np.int64), W - 1)
    return full[ys][:, xs]


def measure_naive(path: str) -> dict:
    """Like the reference: load the whole image, then cut every view from memory."""
    from osgeo import gdal

    from rs_vqa_plugin.engine.pyramid import plan_pyramid, tile_content_rect

    from rs_vqa_plugin.engine.raster import cap_gdal_block_cache

    gdal.UseExceptions()
    cap_gdal_block_cache()  # same GDAL cache as the pyramid path: the difference is the algorithm
    t0 = time.perf_counter()
    ds = gdal.Open(path)
    full = ds.ReadAsArray(interleave="pixel")            # (H, W, 3) uint8: the whole image
    plan = plan_pyramid(ds.RasterXSize, ds.RasterYSize)
    t = plan.thumbnail
    thumb = _nearest_resize_window(full, t.scale, 0, 0, t.content_width, t.content_height)
    total = int(thumb.sum())
    n = 1
    for level_index, tiles in ((1, plan.level(1).tiles()),
                               (len(plan.levels), random_finest_tiles(plan, RANDOM_TILES, 0))):
        scale = plan.level(level_index).scale
        for row, col in tiles:
            x0, y0, x1, y1 = tile_content_rect(plan, level_index, row, col)
            total += int(_nearest_resize_window(full, scale, x0, y0, x1 - x0, y1 - y0).sum())
            n += 1
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "pixels_read": int(full.shape[0] * full.shape[1]),
            "tiles": n, "checksum": total}


def measure_baseline(_path: str) -> dict:
    """Interpreter + numpy + GDAL + engine imports only: the floor under both paths."""
    from osgeo import gdal  # noqa: F401

    from rs_vqa_plugin.engine import raster, reader  # noqa: F401
    return {"seconds": 0.0, "peak_rss_mb": peak_rss_mb()}


MEASURES = {"pyramid": measure_pyramid, "naive": measure_naive, "baseline": measure_baseline}


def run_child(kind: str, path: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--measure", kind, str(path)],
                            capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} measurement failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- driver ----------------------------------------------------------------------------------------

def bench_size(size: int, workdir: Path) -> dict:
    from rs_vqa_plugin.engine.overviews import build_overviews

    path = workdir / f"scene_{size}.tif"
    for stale in (path, Path(str(path) + ".ovr")):
        stale.unlink(missing_ok=True)
    print(f"[bench_pyramid] {size} px: generating", file=sys.stderr, flush=True)
    gen_s = generate_scene(path, size)
    file_mb = path.stat().st_size / 1e6
    print(f"[bench_pyramid] {size} px: building overviews", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    state = build_overviews(path)
    ovr_s = time.perf_counter() - t0
    load = round(os.getloadavg()[0], 2)
    row = {"size": size, "load_avg_1min": load, "file_mb": round(file_mb, 1), "generate_s": round(gen_s, 2),
           "overviews_s": round(ovr_s, 2), "overview_factors": state.factors,
           "ovr_mb": round(state.ovr_path.stat().st_size / 1e6, 1)}
    for kind in ("pyramid", "naive"):
        print(f"[bench_pyramid] {size} px: {kind} read", file=sys.stderr, flush=True)
        m = run_child(kind, path)
        row[kind] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in m.items()}
    row["rss_ratio_naive_over_pyramid"] = round(row["naive"]["peak_rss_mb"] / row["pyramid"]["peak_rss_mb"], 2)
    row["time_ratio_naive_over_pyramid"] = round(row["naive"]["seconds"] / max(row["pyramid"]["seconds"], 1e-9), 1)
    return row


def markdown(rows, baseline) -> str:
    lines = [f"Peak RSS includes the interpreter, numpy and GDAL (baseline {baseline:.0f} MB). "
             f"Reads: thumbnail + all level-1 tiles + {RANDOM_TILES} random finest-level tiles. "
             "Naive: the whole image read into memory (uint8), every view cut from it.", "",
             "| image (px) | file MB | build overviews s | pyramid read s | pyramid peak RSS MB "
             "| naive read s | naive peak RSS MB | naive/pyramid RSS |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        p, n = r["pyramid"], r["naive"]
        lines.append(f"| {r['size']:,} | {r['file_mb']:.0f} | {r['overviews_s']:.1f} | {p['seconds']:.2f} | "
                     f"{p['peak_rss_mb']:.0f} | {n['seconds']:.1f} | {n['peak_rss_mb']:.0f} | "
                     f"{r['rss_ratio_naive_over_pyramid']:.1f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000, 10000, 27328])
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "pyramid_data")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "pyramid.json")
    parser.add_argument("--keep", action="store_true", help="keep the generated GeoTIFFs")
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        kind, path = args.measure
        print(json.dumps(MEASURES[kind](path)))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for size in args.sizes:
            rows.append(bench_size(size, args.workdir))
            if not args.keep:
                for f in args.workdir.glob(f"scene_{size}.tif*"):
                    f.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    from osgeo import gdal

    from rs_vqa_plugin.engine.raster import BLOCK_CACHE_MB
    baseline = run_child("baseline", Path("-"))["peak_rss_mb"]
    report = {"benchmark": "pyramid", "random_finest_tiles": RANDOM_TILES, "baseline_rss_mb": round(baseline, 1),
              "gdal": gdal.__version__, "gdal_block_cache_mb": BLOCK_CACHE_MB,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          # shared machines: timings mean little without the load they ran under
                          "load_avg_1min_at_end": round(os.getloadavg()[0], 2)},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(markdown(rows, baseline))
    print(f"\nwritten {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
