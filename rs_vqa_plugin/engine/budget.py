"""A memory budget before any work (issue 18): what an RFM pass or an LLM prefill of L tokens will
hold, estimated from the bundle's dimensions, and a clear refusal when it is over the limit.

The estimates are rough on purpose (upper-ish bounds, one constant per term), calibrated on the
shipped model (hidden 128, FFN 384, 4 LLM layers, 3 RFM graph layers) on the CPU by peak RSS:

- RFM (`rfm.onnx` with GroupQueryAttention, no L x L matrix): ~15 KB per token at hidden 128 with
  five layers (bench_rfm_memory), i.e. about 6 floats per token, hidden unit and layer, plus
  one FFN row.
- LLM prefill with SDPA (one pass, no L x L matrix): 16.7 KB per token measured (2k -> 8k tokens):
  the KV cache (2 x layers x KV heads x head dim per token) plus one layer's activations
  (about 14 x hidden + 4 x FFN values per token).
- LLM prefill with eager attention (chunked by PREFILL_CHUNK): add the score matrix, heads x
  chunk x L values, twice (scores and softmax); measured 304 MB at 8k tokens, estimated 386.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from .errors import InputError

MB = 1024.0 * 1024.0
# Share of the memory available at ask time that an ask may plan to use by default.
DEFAULT_SHARE = 0.8


@dataclass(frozen=True)
class BudgetDims:
    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int            # the LLM's activations and KV cache
    attention: str              # the LLM's attention implementation ('sdpa', 'eager', ...)
    prefill_chunk: int          # 0: one pass
    rfm_layers: int             # decoder layers in rfm.onnx


def dims_of(bundle, llm) -> BudgetDims:
    """The figures the estimates need, from the bundle's LLM config and the loaded LLM."""
    config = bundle.llm_config.get("text_config") or bundle.llm_config
    hidden = int(bundle.manifest.hidden_size)
    heads = int(config.get("num_attention_heads") or 1)
    rfm = bundle.manifest.rfm or {}
    model_config = getattr(getattr(llm, "model", None), "config", None)
    return BudgetDims(
        hidden=hidden, ffn=int(config.get("intermediate_size") or 4 * hidden),
        layers=int(config.get("num_hidden_layers") or 1), heads=heads,
        kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or hidden // heads),
        dtype_bytes=int(getattr(getattr(llm, "dtype", None), "itemsize", 4) or 4),
        attention=str(getattr(model_config, "_attn_implementation", None) or "eager"),
        prefill_chunk=int(llm.prefill_chunk()) if hasattr(llm, "prefill_chunk") else 0,
        rfm_layers=len(rfm.get("copied_from") or []) or len(rfm.get("layers") or []) + 1)


def rfm_pass_mb(dims: BudgetDims, tokens: int) -> float:
    """Peak memory of one RFM scoring pass over `tokens` (float32 in ONNX Runtime)."""
    per_token = 4 * (6 * dims.hidden * dims.rfm_layers + dims.ffn)
    return int(tokens) * per_token / MB


def llm_prefill_mb(dims: BudgetDims, tokens: int) -> float:
    """Peak memory of the LLM's prefill over `tokens` plus its KV cache."""
    n = int(tokens)
    kv = 2 * dims.layers * dims.kv_heads * dims.head_dim * dims.dtype_bytes
    activations = (14 * dims.hidden + 4 * dims.ffn) * dims.dtype_bytes
    total = n * (kv + activations)
    if dims.attention == "eager":
        chunk = min(n, dims.prefill_chunk or n)
        total += 2 * dims.heads * chunk * n * dims.dtype_bytes
    return total / MB


def available_mb() -> Optional[float]:
    """Memory the system can give now (Linux MemAvailable; free pages elsewhere); None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / MB
    except (ValueError, OSError, AttributeError):
        return None


def resolve_limit_mb(limit_mb: Optional[float]) -> Optional[float]:
    """The limit an ask plans against: the option, or DEFAULT_SHARE of what is available now."""
    if limit_mb is not None:
        if float(limit_mb) <= 0:
            raise InputError(f"memory_limit_mb must be positive, got {limit_mb}.")
        return float(limit_mb)
    free = available_mb()
    return None if free is None else DEFAULT_SHARE * free


def check(what: str, tokens: int, needed_mb: float, limit_mb: Optional[float],
          way_out: str) -> None:
    """Refuse, before any work, a step whose estimate is over the limit: say the figure and the
    way out. `what` names the step ("Mode 'grid' at level 3 would prefill the language model")."""
    if limit_mb is None or needed_mb <= limit_mb:
        return
    raise InputError(f"{what} over {int(tokens):,} tokens, about {needed_mb:,.0f} MB, above the "
                     f"memory limit of {limit_mb:,.0f} MB: {way_out}, or raise memory_limit_mb "
                     "(default: 80% of the memory available when asking).")


def weights_numel(folder) -> int:
    """Parameters in a folder's *.safetensors files, from their headers (no tensor is read)."""
    import json
    import struct
    from pathlib import Path

    total = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length).decode("utf-8"))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for dim in entry.get("shape", []):
                    count *= int(dim)
                total += count
    return total


def check_weights_fit(folder, dtype_bytes: int, device: str, free_mb: Optional[float]) -> None:
    """Refuse, before loading, language-model weights that cannot fit the device's free memory
    at the dtype they would be loaded in (a checkpoint too large for the device asked for), with
    the figures and the ways out, instead of an out-of-memory crash halfway through loading."""
    if free_mb is None:
        return
    needed = weights_numel(folder) * int(dtype_bytes) / MB
    if needed <= free_mb:
        return
    where = "the GPU" if device == "cuda" else "this machine"
    raise InputError(f"The language model in {folder} needs about {format_mb(needed)} as "
                     f"{8 * int(dtype_bytes)}-bit weights but {where} has {format_mb(free_mb)} "
                     "free: choose a smaller dtype (bfloat16 or float16), another device, or a "
                     "smaller model.")


def format_mb(mb: float) -> str:
    """A memory figure for a message: GB from 1 GB up, MB below."""
    return f"{mb / 1024:,.1f} GB" if mb >= 1024 else f"{mb:,.1f} MB"
