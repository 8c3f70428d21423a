"""Benchmark: cost of answering per mode (dip, prune-only, grid, thumbnail, full) as the image grows.

Square 3-band GeoTIFFs of 2k, 4k, 10k and 27k px (generated block by block with the pyramid
benchmark's generator; overviews built once, before timing), a fixed question set, and a tiny
random bundle with the paper's token geometry (336 px tiles, patch 14: 576 thumbnail tokens and
144 tokens per pyramid tile). Each (size, mode) runs in a fresh subprocess, so peak RSS (VmHWM) is
that mode's own. Reported per mode: seconds per question, peak RSS, tiles encoded, LLM vision
tokens and FLOPs (tiny model, and the same token counts priced with Qwen2-7B dimensions), and the
ratios of dip to grid and to full. `full` is refused above its 30,000-token limit (from 10k px on);
its tokens and FLOPs are then computed from the plan and marked as estimates.

    python bench/bench_engine.py [--sizes 2000 4000 10000 27328] [--tile-size 336] [--keep]
Prints a markdown table and writes bench/out/engine.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MODES = ("dip", "prune-only", "grid", "thumbnail", "full")
QUESTIONS = (
    "How many ships are in the harbour? Answer the question using a single word or phrase.",
    "What is the color of the largest building? Answer the question using a single word or phrase.",
    "Is this area rural or urban? Answer the question using a single word or phrase.",
)
# One new token: a random model's answer length (it may stop at once or run to the cap) must not
# tilt the comparison of modes; seconds per question are the trace's `seconds.total`.
MAX_NEW_TOKENS = 1
QWEN2_7B = {"hidden": 3584, "ffn": 18944, "layers": 28, "rfm_layers": 4}


def peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def current_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# -- child: one mode on one raster ---------------------------------------------------------------

def child(mode: str, raster: str, bundle: str) -> dict:
    from rs_vqa_plugin.engine.cost import ModelDims, run_flops
    from rs_vqa_plugin.engine.errors import InputError
    from rs_vqa_plugin.engine.pipeline import AskOptions, Engine

    t0 = time.perf_counter()
    # cold questions: the tile cache is measured by bench_tile_cache.py
    engine = Engine(bundle, device="cpu", tile_cache_mb=0)
    load_s = time.perf_counter() - t0
    rss_loaded = current_rss_mb()
    qwen = ModelDims(**QWEN2_7B)
    # One untimed warm-up ask (every mode alike): ONNX Runtime's first run at a new shape and the
    # first reads of the raster cost 0.1-0.2 s once, which a warm worker never pays again.
    try:
        engine.ask(raster, "What is here?", AskOptions(mode=mode, max_new_tokens=MAX_NEW_TOKENS))
    except InputError:
        pass
    runs = []
    for question in QUESTIONS:
        t = time.perf_counter()
        try:
            answer = engine.ask(raster, question, AskOptions(mode=mode, max_new_tokens=MAX_NEW_TOKENS))
        except InputError as exc:
            return {"mode": mode, "refused": str(exc), "load_s": load_s,
                    "rss_after_load_mb": rss_loaded, "peak_rss_mb": peak_rss_mb()}
        tr = answer.trace
        runs.append({"seconds": tr["seconds"]["total"], "wall_seconds": time.perf_counter() - t,
                     "stage_seconds": tr["seconds"],
                     "levels": tr["levels"], "tiles_encoded": tr["tiles_encoded"],
                     "tiles_per_level": tr["tiles_per_level"], "rfm_tokens": tr["rfm_tokens"],
                     "llm_vision_tokens": tr["llm_vision_tokens"], "llm_tokens": tr["llm_tokens"],
                     "pixels_read": tr["pixels_read"], "flops": tr["flops"]["total"],
                     "flops_qwen2_7b": run_flops(qwen, tr["llm_tokens"], tr["rfm_tokens"])["total"],
                     "stop_reason": tr["stop_reason"]})
    n = len(runs)
    mean = lambda key: sum(r[key] for r in runs) / n  # noqa: E731
    return {"mode": mode, "load_s": load_s, "rss_after_load_mb": rss_loaded,
            "peak_rss_mb": peak_rss_mb(), "seconds_per_question": mean("seconds"),
            "tiles_encoded": mean("tiles_encoded"), "llm_vision_tokens": mean("llm_vision_tokens"),
            "pixels_read": mean("pixels_read"), "flops": mean("flops"),
            "flops_qwen2_7b": mean("flops_qwen2_7b"), "runs": runs}


def run_child(mode: str, raster: Path, bundle: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(raster), str(bundle)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"mode": mode, "failed": (out.stderr or out.stdout).strip().splitlines()[-3:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- estimates for a refused `full` --------------------------------------------------------------

def full_estimate(size: int, tile_size: int, patch_grid: int, pooled_grid: int, text_tokens: int,
                  tiny_dims: dict) -> dict:
    from rs_vqa_plugin.engine.cost import ModelDims, run_flops
    from rs_vqa_plugin.engine.pyramid import level_valid_token_shape, plan_pyramid

    plan = plan_pyramid(size, size, tile_size=tile_size, token_grid=pooled_grid)
    rows, cols = level_valid_token_shape(plan, len(plan.levels))
    vision = patch_grid ** 2 + rows * cols + rows
    llm_tokens = text_tokens + 1 + vision
    return {"mode": "full", "estimated": True, "tiles_encoded": plan.finest.tile_count(),
            "llm_vision_tokens": vision,
            "flops": run_flops(ModelDims(**tiny_dims), llm_tokens, [])["total"],
            "flops_qwen2_7b": run_flops(ModelDims(**QWEN2_7B), llm_tokens, [])["total"]}


# -- parent --------------------------------------------------------------------------------------

def build_bundle(path: Path, tile_size: int) -> float:
    if (path / "manifest.json").is_file():
        return 0.0
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rs_vqa_plugin", "tiny-model", str(path), "--tile-size",
                    str(tile_size), "--patch-size", "14", "--overwrite"], check=True, cwd=ROOT,
                   env=dict(os.environ, HF_HUB_OFFLINE="1"), stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def prepare_raster(workdir: Path, size: int) -> dict:
    from bench_pyramid import generate_scene   # the pyramid benchmark's block-wise generator

    from rs_vqa_plugin.engine.overviews import build_overviews

    path = workdir / f"scene_{size}.tif"
    info = {"size": size, "path": str(path), "generate_s": 0.0, "overviews_s": 0.0}
    if not path.exists():
        info["generate_s"] = round(generate_scene(path, size), 2)
    t0 = time.perf_counter()
    state = build_overviews(path)
    info["overviews_s"] = round(time.perf_counter() - t0, 2)
    info["overviews"] = state.location
    return info


def ratio(a, b):
    return round(a / b, 4) if a is not None and b else None


def markdown(rows) -> str:
    lines = ["| size px | mode | s/question | peak RSS MB | tiles encoded | LLM vision tokens | "
             "FLOPs (tiny) | TFLOPs (Qwen2-7B dims) | tokens vs grid | tokens vs full | "
             "TFLOPs vs full | s vs grid |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for mode in [m for m in MODES if m in row["modes"]]:
            r = row["modes"][mode]
            est = " (est.)" if r.get("estimated") else ""
            sec = f"{r['seconds_per_question']:.2f}" if "seconds_per_question" in r else "refused"
            rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r and not r.get("estimated") else "-"
            q = r.get("ratios", {})
            lines.append(
                f"| {row['size']} | {mode} | {sec} | {rss} | {r.get('tiles_encoded', 0):.0f}{est} | "
                f"{r.get('llm_vision_tokens', 0):.0f}{est} | {r.get('flops', 0):.3g} | "
                f"{r.get('flops_qwen2_7b', 0) / 1e12:.2f} | {q.get('tokens_vs_grid')} | "
                f"{q.get('tokens_vs_full')} | {q.get('flops_qwen2_7b_vs_full')} | "
                f"{q.get('seconds_vs_grid')} |")
    return "\n".join(lines)


def growth(rows) -> str:
    """Each mode's value at each size relative to the smallest size, beside the area growth."""
    base = rows[0]
    lines = ["| size px | area x | " + " | ".join(f"{m} s x" for m in MODES) + " | "
             + " | ".join(f"{m} tokens x" for m in MODES) + " |",
             "|---|---|" + "---|" * (2 * len(MODES))]
    for row in rows:
        cells = [str(row["size"]), f"{(row['size'] / base['size']) ** 2:.1f}"]
        for key in ("seconds_per_question", "llm_vision_tokens"):
            for mode in MODES:
                a = row["modes"].get(mode, {}).get(key)
                b = base["modes"].get(mode, {}).get(key)
                cells.append(f"{a / b:.2f}" if a and b else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[2000, 4000, 10000, 27328])
    parser.add_argument("--tile-size", type=int, default=336)
    parser.add_argument("--workdir", default=str(ROOT / "bench" / "out" / "engine_data"))
    parser.add_argument("--keep", action="store_true", help="keep the generated rasters")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma-separated subset of the modes (grid and full are always run)")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "RASTER", "BUNDLE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    bundle = workdir / f"tiny{args.tile_size}"
    bundle_s = build_bundle(bundle, args.tile_size)
    manifest = json.loads((bundle / "manifest.json").read_text())
    llm_config = json.loads((bundle / "llm" / "config.json").read_text())
    tiny_dims = {"hidden": manifest["hidden_size"], "ffn": llm_config["intermediate_size"],
                 "layers": llm_config["num_hidden_layers"], "rfm_layers": len(manifest["rfm"]["layers"])}
    rows = []
    for size in sorted(args.sizes):
        info = prepare_raster(workdir, size)
        print(f"{size} px: generated in {info['generate_s']} s, overviews {info['overviews_s']} s",
              file=sys.stderr)
        modes = {}
        wanted = {m for m in args.modes.split(",") if m} | {"grid", "full"}
        for mode in [m for m in MODES if m in wanted]:
            result = run_child(mode, Path(info["path"]), bundle)
            if mode == "full" and "refused" in result:
                text_tokens = (modes["grid"]["runs"][0]["llm_tokens"]
                               - modes["grid"]["runs"][0]["llm_vision_tokens"] - 1)
                result.update(full_estimate(size, manifest["tile_size"], manifest["patch_grid"],
                                            manifest["pooled_grid"], text_tokens, tiny_dims))
            modes[mode] = result
            print(f"  {mode}: {json.dumps({k: v for k, v in result.items() if k != 'runs'})[:300]}",
                  file=sys.stderr)
        grid, full = modes["grid"], modes["full"]
        for r in modes.values():
            r["ratios"] = {
                "tokens_vs_grid": ratio(r.get("llm_vision_tokens"), grid.get("llm_vision_tokens")),
                "tokens_vs_full": ratio(r.get("llm_vision_tokens"), full.get("llm_vision_tokens")),
                "tiles_vs_full": ratio(r.get("tiles_encoded"), full.get("tiles_encoded")),
                "flops_vs_full": ratio(r.get("flops"), full.get("flops")),
                "flops_qwen2_7b_vs_full": ratio(r.get("flops_qwen2_7b"), full.get("flops_qwen2_7b")),
                "seconds_vs_grid": ratio(r.get("seconds_per_question"), grid.get("seconds_per_question")),
                "seconds_vs_full": ratio(r.get("seconds_per_question"), full.get("seconds_per_question")),
                "rss_vs_grid": ratio(r.get("peak_rss_mb"), grid.get("peak_rss_mb")),
            }
        rows.append({**info, "modes": modes})
        if not args.keep:
            for p in workdir.glob(f"scene_{size}.tif*"):
                p.unlink()

    import numpy
    import onnxruntime
    import torch

    report = {"benchmark": "engine", "questions": list(QUESTIONS), "max_new_tokens": MAX_NEW_TOKENS,
              "bundle": {"tile_size": manifest["tile_size"], "patch_grid": manifest["patch_grid"],
                         "pooled_grid": manifest["pooled_grid"], "tiny_dims": tiny_dims,
                         "alpha": manifest["alpha"], "n_max": manifest["n_max"], "build_s": round(bundle_s, 1)},
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                          "numpy": numpy.__version__},
              "rows": rows}
    out = ROOT / "bench" / "out" / "engine.json"
    out.write_text(json.dumps(report, indent=2))
    print(markdown(rows))
    print()
    print(growth(rows))
    print(f"\nwritten {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
