"""Benchmark: the LLM's dtype on the CPU -- float32 against bfloat16 (and float16) -- at a real size.

A random-weight transformers Qwen2 with Qwen2-0.5B's dimensions (hidden 896, 24 layers, 14 heads
with 2 KV heads, FFN 4864, vocabulary 151,936), the LLM of the smallest real model a CPU user could
run, saved once as safetensors and loaded by the engine's own LanguageModel (engine/llm.py) in a
fresh subprocess per dtype: a prefill of PROMPT image-like tokens (inputs_embeds, like the engine's
sequences) and NEW greedy tokens, twice (the first a warm-up), with the load time, the seconds of
the second pass and the peak RSS. The dtypes run one after the other on the same threads, so their
ratio is what the choice rests on (engine/llm.CPU_DTYPE).

    python bench/bench_llm_dtype.py [--prompt 1500] [--new 8] [--threads 1] [--dtypes float32,bfloat16]
Prints a markdown table; writes bench/out/llm_dtype.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QWEN2_0_5B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                  intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)


def make_llm(folder: Path) -> Path:
    """A random Qwen2-0.5B-shaped causal LM and a small tokenizer, saved as a bundle's llm/ folder."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rs_vqa_plugin.modeling.tiny_model import train_tokenizer

    # The tiny model's tokenizer: the LM head keeps the real vocabulary (its cost per new token
    # is real); ids beyond the tokenizer decode to nothing.
    tokenizer = train_tokenizer(700)
    torch.manual_seed(0)
    config = Qwen2Config(**QWEN2_0_5B, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"))
    model = Qwen2ForCausalLM(config).to(torch.bfloat16).eval()   # a bf16 bundle, as Qwen2 ships
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


class _Bundle:
    """What LanguageModel reads of a bundle: the llm folder, its config and the manifest's chat."""

    def __init__(self, llm_dir: Path):
        from types import SimpleNamespace

        self.llm_dir = llm_dir
        self.llm_config = json.loads((llm_dir / "config.json").read_text())
        self.manifest = SimpleNamespace(chat={}, llm={"dtype": "bfloat16"}, extra={})


def child(llm_dir: str, dtype: str, prompt: int, new: int, threads: int) -> dict:
    import time

    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from rs_vqa_plugin.engine.llm import LanguageModel

    started = time.perf_counter()
    llm = LanguageModel(_Bundle(Path(llm_dir)), device="cpu", dtype=dtype)
    load = time.perf_counter() - started
    rng = np.random.default_rng(0)
    embeds = rng.normal(scale=0.02, size=(prompt, QWEN2_0_5B["hidden_size"])).astype(np.float32)
    timings = []
    for _ in range(2):
        started = time.perf_counter()
        text = llm.generate(embeds, max_new_tokens=new)
        timings.append(time.perf_counter() - started)
    with open("/proc/self/status") as status:
        peak = next(int(l.split()[1]) / 1024.0 for l in status if l.startswith("VmHWM:"))
    return {"dtype": dtype, "resolved": str(llm.dtype).replace("torch.", ""), "load_s": round(load, 2),
            "answer_s": round(timings[-1], 2), "answer": text, "peak_rss_mb": round(peak)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=1500)
    parser.add_argument("--new", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.prompt, args.new, args.threads)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="rs-vqa-dtype-") as tmp:
        llm_dir = make_llm(Path(tmp) / "llm")
        for dtype in [d for d in args.dtypes.split(",") if d]:
            out = subprocess.run([sys.executable, __file__, "--prompt", str(args.prompt), "--new", str(args.new),
                                  "--threads", str(args.threads), "--child", str(llm_dir), dtype],
                                 capture_output=True, text=True)
            if out.returncode:
                rows.append({"dtype": dtype, "error": out.stderr.strip().splitlines()[-1]})
            else:
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = next((r for r in rows if r.get("dtype") == "float32" and "answer_s" in r), None)
    print(f"Qwen2-0.5B-shaped LLM on the CPU ({platform.processor() or platform.machine()}, "
          f"{args.threads} thread(s)): prefill {args.prompt} tokens + {args.new} new tokens\n")
    print("| dtype | load | answer | vs float32 | peak RSS |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['dtype']} | error: {r['error']} | | | |")
            continue
        ratio = f"{r['answer_s'] / base['answer_s']:.2f}x" if base else ""
        print(f"| {r['dtype']} | {r['load_s']:.1f} s | {r['answer_s']:.2f} s | {ratio} | {r['peak_rss_mb']} MB |")
    out_path = ROOT / "bench" / "out" / "llm_dtype.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({"prompt": args.prompt, "new": args.new, "threads": args.threads,
                                    "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
