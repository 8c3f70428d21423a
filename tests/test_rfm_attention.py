"""The exported RFM graph computes its full layers' attention with ONNX Runtime's
GroupQueryAttention: same scores as torch, and memory linear in the sequence (no L x L matrix)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
MEMORY_BENCH = REPO / "bench" / "bench_rfm_memory.py"


def _random_rfm(kv_heads: int = 2, layers=(1, 2, 3)):
    import torch

    from rs_vqa_plugin.modeling.rfm_torch import RegionFocusTorch, RFMConfig

    torch.manual_seed(kv_heads)
    config = RFMConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=kv_heads,
                       head_dim=16, intermediate_size=96, layers=list(layers), qkv_bias=True)
    return RegionFocusTorch(config).eval()


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """The same random RFM exported both ways: {"gqa": path, "eager": path}."""
    from rs_vqa_plugin.modeling.export_rfm import export_rfm_onnx

    folder = tmp_path_factory.mktemp("rfm-graphs")
    rfm = _random_rfm()
    return {a: export_rfm_onnx(rfm, folder / f"{a}.onnx", attention=a) for a in ("gqa", "eager")}


def test_gqa_graph_has_one_attention_node_per_full_layer(graphs):
    import onnx

    def ops(path):
        return [n.op_type for n in onnx.load(str(path)).graph.node]

    gqa, eager = ops(graphs["gqa"]), ops(graphs["eager"])
    full_layers = 3
    assert gqa.count("GroupQueryAttention") == full_layers
    assert gqa.count("Softmax") == 1                  # only the scoring row over the HR keys
    assert eager.count("GroupQueryAttention") == 0
    assert eager.count("Softmax") == 1 + 4 * full_layers
    assert any(o.domain == "com.microsoft" for o in onnx.load(str(graphs["gqa"])).opset_import)


@pytest.mark.parametrize("kv_heads,fp16", [(2, False), (4, False), (1, False), (2, True)])
def test_gqa_graph_scores_equal_torch(tmp_path, kv_heads, fp16):
    """Grouped (KV < H), plain multi-head (KV = H) and multi-query (KV = 1) attention; the
    shortest sequences the graph accepts; fp16 weights (for GPUs) within fp16 precision."""
    import torch

    from rs_vqa_plugin.engine.onnx_session import make_session
    from rs_vqa_plugin.modeling.export_rfm import export_rfm_onnx

    rfm = _random_rfm(kv_heads)
    session, _ = make_session(export_rfm_onnx(rfm, tmp_path / "rfm.onnx", fp16=fp16), "cpu")
    for length in (2, 3, 257):
        embeds = np.random.default_rng(length).normal(size=(length, 64)).astype(np.float32)
        hr = np.arange(length) < max(1, length - 5)
        feeds = {"inputs_embeds": embeds[None], "hr_mask": hr,
                 "query_index": np.asarray(length - 1, dtype=np.int64)}
        got = session.run(["scores"], feeds)[0]
        with torch.no_grad():
            want = rfm.scores(torch.from_numpy(embeds), torch.from_numpy(hr),
                              torch.tensor(length - 1)).numpy()
        assert np.abs(got - want).max() <= (2e-4 if fp16 else 1e-6), (length, kv_heads)


def _rope_frequencies(graph):
    """The constant(s) the positions are multiplied by on the way to the rotation's Cos."""
    producers = {out: node for node in graph.node for out in node.output}
    constants = {t.name: t for t in graph.initializer}
    node = producers[next(n for n in graph.node if n.op_type == "Cos").input[0]]
    while node.op_type != "Mul":
        node = producers[node.input[0]]
    return [constants[name] for name in node.input if name in constants]


@pytest.mark.parametrize("keep_rope_float32", [True, False])
def test_fp16_graph_keeps_rope_in_float32_at_long_positions(tmp_path, monkeypatch, keep_rope_float32):
    """The fp16 graph multiplies positions by the float32 frequencies (halved, they rotate a far
    query by tenths of a radian at 4,000 tokens), and its scores at 4,000 tokens stay within fp16
    rounding of torch's float32 ones. The control (frequencies halved like the weights) shows the
    frequency check can fail."""
    import copy

    import onnx
    import torch
    from onnx import numpy_helper

    from rs_vqa_plugin.engine.onnx_session import make_session
    from rs_vqa_plugin.modeling import export_rfm as module

    if not keep_rope_float32:
        monkeypatch.setattr(module, "_half_keeping_rope", lambda rfm: copy.deepcopy(rfm).half())
    rfm = _random_rfm(2, layers=(1, 2))
    path = module.export_rfm_onnx(rfm, tmp_path / "rfm16.onnx", fp16=True)
    freq = _rope_frequencies(onnx.load(str(path)).graph)
    assert len(freq) == 1 and list(freq[0].dims)[-1] == 8      # head_dim 16
    exact = np.array_equal(numpy_helper.to_array(freq[0]).ravel(), rfm.inv_freq.numpy())
    assert exact == keep_rope_float32
    if not keep_rope_float32:
        return
    session, _ = make_session(path, "cpu")
    length = 4000
    embeds = np.random.default_rng(7).normal(size=(length, 64)).astype(np.float32)
    hr = np.arange(length) < length - 5
    got = session.run(["scores"], {"inputs_embeds": embeds[None], "hr_mask": hr,
                                   "query_index": np.asarray(length - 1, dtype=np.int64)})[0]
    with torch.no_grad():
        want = rfm.scores(torch.from_numpy(embeds), torch.from_numpy(hr), torch.tensor(length - 1)).numpy()
    assert np.abs(got - want).max() / want.max() < 0.02


def _memory_growth_mb(graph: Path, length: int, tmp_path: Path) -> float:
    """Peak RSS above the loaded session for one scoring pass, in a fresh process (the memory
    benchmark's own child)."""
    out = subprocess.run([sys.executable, str(MEMORY_BENCH), "--child", str(graph), str(length),
                          "1", str(tmp_path / f"scores_{graph.stem}_{length}.npy")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    point = json.loads(out.stdout.strip().splitlines()[-1])
    assert abs(point["scores_sum"] - 1.0) < 1e-4
    return point["peak_rss_mb"] - point["rss_loaded_mb"]


@pytest.mark.subprocess
def test_gqa_graph_memory_has_no_square_term(graphs, tmp_path):
    """One float32 L x L matrix is 4 L^2 bytes. The eager graph's growth exceeds that (the
    measurement sees such matrices); the GQA graph stays below half of it at 8k tokens."""
    square_mb = lambda n: 4.0 * n * n / 2**20           # noqa: E731
    eager = _memory_growth_mb(graphs["eager"], 3000, tmp_path)
    assert eager > square_mb(3000), eager
    gqa = _memory_growth_mb(graphs["gqa"], 8000, tmp_path)
    assert gqa < 0.5 * square_mb(8000), gqa
