"""Benchmark: real model sizes with random weights, on the CPU (seconds, tiles, tokens, memory).

Part a: a transformers LLaVA folder with random weights at the exact dimensions of CLIP-L/14-336
(24 layers of 1024, 16 heads, feature layer -2) and Qwen2-0.5B (24 layers of 896, 14 heads, 2 KV
heads, FFN 4864, vocabulary 151,936, tied embeddings), saved in bfloat16 as Qwen2 ships, converted
by the project's converter (convert_hf_llava; RFM layers: the default list for the depth). Then on
square 3-band GeoTIFFs of 4k, 10k and 27k px (bench_engine's rasters, overviews built before
timing), modes thumbnail, grid, dip and full answer one question each (one new token, tile cache
off): the trace's seconds per stage, tiles encoded, LLM vision tokens, llm_dtype and peak RSS.
`full` above its token limit is refused; its planned tiles and tokens are recorded instead. A point
whose time, estimated from the tile rate and LLM speed measured so far, exceeds --max-minutes is
skipped and said so.

Part b: the RFM of Qwen2-7B (hidden 3584, 28 heads, 4 KV heads, FFN 18944, qkv bias) with the
default layer list of a 28-layer LLM (the paper's [1, 5, 11, 14]: layers 0, 1, 5, 11, 14 copied),
random weights, exported by export_rfm_onnx (external data); at 2k, 6k and 12k tokens: the ONNX
Runtime session's load time, RSS once loaded, peak RSS and seconds of one scoring pass.

Every point runs in a fresh subprocess (peak RSS = its VmHWM), one thread for torch and ONNX
Runtime, watched by the parent: it is killed if the free memory (MemAvailable) drops under
--min-free-gb, and a point predicted to leave less is skipped. Results are saved after each point
in bench/out/real_size.json; a rerun skips the points already measured.

    nice -n 19 python bench/bench_real_size.py [--part a|b] [--workdir DIR] [--sizes ...]
        [--lengths ...] [--modes thumbnail,grid,dip,full] [--max-minutes 15] [--min-free-gb 5]
Prints markdown tables.
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
sys.path.insert(0, str(ROOT / "bench"))

from bench_engine import QUESTIONS, full_estimate, prepare_raster  # noqa: E402
from bench_rfm_memory import available_mb, vm_mb  # noqa: E402

OUT = ROOT / "bench" / "out" / "real_size.json"
THREADS = 1
MODES = ("thumbnail", "grid", "dip", "full")
STAGES = ("read", "encode", "score", "select", "generate", "total")
CLIP_L_336 = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
              "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
              "projection_dim": 768, "hidden_act": "quick_gelu"}
QWEN2_05B = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
             "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
             "tie_word_embeddings": True, "rope_theta": 1e6, "rms_norm_eps": 1e-6,
             "max_position_embeddings": 32768}
QWEN2_7B_RFM = {"hidden_size": 3584, "num_attention_heads": 28, "num_key_value_heads": 4,
                "head_dim": 128, "intermediate_size": 18944, "qkv_bias": True,
                "rms_norm_eps": 1e-6}
QWEN2_7B_DEPTH, QWEN2_ROPE_THETA = 28, 1e6
TOKENIZER_VOCAB = 600     # the tiny model's tokenizer; ids above it decode to nothing


def pin_threads(threads: int) -> None:
    """One thread for torch and for every ONNX Runtime session the engine opens (the engine leaves
    ONNX Runtime at its default, one thread per core)."""
    import torch

    from rs_vqa_plugin.engine import onnx_session, rfm, vision

    torch.set_num_threads(threads)

    def pinned(path, device="auto", _threads=0):
        return onnx_session.make_session(path, device, threads)

    vision.make_session = rfm.make_session = pinned


# -- children: one step each, in a fresh process ---------------------------------------------------

def build_llava(folder: str) -> dict:
    """The LLaVA folder at CLIP-L/14-336 + Qwen2-0.5B dimensions, random weights, bfloat16."""
    import torch
    from transformers import (CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration,
                              Qwen2Config)

    from rs_vqa_plugin.modeling.tiny_model import train_tokenizer

    t0 = time.perf_counter()
    tokenizer = train_tokenizer(TOKENIZER_VOCAB)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    text = Qwen2Config(**QWEN2_05B, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                       dtype="bfloat16")
    grid = CLIP_L_336["image_size"] // CLIP_L_336["patch_size"]
    config = LlavaConfig(vision_config=CLIPVisionConfig(**CLIP_L_336), text_config=text,
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", image_seq_length=grid * grid,
                         tie_word_embeddings=True, dtype="bfloat16")
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)   # built in the dtype it is saved in: half the memory
    model = LlavaForConditionalGeneration(config).eval()
    torch.set_default_dtype(torch.float32)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (Path(folder) / "preprocessor_config.json").write_text(json.dumps({
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "crop_size": {"height": 336, "width": 336}}, indent=2))
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": vm_mb("VmHWM"),
            "parameters": params, "disk_mb": folder_mb(folder)}


def convert(src: str, out: str) -> dict:
    from rs_vqa_plugin.modeling.convert_hf import convert_hf_llava

    t0 = time.perf_counter()
    convert_hf_llava(src, out, provenance={"source": "bench_real_size", "note": "random weights "
                                           "at CLIP-L/14-336 + Qwen2-0.5B dimensions"},
                     licence="Apache-2.0 (generated, random weights)", overwrite=True)
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": vm_mb("VmHWM"),
            "disk_mb": folder_mb(out), "rfm_layers": manifest["rfm"]["layers"],
            "rfm_copied_from": manifest["rfm"]["copied_from"], "llm_dtype": manifest["llm"]["dtype"],
            "files_mb": {p.name: round(p.stat().st_size / 2**20, 1)
                         for p in sorted(Path(out).rglob("*")) if p.is_file()
                         and p.stat().st_size > 2**20}}


class StageClock:
    """CPU seconds per stage from the engine's progress events: the CPU time from one event to
    the next goes to the former's stage. The trace's seconds are wall time, which on a shared
    machine also measures the other jobs; with one thread, CPU seconds are what an idle core
    would take (bookkeeping between two stages lands in the earlier one)."""

    def __init__(self):
        self.cpu = {stage: 0.0 for stage in STAGES if stage != "total"}
        self.stage = None
        self.mark = time.process_time()

    def __call__(self, event) -> None:
        if event.get("type") == "progress":
            self.lap()
            self.stage = event.get("stage")

    def lap(self) -> None:
        now = time.process_time()
        if self.stage in self.cpu:
            self.cpu[self.stage] += now - self.mark
        self.mark = now


def ask(mode: str, raster: str, bundle: str) -> dict:
    from rs_vqa_plugin.engine.errors import InputError
    from rs_vqa_plugin.engine.pipeline import AskOptions, Engine

    pin_threads(THREADS)
    clock = StageClock()
    t0, c0 = time.perf_counter(), time.process_time()
    engine = Engine(bundle, device="cpu", events=clock, tile_cache_mb=0)   # cold: every tile encoded
    loaded = {"load_s": time.perf_counter() - t0, "load_cpu_s": time.process_time() - c0,
              "rss_after_load_mb": vm_mb("VmRSS")}
    clock.stage, c0 = None, time.process_time()
    try:
        answer = engine.ask(raster, QUESTIONS[0], AskOptions(mode=mode, max_new_tokens=1))
    except InputError as exc:
        return {**loaded, "refused": str(exc), "peak_rss_mb": vm_mb("VmHWM")}
    clock.lap()
    tr = answer.trace
    cpu = {k: round(v, 3) for k, v in clock.cpu.items()}
    cpu["total"] = round(time.process_time() - c0, 3)
    return {**loaded, "peak_rss_mb": vm_mb("VmHWM"), "seconds": tr["seconds"], "cpu_seconds": cpu,
            "tiles_encoded": tr["tiles_encoded"], "tiles_per_level": tr["tiles_per_level"],
            "levels": tr["levels"], "rfm_tokens": tr["rfm_tokens"],
            "llm_vision_tokens": tr["llm_vision_tokens"], "llm_tokens": tr["llm_tokens"],
            "llm_dtype": tr["llm_dtype"], "providers": tr["providers"],
            "stop_reason": tr["stop_reason"], "flops": tr["flops"]}


def export_rfm(out: str, fp16: bool) -> dict:
    import torch

    from rs_vqa_plugin.modeling.export_rfm import export_rfm_onnx
    from rs_vqa_plugin.modeling.quiet import quiet_model_libraries
    from rs_vqa_plugin.modeling.rfm_torch import RegionFocusTorch, RFMConfig, default_layer_list

    quiet_model_libraries()
    t0 = time.perf_counter()
    torch.manual_seed(0)
    config = RFMConfig(**QWEN2_7B_RFM, layers=default_layer_list(QWEN2_7B_DEPTH))
    rfm = RegionFocusTorch(config).eval()
    d = config.head_dim
    rfm.inv_freq.copy_(1.0 / QWEN2_ROPE_THETA ** (torch.arange(0, d, 2).float() / d))
    params = sum(p.numel() for p in rfm.parameters())
    build_s = time.perf_counter() - t0
    export_rfm_onnx(rfm, out, fp16=fp16)
    return {"build_s": build_s, "export_s": time.perf_counter() - t0 - build_s,
            "peak_rss_mb": vm_mb("VmHWM"), "fp16": fp16, "layers": config.layers,
            "copied_from": config.copied_from, "module_layers": config.num_layers,
            "parameters": params, "onnx": onnx_summary(out)}


def score(onnx_path: str, length: int, scores_out: str) -> dict:
    from bench_rfm_memory import child as rfm_child   # load, warm-up, one pass, VmHWM

    return rfm_child(onnx_path, length, THREADS, scores_out)


def onnx_summary(path) -> dict:
    """Sizes on disk and the parameters the graph really holds (unused weights are dropped)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    total = sum(math.prod(init.dims) for init in model.graph.initializer)
    files = [Path(path)] + list(Path(path).parent.glob(Path(path).name + ".data"))
    return {"parameters": total, "initializers": len(model.graph.initializer),
            "disk_mb": round(sum(f.stat().st_size for f in files) / 2**20, 1),
            "external_data": len(files) > 1}


