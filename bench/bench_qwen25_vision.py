"""Benchmark: the Qwen2.5-VL vision tower at real width in vision.onnx (issue 17).

A random-weight tower with Qwen2.5-VL-7B's vision dimensions (hidden 1280, 16 heads, MLP 3420,
out 3584, 14 px patches, 112 px windows, a full-attention block every 8th) and --depth blocks
(the real tower has 32; export time and tile latency grow about linearly with depth), exported
by the converter's own path (qwen25_vision.QwenVisionGraph + export_vision_onnx) at --tile px.
Measures the export seconds and size, ONNX Runtime's seconds per tile on the CPU at a batch
other than the traced one, transformers' own tower on the same tiles, and the largest
difference between them.

    python bench/bench_qwen25_vision.py [--depth 8] [--tile 336] [--batch 3] [--threads 2]
Prints a markdown table; writes bench/out/qwen25_vision.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

QWEN25_7B_VISION = dict(hidden_size=1280, num_heads=16, intermediate_size=3420,
                        out_hidden_size=3584, patch_size=14, spatial_merge_size=2,
                        temporal_patch_size=2, window_size=112)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--tile", type=int, default=336)
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
        Qwen2_5_VisionTransformerPretrainedModel)

    from qwen25_models import qwen_patches
    from rs_vqa_plugin.modeling.export_vision import export_vision_onnx
    from rs_vqa_plugin.modeling.qwen25_vision import QwenVisionGraph

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    full = [i for i in range(args.depth) if i % 8 == 7] or [args.depth - 1]
    config = Qwen2_5_VLConfig(vision_config=dict(QWEN25_7B_VISION, depth=args.depth,
                                                 fullatt_block_indexes=full)).vision_config
    tower = Qwen2_5_VisionTransformerPretrainedModel._from_config(config).float().eval()
    params = sum(p.numel() for p in tower.parameters())
    pixels = np.random.default_rng(0).normal(size=(args.batch, 3, args.tile, args.tile))
    pixels = pixels.astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        graph = QwenVisionGraph(tower, args.tile).eval()
        start = time.perf_counter()
        path = export_vision_onnx(graph, Path(tmp) / "vision.onnx")
        export_s = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2 ** 20
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session.run(["tokens"], {"pixels": pixels[:1]})                       # warm-up
        start = time.perf_counter()
        tokens = session.run(["tokens"], {"pixels": pixels})[0]
        onnx_s = (time.perf_counter() - start) / args.batch
        patches, grid = qwen_patches(pixels)
        start = time.perf_counter()
        ref = tower(torch.from_numpy(patches), grid_thw=torch.from_numpy(grid)).pooler_output
        torch_s = (time.perf_counter() - start) / args.batch
    ref = ref.reshape(tokens.shape).numpy()
    result = {"depth": args.depth, "full_attention_blocks": full, "tile": args.tile,
              "params_m": round(params / 1e6, 1), "export_s": round(export_s, 1),
              "onnx_mb": round(size_mb, 1), "onnx_s_per_tile": round(onnx_s, 3),
              "torch_s_per_tile": round(torch_s, 3), "tokens_per_tile": int(tokens.shape[1]),
              "max_abs_diff": float(np.abs(tokens - ref).max()),
              "max_abs_ref": float(np.abs(ref).max()), "threads": args.threads}
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "qwen25_vision.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| " + " | ".join(result) + " |")
    print("|" + "---|" * len(result))
    print("| " + " | ".join(str(v) for v in result.values()) + " |")


if __name__ == "__main__":
    main()
