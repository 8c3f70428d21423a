"""Benchmark: the RFM graph's peak memory and time against the sequence length, old graph vs new.

A tiny-width RFM (hidden 128, 4 heads of 32 with 2 KV heads, FFN 384, random weights) with the
paper's layer list [1, 5, 11, 14] -- four full layers and the scoring layer -- exported twice by
the project's own exporter: `eager`, the former graph (per-head L x L attention), and `gqa`, one
com.microsoft GroupQueryAttention node per full layer. Each (graph, length) point runs in a fresh
subprocess on the CPU provider: peak RSS (VmHWM), RSS once the session is loaded, seconds of one
scoring pass (after a 64-token warm-up pass), and the scores, compared between the two graphs.
An eager point whose extrapolated peak would not fit in the free memory is skipped, and said so.

    python bench/bench_rfm_memory.py [--lengths 2000 4000 8000 12000 16000 20000] [--threads 2]
Prints a markdown table and whether each graph's memory grows linearly; writes
bench/out/rfm_memory.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GRAPHS = ("eager", "gqa")
HIDDEN = 128
TEXT_BEFORE, TEXT_AFTER = 20, 30          # prompt tokens around the HR span (not scored)


def vm_mb(key: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def available_mb() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def sequence(length: int, hidden: int):
    import numpy as np

    rng = np.random.default_rng(length)
    embeds = rng.normal(scale=0.5, size=(1, length, hidden)).astype(np.float32)
    hr = np.zeros(length, dtype=bool)
    hr[TEXT_BEFORE:length - TEXT_AFTER] = True
    return {"inputs_embeds": embeds, "hr_mask": hr,
            "query_index": np.asarray(length - 1, dtype=np.int64)}


# -- child: one graph at one length --------------------------------------------------------------

def child(graph: str, length: int, threads: int, scores_out: str) -> dict:
    import numpy as np

    from rs_vqa_plugin.engine.onnx_session import make_session

    t0, c0 = time.perf_counter(), time.process_time()
    session, provider = make_session(graph, device="cpu", threads=threads)
    load_s, load_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    hidden = session.get_inputs()[0].shape[2]
    session.run(["scores"], sequence(64, hidden))
    rss_loaded = vm_mb("VmRSS")
    feeds = sequence(length, hidden)
    t0, c0 = time.perf_counter(), time.process_time()
    scores = session.run(["scores"], feeds)[0]
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    np.save(scores_out, scores)
    # CPU seconds beside wall seconds: on a shared machine the wall time measures the other jobs too
    return {"provider": provider, "load_s": load_s, "load_cpu_s": load_cpu_s, "seconds": seconds,
            "cpu_seconds": cpu_seconds, "rss_loaded_mb": rss_loaded,
            "peak_rss_mb": vm_mb("VmHWM"), "scores_sum": float(scores.sum())}


def run_child(graph: Path, length: int, threads: int, scores_out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", str(graph), str(length), str(threads),
           str(scores_out)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"failed": (out.stderr or out.stdout).strip().splitlines()[-3:],
                "returncode": out.returncode}
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- parent --------------------------------------------------------------------------------------

def export_graphs(workdir: Path) -> dict:
    import torch

    from rs_vqa_plugin.modeling.export_rfm import export_rfm_onnx
    from rs_vqa_plugin.modeling.quiet import quiet_model_libraries
    from rs_vqa_plugin.modeling.rfm_torch import PAPER_LAYERS, RegionFocusTorch, RFMConfig

    quiet_model_libraries()
    torch.manual_seed(0)
    rfm = RegionFocusTorch(RFMConfig(hidden_size=HIDDEN, num_attention_heads=4,
                                     num_key_value_heads=2, head_dim=32, intermediate_size=384,
                                     layers=list(PAPER_LAYERS), qkv_bias=True)).eval()
    paths = {}
    for graph in GRAPHS:
        paths[graph] = export_rfm_onnx(rfm, workdir / f"rfm_{graph}.onnx", attention=graph)
    return paths


def predicted_peak(points: dict, length: int):
    """Quadratic extrapolation of the memory above the loaded session from the largest point."""
    done = [(n, p) for n, p in points.items() if "peak_rss_mb" in p]
    if not done:
        return None
    n, p = max(done)
    growth = p["peak_rss_mb"] - p["rss_loaded_mb"]
    return p["rss_loaded_mb"] + growth * (length / n) ** 2


def exponent(points: dict):
    """Log-log slope of the memory above the loaded session between the smallest and largest
    lengths measured: about 1 when it grows linearly, about 2 when quadratically."""
    done = sorted((n, p["peak_rss_mb"] - p["rss_loaded_mb"]) for n, p in points.items()
                  if "peak_rss_mb" in p)
    if len(done) < 2 or done[0][1] <= 0:
        return None
    (n1, m1), (n2, m2) = done[0], done[-1]
    return math.log(m2 / m1) / math.log(n2 / n1)


def markdown(lengths, results, diffs) -> str:
    def cell(point, value, fmt):
        if "skipped" in point or "failed" in point:
            return "skipped" if "skipped" in point else "failed"
        return fmt.format(value(point))

    peak = lambda p: p["peak_rss_mb"]                        # noqa: E731
    growth = lambda p: p["peak_rss_mb"] - p["rss_loaded_mb"]  # noqa: E731
    seconds = lambda p: p["seconds"]                         # noqa: E731
    lines = ["| tokens | eager peak RSS MB | gqa peak RSS MB | eager / gqa RSS | eager growth MB | "
             "gqa growth MB | eager s | gqa s | max abs diff eager vs gqa |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in lengths:
        e, g = results["eager"][n], results["gqa"][n]
        ratio = (f"{e['peak_rss_mb'] / g['peak_rss_mb']:.1f}x"
                 if "peak_rss_mb" in e and "peak_rss_mb" in g else "-")
        diff = f"{diffs[n]:.1e}" if diffs.get(n) is not None else "-"
        lines.append(f"| {n:,} | {cell(e, peak, '{:,.0f}')} | {cell(g, peak, '{:,.0f}')} | "
                     f"{ratio} | {cell(e, growth, '{:,.0f}')} | {cell(g, growth, '{:,.0f}')} | "
                     f"{cell(e, seconds, '{:.2f}')} | {cell(g, seconds, '{:.2f}')} | {diff} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", nargs="+", type=int,
                        default=[2000, 4000, 8000, 12000, 16000, 20000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--headroom-mb", type=float, default=1500.0,
                        help="memory to leave free: an eager point predicted to need more is skipped")
    parser.add_argument("--workdir", default=str(ROOT / "bench" / "out" / "rfm_memory"))
    parser.add_argument("--child", nargs=4, metavar=("GRAPH", "LENGTH", "THREADS", "SCORES"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        graph, length, threads, scores = args.child
        print(json.dumps(child(graph, int(length), int(threads), scores)))
        return 0

    import numpy as np

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    paths = export_graphs(workdir)
    lengths = sorted(args.lengths)
    results = {graph: {} for graph in GRAPHS}
    diffs = {}
    for n in lengths:
        for graph in GRAPHS:
            need = predicted_peak(results[graph], n) if graph == "eager" else None
            free = available_mb()
            if need is not None and need > free - args.headroom_mb:
                results[graph][n] = {"skipped": f"predicted peak {need:,.0f} MB, "
                                                f"{free:,.0f} MB available"}
            else:
                results[graph][n] = run_child(paths[graph], n, args.threads,
                                              workdir / f"scores_{graph}_{n}.npy")
            print(f"{n} tokens, {graph}: {json.dumps(results[graph][n])}", file=sys.stderr)
        files = [workdir / f"scores_{graph}_{n}.npy" for graph in GRAPHS]
        if all("peak_rss_mb" in results[g][n] for g in GRAPHS):
            diffs[n] = float(np.abs(np.load(files[0]) - np.load(files[1])).max())
        for f in files:
            f.unlink(missing_ok=True)

    import onnxruntime
    import torch

    verdict = {}
    for graph in GRAPHS:
        k = exponent(results[graph])
        verdict[graph] = {"exponent": None if k is None else round(k, 2),
                          "linear": None if k is None else k < 1.3}
    report = {"benchmark": "rfm_memory", "threads": args.threads,
              "rfm": {"hidden": HIDDEN, "heads": 4, "kv_heads": 2, "head_dim": 32, "ffn": 384,
                      "layers": [1, 5, 11, 14]},
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
              "results": {g: {str(n): r for n, r in results[g].items()} for g in GRAPHS},
              "max_abs_diff": {str(n): d for n, d in diffs.items()}, "growth": verdict}
    out = ROOT / "bench" / "out" / "rfm_memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(markdown(lengths, results, diffs))
    print()
    for graph in GRAPHS:
        v = verdict[graph]
        if v["exponent"] is None:
            print(f"{graph}: too few points to judge the growth")
        else:
            print(f"{graph}: memory above the loaded session grows as L^{v['exponent']:.2f} "
                  f"-> {'linear' if v['linear'] else 'NOT linear'}")
    print(f"\nwritten {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