def folder_mb(folder) -> float:
    return round(sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 2**20, 1)


CHILDREN = {"build": build_llava, "convert": convert, "ask": ask, "export": export_rfm,
            "score": score}


# -- the parent: supervision, resumable results ----------------------------------------------------

class Results:
    """bench/out/real_size.json, rewritten after every point so that a rerun resumes."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, part: str, key: str):
        return self.data.get(part, {}).get(key)

    def put(self, part: str, key: str, value) -> None:
        self.data.setdefault(part, {})[key] = value
        self.data["machine"] = machine()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        os.replace(tmp, self.path)


def machine() -> dict:
    import onnxruntime
    import torch
    import transformers

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "threads": THREADS,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__}


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU seconds of a running process (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def supervised(step: str, args: list, log: Path, min_free_mb: float, timeout_s: float) -> dict:
    """Run one child; kill it when the free memory drops under min_free_mb or once it has used
    timeout_s of CPU (CPU, not wall: the other jobs on a shared machine must not kill a point;
    past 10x that in wall time it is killed too)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    result_file = log.with_suffix(".json")
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", step, str(result_file), *map(str, args)]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    lowest = available_mb()
    killed = None
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=err, stderr=err, env=env)
        while proc.poll() is None:
            free = available_mb()
            lowest = min(lowest, free)
            if free < min_free_mb:
                killed = f"memory: {free:,.0f} MB available, under the {min_free_mb:,.0f} MB floor"
            elif cpu_seconds_of(proc.pid) > timeout_s:
                killed = f"time: over {timeout_s:,.0f} CPU s"
            elif time.perf_counter() - t0 > 10 * timeout_s:
                killed = f"time: over {10 * timeout_s:,.0f} s"
            if killed:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.1)
    wall = time.perf_counter() - t0
    common = {"wall_s": round(wall, 2), "lowest_available_mb": round(lowest),
              "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    if killed:
        return {"killed": killed, **common}
    if proc.returncode != 0 or not result_file.is_file():
        tail = log.read_text().strip().splitlines()[-3:]
        return {"failed": tail, "returncode": proc.returncode, **common}
    return {**json.loads(result_file.read_text()), **common}


def need_memory(results: Results, part: str, key: str, need_mb: float, min_free_mb: float) -> bool:
    """False (and the point recorded as skipped) when need_mb would leave under min_free_mb."""
    free = available_mb()
    if need_mb > 4096 and free - need_mb < min_free_mb:
        results.put(part, key, {"skipped": f"memory: needs about {need_mb:,.0f} MB, "
                                           f"{free:,.0f} MB available"})
        print(f"{key}: skipped (memory)", file=sys.stderr)
        return False
    return True


def measured(results: Results, part: str, key: str) -> bool:
    """A point already done (measured, refused or skipped for time) is not run again."""
    r = results.get(part, key)
    return bool(r) and not ("failed" in r or "killed" in r or str(r.get("skipped", "")).startswith("memory"))


def step(results, part, key, child, args, workdir, opts, need_mb=0.0, timeout_s=None) -> dict:
    if measured(results, part, key):
        return results.get(part, key)
    if not need_memory(results, part, key, need_mb, opts.min_free_gb * 1024):
        return results.get(part, key)
    print(f"{key}: running", file=sys.stderr)
    r = supervised(child, args, workdir / f"{key}.log", opts.min_free_gb * 1024,
                   timeout_s or opts.max_minutes * 60 * 2)
    results.put(part, key, r)
    print(f"{key}: {json.dumps(r)[:400]}", file=sys.stderr)
    return r


# -- part a ----------------------------------------------------------------------------------------

class Rates:
    """Seconds per 336 px tile encoded and per LLM/RFM FLOP, from the points measured so far."""

    def __init__(self):
        self.tile_s = None
        self.flop_s = None
        self.load_s = None

    def learn(self, r: dict) -> None:
        if "seconds" not in r:
            return
        s = r.get("cpu_seconds") or r["seconds"]     # CPU: independent of the other jobs
        self.tile_s = s["encode"] / (r["tiles_encoded"] + 1)        # + the thumbnail
        self.flop_s = (s["score"] + s["generate"]) / max(r["flops"]["total"], 1)
        self.load_s = r.get("load_cpu_s", r["load_s"])

    def estimate(self, tiles: int, flops: float):
        if self.tile_s is None:
            return None
        return self.load_s + (tiles + 1) * self.tile_s + flops * self.flop_s


def planned(size: int, mode: str, manifest: dict, dims, text_tokens: int, grid_tokens: int) -> dict:
    """Tiles and FLOPs a mode will need: full and grid from the plan; dip level 1 and level 2 (at
    most N_max tiles; it may go deeper), about grid's tokens in the LLM, two RFM passes of 4x that."""
    from rs_vqa_plugin.engine.cost import run_flops
    from rs_vqa_plugin.engine.pyramid import plan_pyramid

    plan = plan_pyramid(size, size, tile_size=manifest["tile_size"],
                        token_grid=manifest["pooled_grid"])
    if mode == "full":
        est = full_estimate(size, manifest["tile_size"], manifest["patch_grid"],
                            manifest["pooled_grid"], text_tokens, dims)
        return {"tiles": est["tiles_encoded"], "llm_vision_tokens": est["llm_vision_tokens"],
                "flops": est["flops"]}
    level1 = plan.level(1).tile_count()
    if mode == "thumbnail":
        return {"tiles": 0, "flops": run_flops(_dims(dims), text_tokens + 577, [])["total"]}
    if mode == "grid":
        return {"tiles": level1, "flops": run_flops(_dims(dims), grid_tokens, [])["total"]}
    level2 = plan.level(2).tile_count() if len(plan.levels) > 1 else 0
    return {"tiles": level1 + min(level2, int(manifest["n_max"])),
            "flops": run_flops(_dims(dims), grid_tokens, [grid_tokens * 4] * 2)["total"]}


def _dims(dims: dict):
    from rs_vqa_plugin.engine.cost import ModelDims

    return ModelDims(**dims)


def part_a(opts, results: Results) -> None:
    workdir = Path(opts.workdir)
    src, bundle = workdir / "llava_clipL336_qwen2_0.5b", workdir / "bundle_clipL336_qwen2_0.5b"
    r = step(results, "a", "build", "build", [src], workdir, opts, need_mb=3500)
    if "seconds" not in r:
        return
    r = step(results, "a", "convert", "convert", [src, bundle], workdir, opts, need_mb=6000)
    if "seconds" not in r:
        return
    manifest = json.loads((bundle / "manifest.json").read_text())
    llm = json.loads((bundle / "llm" / "config.json").read_text())
    dims = {"hidden": manifest["hidden_size"], "ffn": llm["intermediate_size"],
            "layers": llm["num_hidden_layers"], "rfm_layers": len(manifest["rfm"]["layers"])}
    rates = Rates()
    for size in sorted(opts.sizes):
        info = results.get("a", f"raster_{size}")
        if not info or not Path(info["path"]).exists():
            info = prepare_raster(workdir, size)
            results.put("a", f"raster_{size}", info)
        text_tokens, grid_tokens = 60, 1908
        for mode in [m for m in MODES if m in opts.modes]:
            key = f"{size}_{mode}"
            done = results.get("a", key)
            if measured(results, "a", key):
                rates.learn(done)
            else:
                plan = planned(size, mode, manifest, dims, text_tokens, grid_tokens)
                est = rates.estimate(plan["tiles"], plan["flops"])
                if mode == "full" and plan["llm_vision_tokens"] > 30000:
                    est = None   # refused at once: nothing to estimate
                if est is not None and est > opts.max_minutes * 60:
                    results.put("a", key, {"skipped": f"time: estimated {est / 60:,.0f} min "
                                           f"({plan['tiles']} tiles at {rates.tile_s:.1f} s + "
                                           f"the LLM) over {opts.max_minutes} min",
                                           "estimated_s": round(est), "planned": plan})
                    print(f"{key}: skipped, estimated {est:,.0f} s", file=sys.stderr)
                    continue
                done = step(results, "a", key, "ask", [mode, info["path"], bundle], workdir, opts)
                rates.learn(done)
                if est is not None:
                    done["estimated_s"] = round(est)
                    results.put("a", key, done)
            if "seconds" in done:
                text_tokens = done["llm_tokens"] - done["llm_vision_tokens"] - 1
                if mode == "grid":
                    grid_tokens = done["llm_tokens"]
            if mode == "full" and "refused" in done and "planned" not in done:
                done["planned"] = full_estimate(size, manifest["tile_size"], manifest["patch_grid"],
                                                manifest["pooled_grid"], text_tokens, dims)
                results.put("a", key, done)


# -- part b ----------------------------------------------------------------------------------------

def part_b(opts, results: Results) -> None:
    workdir = Path(opts.workdir)
    fp32_mb = 5 * 233e6 * 4 / 2**20        # five Qwen2-7B decoder layers in float32
    onnx = workdir / "rfm_qwen2_7b" / "rfm.onnx"
    onnx.parent.mkdir(parents=True, exist_ok=True)
    done = results.get("b", "export")
    if not (done and "export_s" in done and onnx.exists()):
        # A float32 export holds the weights about 2.5 times (the module, the folded transposes,
        # one tensor being written); where that does not fit, fp16 (the result says which).
        fp16 = available_mb() - 2.5 * fp32_mb < opts.min_free_gb * 1024
        results.data.get("b", {}).pop("export", None)
        done = step(results, "b", "export", "export", [onnx, int(fp16)], workdir, opts,
                    need_mb=2.5 * fp32_mb / (2 if fp16 else 1), timeout_s=3600)
        if "export_s" not in done and not fp16:
            print("float32 export failed; trying fp16", file=sys.stderr)
            results.data["b"].pop("export")
            done = step(results, "b", "export", "export", [onnx, 1], workdir, opts,
                        need_mb=1.25 * fp32_mb, timeout_s=3600)
        if "export_s" not in done:
            return
    weights_mb = done["onnx"]["disk_mb"]
    for length in sorted(opts.lengths):
        # loaded session (weights + ONNX Runtime's packed copies) plus activations of ~4 FFN rows
        need = 2 * weights_mb + length * 18944 * 4 * 4 / 2**20
        step(results, "b", f"score_{length}", "score", [onnx, length, workdir / "scores.npy"],
             workdir, opts, need_mb=need, timeout_s=opts.max_minutes * 60 * 3)


# -- tables ----------------------------------------------------------------------------------------

def table_a(results: Results, sizes) -> str:
    """CPU seconds per stage (wall seconds, marked w, for points measured before CPU time was)."""
    lines = ["| image px | mode | " + " | ".join(f"{s} CPU s" for s in STAGES) + " | wall s | "
             "tiles encoded | LLM vision tokens | llm_dtype | peak RSS MB | load avg |",
             "|---:|---|" + "---:|" * len(STAGES) + "---:|---:|---:|---|---:|---:|"]
    for size in sorted(sizes):
        for mode in MODES:
            r = results.get("a", f"{size}_{mode}")
            if not r:
                continue
            if "seconds" in r:
                cpu = r.get("cpu_seconds")
                cells = ([f"{cpu[s]:.1f}" for s in STAGES] if cpu else
                         [f"{r['seconds'][s]:.1f} w" for s in STAGES])
                cells += [f"{r['seconds']['total']:.1f}", str(r["tiles_encoded"]),
                          f"{r['llm_vision_tokens']:,}", r["llm_dtype"], f"{r['peak_rss_mb']:,.0f}",
                          f"{max(r['load_average']):.1f}"]
            else:
                plan = r.get("planned", {})
                why = ("refused (token limit)" if "refused" in r else
                       r.get("skipped") or r.get("killed") or "failed")
                cells = [why] + ["-"] * len(STAGES)
                cells += [f"({plan.get('tiles_encoded', plan.get('tiles', '-'))})",
                          f"({plan['llm_vision_tokens']:,})" if "llm_vision_tokens" in plan else "-",
                          "-", "-", "-"]
            lines.append(f"| {size:,} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_b(results: Results, lengths) -> str:
    e = results.get("b", "export") or {}
    head = ""
    if "onnx" in e:
        head = (f"RFM layers {e['layers']} (copied {e['copied_from']}: {e['module_layers']} "
                f"decoder layers), {e['parameters'] / 1e9:.2f} B parameters in the module, "
                f"{e['onnx']['parameters'] / 1e9:.2f} B in the graph, "
                f"{e['onnx']['disk_mb']:,.0f} MB on disk ({'fp16' if e['fp16'] else 'float32'}, "
                f"external data: {e['onnx']['external_data']}); export {e['export_s']:.0f} s, "
                f"peak RSS {e['peak_rss_mb']:,.0f} MB\n\n")
    lines = ["| tokens | session load s (CPU s) | RSS loaded MB | peak RSS MB | "
             "scoring pass CPU s | wall s | load avg |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for n in sorted(lengths):
        r = results.get("b", f"score_{n}")
        if not r:
            continue
        if "seconds" in r:
            lines.append(f"| {n:,} | {r['load_s']:.1f} ({r['load_cpu_s']:.1f}) | "
                         f"{r['rss_loaded_mb']:,.0f} | {r['peak_rss_mb']:,.0f} | "
                         f"{r['cpu_seconds']:.1f} | {r['seconds']:.1f} | "
                         f"{max(r['load_average']):.1f} |")
        else:
            why = r.get("skipped") or r.get("killed") or "failed"
            lines.append(f"| {n:,} | {why} | - | - | - | - | - |")
    return head + "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("a", "b"), help="one part (default: both)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[4000, 10000, 27328])
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--lengths", nargs="+", type=int, default=[2000, 6000, 12000])
    parser.add_argument("--max-minutes", type=float, default=15.0,
                        help="skip a part-a point estimated to take longer")
    parser.add_argument("--min-free-gb", type=float, default=5.0,
                        help="free memory to keep: a child going under it is killed")
    parser.add_argument("--workdir", default=str(ROOT / "bench" / "out" / "real_size"))
    parser.add_argument("--tables", action="store_true", help="only print the tables")
    parser.add_argument("--redo", nargs="+", default=[], metavar="POINT",
                        help="measure these points again (keys of the JSON, e.g. 4000_full score_2000)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.child:
        name, result_file, *rest = opts.child
        fn = CHILDREN[name]
        args = [int(a) if a.isdigit() else a for a in rest]
        if name == "export":
            args[1] = bool(args[1])
        result = fn(*args)
        result["process_cpu_s"] = time.process_time()
        Path(result_file).write_text(json.dumps(result))
        return 0
    opts.modes = [m for m in opts.modes.split(",") if m]
    results = Results(OUT)
    for key in opts.redo:
        for part in ("a", "b"):
            results.data.get(part, {}).pop(key, None)
    if not opts.tables:
        Path(opts.workdir).mkdir(parents=True, exist_ok=True)
        for part in ("a", "b"):
            if opts.part in (None, part):
                (part_a if part == "a" else part_b)(opts, results)
    print(table_a(results, opts.sizes))
    print()
    print(table_b(results, opts.lengths))
    print(f"\nwritten {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
