"""Causal grouped-query attention of the RFM's full layers: eager math in torch, and in rfm.onnx
one ONNX Runtime `com.microsoft` GroupQueryAttention node per layer, whose memory is linear in L.

Both take RoPE-rotated q [H, L, d] and k, v [KV, L, d] and return [L, H * d]; the RoPE stays ours
(applied before), so torch and the graph share one rotation (llama3 frequencies, attention scaling)
and GQA's own rotary (do_rotary with cos/sin caches) is not used."""

from __future__ import annotations

import math

import torch

# How an exported graph computes the full layers' attention.
GRAPH_ATTENTION = ("gqa", "eager")


def eager_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + causal mask) v, one head at a time: peak memory one L x L matrix.
    Differentiable; what training and distillation run, and the pre-GQA graph (`eager`)."""
    heads, length, head_dim = q.shape
    groups = heads // k.shape[0]
    causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    scale = 1.0 / math.sqrt(head_dim)
    outputs = []
    for head in range(heads):
        kv = head // groups
        logits = torch.matmul(q[head], k[kv].transpose(0, 1)) * scale
        logits = logits.masked_fill(~causal, torch.finfo(logits.dtype).min)
        probs = torch.softmax(logits.float(), dim=-1).to(v.dtype)
        outputs.append(torch.matmul(probs, v[kv]))
    return torch.stack(outputs, dim=1).reshape(length, heads * head_dim)


def gqa_graph_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same attention as one GroupQueryAttention node (export only: outside
    torch.onnx.export the symbolic op returns no real values). Prompt mode: no past,
    seqlens_k = [L - 1], total_sequence_length = L, which ONNX Runtime runs causally without an
    L x L matrix on CPU. Its CUDA kernel takes float16/bfloat16 only: a float32 graph runs this
    node on the CPU kernel, an fp16 export on the GPU."""
    heads, length, head_dim = q.shape
    kv_heads = k.shape[0]
    query = q.transpose(0, 1).reshape(1, length, heads * head_dim)
    key = k.transpose(0, 1).reshape(1, length, kv_heads * head_dim)
    value = v.transpose(0, 1).reshape(1, length, kv_heads * head_dim)
    seqlens_k = torch.full((1,), length - 1, dtype=torch.int32)
    total_length = torch.full((), length, dtype=torch.int32)
    present = [1, kv_heads, length, head_dim]
    # present_key/value are listed (linear in L) because older schemas make them required.
    out, _, _ = torch.onnx.ops.symbolic_multi_out(
        "com.microsoft::GroupQueryAttention",
        (query, key, value, None, None, seqlens_k, total_length),
        {"num_heads": heads, "kv_num_heads": kv_heads, "scale": 1.0 / math.sqrt(head_dim)},
        dtypes=(q.dtype, k.dtype, v.dtype),
        shapes=([1, length, heads * head_dim], present, present), version=1)
    return out[0]


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     graph_attention: str = "gqa") -> torch.Tensor:
    """Eager in torch; in torch.onnx.export the node chosen by graph_attention."""
    if graph_attention not in GRAPH_ATTENTION:
        raise ValueError(f"graph attention must be one of {GRAPH_ATTENTION}, not {graph_attention!r}")
    if graph_attention == "gqa" and torch.onnx.is_in_onnx_export():
        return gqa_graph_attention(q, k, v)
    return eager_causal_attention(q, k, v)
