"""The Region Focus Module in PyTorch: a truncated copy of the LLM's decoder layers that scores tokens.

Our own small implementation of the Qwen2 / Llama decoder math (RMSNorm, grouped-query attention
with RoPE, gated MLP), so that it exports cleanly to ONNX and can be trained (distillation).

Layout (METHOD §3): for a layer list [l1, ..., lR] the module holds R+1 layers copied from the LLM
layers [l1-1, l1, ..., lR]. Layers 0..R-1 run fully (causal, positions 0..L-1); the last layer
only contributes its input norm and q/k projections: the query row of its attention logits is the
score. The copied final norm is kept (the released checkpoints carry one) but does not enter scoring.
The full layers' causal attention is eager math in torch (differentiable, for distillation) and one
GroupQueryAttention node per layer in rfm.onnx, so the graph's memory is linear in L
(rfm_attention.py).

Public API (stable; distillation and the released-checkpoint converter rely on it):
- RFMConfig                                   dataclass, JSON-serialisable (to_dict / from_dict)
- RegionFocusTorch(config)                    random-initialised module
- RegionFocusTorch.from_llm(llm, layers)      copy from a transformers Qwen2/Llama causal LM
- .forward_attention_rows(embeds, query)      {llm layer: logits [H, L] or [Q, H, L]} for l1..lR
- .score_logits(embeds, query_index)          scoring layer's logits [H, L]
- .scores(embeds, hr_mask, query_index)       what rfm.onnx computes: [L], softmax over HR, head mean
- .save(path) / RegionFocusTorch.load(path)   rfm.safetensors with the config in its metadata
- .export_onnx(path)                          rfm.onnx (inputs_embeds [1,L,D], hr_mask [L], query_index [],
                                              + position_ids [3, L] when config.mrope_section)
- M-RoPE (config.mrope_section, Qwen2.5-VL): every method takes positions [3, L] (t, h, w per
  token, engine/mrope.py); the rotary frequencies are split into the three sections, section i
  rotated by axis i, as in the LLM. positions None: 0..L-1 on all axes (plain RoPE).
- state_dict keys mirror transformers: layers.{i}.self_attn.q_proj.weight, ..., norm.weight, inv_freq
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn
from torch.nn import functional as F

from .rfm_attention import causal_attention

# qwen2_5_vl_text: the decoder of Qwen2.5-VL (Qwen2 layers, multimodal rotary positions).
SUPPORTED_FAMILIES = ("qwen2", "llama", "mistral", "qwen2_5_vl_text")
PAPER_LAYERS = (1, 5, 11, 14)
PAPER_DEPTH = 28


def default_layer_list(num_layers: int) -> List[int]:
    """The paper's [1, 5, 11, 14] (for 28 layers) scaled to this depth; at least two entries.

    Every entry stays in 1..num_layers-1 so that l1-1 exists and no index runs off the LLM."""
    if num_layers < 3:
        raise ValueError(f"An RFM needs an LLM of at least 3 layers (got {num_layers}).")
    # floor(x + 0.5): Python's round() is banker's rounding and would merge more entries.
    scaled = [min(max(int(math.floor(l * num_layers / PAPER_DEPTH + 0.5)), 1), num_layers - 1)
              for l in PAPER_LAYERS]
    layers = sorted(set(scaled))   # depth >= 3 always leaves [1, ..., >= 2]: two entries or more
    return layers


def _mrope_section(config) -> Optional[List[int]]:
    """The M-RoPE sections of a Qwen2.5-VL text config (None for plain RoPE)."""
    if getattr(config, "model_type", "") != "qwen2_5_vl_text":
        return None
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    section = rope.get("mrope_section")
    if not section:
        raise ValueError("a Qwen2.5-VL text config without rope_parameters.mrope_section")
    return [int(v) for v in section]


def copied_layer_ids(layers: Sequence[int]) -> List[int]:
    """LLM layers copied into the RFM for a layer list: [l1-1, l1, ..., lR]."""
    layers = [int(l) for l in layers]
    if len(layers) < 1 or layers[0] < 1 or any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"RFM layer list must be strictly increasing and start at >= 1: {layers}")
    return [layers[0] - 1] + layers


@dataclass
class RFMConfig:
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    layers: List[int]                    # the selected LLM layers l1..lR
    rms_norm_eps: float = 1e-6
    qkv_bias: bool = False               # Qwen2: True
    o_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "silu"
    attention_scaling: float = 1.0       # RoPE cos/sin factor (1 for plain RoPE)
    family: str = "qwen2"
    mrope_section: Optional[List[int]] = None   # M-RoPE (t, h, w) sections of head_dim / 2
    # > 0: the HR tokens' place in the image (normalised centre x, y) is added to their inputs as
    # a learned projection of this many sine/cosine frequencies per axis (ours; rfm.onnx then
    # takes `image_xy` [L, 2]). 1-D RoPE over a raster-order sequence hardly tells the RFM where
    # a token is, so "in the north-west quarter" could not narrow its scores.
    image_xy: int = 0
    extra: Dict[str, object] = field(default_factory=dict)

    @property
    def copied_from(self) -> List[int]:
        return copied_layer_ids(self.layers)

    @property
    def num_layers(self) -> int:
        return len(self.layers) + 1

    @property
    def scoring_layer(self) -> int:
        return int(self.layers[-1])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RFMConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


_ACTIVATIONS = {"silu": F.silu, "swish": F.silu, "gelu": F.gelu,
                "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh")}


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Attention(nn.Module):
    def __init__(self, c: RFMConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = (c.num_attention_heads, c.num_key_value_heads,
                                                    c.head_dim)
        self.q_proj = nn.Linear(c.hidden_size, self.heads * self.head_dim, bias=c.qkv_bias)
        self.k_proj = nn.Linear(c.hidden_size, self.kv_heads * self.head_dim, bias=c.qkv_bias)
        self.v_proj = nn.Linear(c.hidden_size, self.kv_heads * self.head_dim, bias=c.qkv_bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, c.hidden_size, bias=c.o_bias)


class MLP(nn.Module):
    def __init__(self, c: RFMConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=c.mlp_bias)
        self.act = _ACTIVATIONS[c.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c: RFMConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MLP(c)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


class RegionFocusTorch(nn.Module):
    """R+1 decoder layers copied from an LLM; see the module docstring for the API."""

    def __init__(self, config: RFMConfig):
        super().__init__()
        if config.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"Unsupported RFM activation {config.hidden_act!r}")
        self.config = config
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        # Persistent, so RoPE variants (theta, llama3 scaling) travel exactly with the weights.
        inv = 1.0 / (10000.0 ** (torch.arange(0, config.head_dim, 2).float() / config.head_dim))
        self.register_buffer("inv_freq", inv, persistent=True)
        self.image_xy = None
        if config.image_xy:
            self._make_image_xy(int(config.image_xy))
        # How torch.onnx.export writes the full layers' attention (rfm_attention.GRAPH_ATTENTION):
        # "gqa", memory linear in L; "eager", the former per-head L x L graph (benchmarks only).
        self.graph_attention = "gqa"

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_llm(cls, llm_model, layers: Optional[Sequence[int]] = None) -> "RegionFocusTorch":
        """Copy layers [l1-1, l1, ..., lR] (+ final norm, RoPE frequencies) from a transformers
        Qwen2/Llama causal LM (or its base model, or Qwen2.5-VL's language_model).
        layers=None: default_layer_list(depth)."""
        base = getattr(llm_model, "model", llm_model)
        cfg = llm_model.config
        family = getattr(cfg, "model_type", "")
        if family not in SUPPORTED_FAMILIES:
            raise ValueError(f"RFM supports {', '.join(SUPPORTED_FAMILIES)} LLMs, not {family!r}")
        depth = len(base.layers)
        layers = list(default_layer_list(depth) if layers is None else layers)
        copied = copied_layer_ids(layers)
        if copied[-1] >= depth:
            raise ValueError(f"RFM layer {copied[-1]} does not exist: the LLM has {depth} layers")
        first = base.layers[0]
        attn = first.self_attn
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        config = RFMConfig(
            hidden_size=cfg.hidden_size, num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
            head_dim=head_dim, intermediate_size=cfg.intermediate_size, layers=layers,
            rms_norm_eps=float(cfg.rms_norm_eps), qkv_bias=attn.q_proj.bias is not None,
            o_bias=attn.o_proj.bias is not None, mlp_bias=first.mlp.gate_proj.bias is not None,
            hidden_act=cfg.hidden_act,
            attention_scaling=float(getattr(base.rotary_emb, "attention_scaling", 1.0)),
            family=family, mrope_section=_mrope_section(cfg))
        module = cls(config)
        state = {}
        for i, src in enumerate(copied):
            for key, value in base.layers[src].state_dict().items():
                state[f"layers.{i}.{key}"] = value.detach().float().clone()
        state["norm.weight"] = base.norm.weight.detach().float().clone()
        state["inv_freq"] = base.rotary_emb.inv_freq.detach().float().clone()
        module.load_state_dict(state, strict=True)
        return module.eval()

    def _make_image_xy(self, frequencies: int) -> None:
        self.image_xy = nn.Linear(4 * frequencies, self.config.hidden_size, bias=False)
        nn.init.zeros_(self.image_xy.weight)       # starts as the RFM without positions
        self.register_buffer("xy_freq", math.pi * 2.0 ** torch.arange(frequencies).float(),
                             persistent=True)

    def add_image_xy(self, frequencies: int) -> "RegionFocusTorch":
        """Give an RFM without it the image-position input (zero-initialised: same scores)."""
        if self.image_xy is None and frequencies > 0:
            self.config.image_xy = int(frequencies)
            self._make_image_xy(int(frequencies))
        return self

    def _with_image_xy(self, h: torch.Tensor, image_xy, hr_mask) -> torch.Tensor:
        if self.image_xy is None:
            return h
        if image_xy is None or hr_mask is None:
            raise ValueError("this RFM takes image_xy [L, 2] (the HR tokens' normalised centres)")
        xy = torch.as_tensor(image_xy, device=h.device).float().reshape(-1, 2)
        angles = xy[:, :, None] * self.xy_freq[None, None, :]                  # [L, 2, F]
        features = torch.cat([angles.sin(), angles.cos()], dim=-1).reshape(xy.shape[0], -1)
        mask = torch.as_tensor(hr_mask, device=h.device).to(h.dtype).reshape(-1, 1)
        return h + self.image_xy(features.to(self.image_xy.weight.dtype)).to(h.dtype) * mask

    # ---------------------------------------------------------------- math
    def _rope_tables(self, positions: torch.Tensor, dtype: torch.dtype):
        if positions.dim() == 2:        # M-RoPE [3, L]: section i of the frequencies from axis i
            axes = positions.float()[:, :, None] * self.inv_freq[None, None, :]   # [3, L, d/2]
            sections = self.config.mrope_section or [self.inv_freq.shape[0]]
            freqs = torch.cat([chunk[i % 3] for i, chunk in
                               enumerate(axes.split(list(sections), dim=-1))], dim=-1)
        else:
            freqs = positions.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        scale = self.config.attention_scaling
        return (emb.cos() * scale).to(dtype), (emb.sin() * scale).to(dtype)

    def _heads(self, proj: nn.Linear, x: torch.Tensor, n: int) -> torch.Tensor:
        # [L, D] -> [n, L, head_dim]
        return proj(x).view(x.shape[0], n, self.config.head_dim).transpose(0, 1)

    def _expand_kv(self, kv: torch.Tensor) -> torch.Tensor:
        groups = self.config.num_attention_heads // self.config.num_key_value_heads
        return kv.repeat_interleave(groups, dim=0) if groups > 1 else kv

    def _run_layer(self, layer: DecoderLayer, h: torch.Tensor, cos, sin) -> torch.Tensor:
        c = self.config
        x = layer.input_layernorm(h)
        q = _rope(self._heads(layer.self_attn.q_proj, x, c.num_attention_heads), cos, sin)
        k = _rope(self._heads(layer.self_attn.k_proj, x, c.num_key_value_heads), cos, sin)
        v = self._heads(layer.self_attn.v_proj, x, c.num_key_value_heads)
        out = causal_attention(q, k, v, self.graph_attention)                  # [L, H*d]
        h = h + layer.self_attn.o_proj(out)
        return h + layer.mlp(layer.post_attention_layernorm(h))

    def _row_logits(self, layer: DecoderLayer, h: torch.Tensor, query: torch.Tensor, cos, sin):
        """Attention logits of the query rows over all keys: [Q, H, L]; keys after a query get
        the dtype's minimum (softmax gives exactly 0 there, log_softmax stays finite)."""
        c = self.config
        x = layer.input_layernorm(h)
        xq = x.index_select(0, query)
        q = self._heads(layer.self_attn.q_proj, xq, c.num_attention_heads)       # [H, Q, d]
        q = _rope(q, cos.index_select(0, query), sin.index_select(0, query))
        k = self._expand_kv(_rope(self._heads(layer.self_attn.k_proj, x, c.num_key_value_heads),
                                  cos, sin))                                    # [H, L, d]
        logits = torch.matmul(q, k.transpose(1, 2)) / math.sqrt(c.head_dim)      # [H, Q, L]
        keys = torch.arange(h.shape[0], device=h.device)
        future = keys[None, :] > query[:, None]                                  # [Q, L]
        logits = logits.masked_fill(future[None], torch.finfo(logits.dtype).min)
        return logits.transpose(0, 1)                                            # [Q, H, L]

    def _prepare(self, inputs_embeds: torch.Tensor, positions=None, image_xy=None, hr_mask=None):
        h = inputs_embeds
        if h.dim() == 3:
            if h.shape[0] != 1:
                raise ValueError("RegionFocusTorch scores one sequence at a time (batch 1)")
            h = h[0]
        h = self._with_image_xy(h, image_xy, hr_mask)
        length = h.shape[0]
        if positions is None:
            positions = torch.arange(length, device=h.device)
        else:
            positions = torch.as_tensor(positions, device=h.device)
            if self.config.mrope_section is None or tuple(positions.shape) != (3, length):
                raise ValueError(f"positions [3, {length}] are for an M-RoPE RFM; this one is "
                                 f"{'M-RoPE' if self.config.mrope_section else 'plain RoPE'} "
                                 f"and got {tuple(positions.shape)}")
        cos, sin = self._rope_tables(positions, h.dtype)
        cos, sin = cos[None], sin[None]          # broadcast over heads: [1, L, d]
        return h, cos, sin

    @staticmethod
    def _query_tensor(query_index, device) -> torch.Tensor:
        return torch.as_tensor(query_index, dtype=torch.long, device=device).reshape(-1)

    def forward_attention_rows(self, inputs_embeds: torch.Tensor,
                               query_index: Union[int, Sequence[int], torch.Tensor],
                               positions=None, image_xy=None,
                               hr_mask=None) -> Dict[int, torch.Tensor]:
        """Attention logits (scaled q·k, pre-softmax) of the query row(s) at every selected layer.

        inputs_embeds: [L, D] or [1, L, D]. query_index: an int -> each value is [H, L]; a list or
        1-D tensor of Q indices -> [Q, H, L]. Keys after the query hold finfo.min. Returns
        {llm_layer_index: logits} for l1..lR in order (RFM layers 1..R); the scoring layer is
        config.layers[-1]. softmax over the whole row gives the layer's attention row; softmax over
        the HR slice gives the RFM score. Differentiable (use it for distillation)."""
        h, cos, sin = self._prepare(inputs_embeds, positions, image_xy, hr_mask)
        single = not isinstance(query_index, (list, tuple)) and (
            not torch.is_tensor(query_index) or query_index.dim() == 0)
        query = self._query_tensor(query_index, h.device)
        cos_rows, sin_rows = cos[0], sin[0]
        rows: Dict[int, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            if i >= 1:
                row = self._row_logits(layer, h, query, cos_rows, sin_rows)
                rows[int(self.config.layers[i - 1])] = row[0] if single else row
            if i < len(self.layers) - 1:
                h = self._run_layer(layer, h, cos, sin)
        return rows

    def score_logits(self, inputs_embeds: torch.Tensor, query_index, positions=None,
                     image_xy=None, hr_mask=None) -> torch.Tensor:
        """Scoring layer's logits [H, L] for one query (layers 0..R-1 run fully, no extra rows)."""
        h, cos, sin = self._prepare(inputs_embeds, positions, image_xy, hr_mask)
        for layer in self.layers[:-1]:
            h = self._run_layer(layer, h, cos, sin)
        query = self._query_tensor(query_index, h.device)[:1]
        return self._row_logits(self.layers[-1], h, query, cos[0], sin[0])[0]

    def scores(self, inputs_embeds: torch.Tensor, hr_mask: torch.Tensor,
               query_index: torch.Tensor, positions=None, image_xy=None) -> torch.Tensor:
        """What rfm.onnx computes: per head softmax over hr_mask positions, mean over heads; [L],
        0 outside the HR span."""
        logits = self.score_logits(inputs_embeds, query_index, positions, image_xy,
                                   hr_mask).float()  # [H, L]
        hr = hr_mask.to(torch.bool)[None, :]
        logits = logits.masked_fill(~hr, float("-inf"))
        probs = torch.softmax(logits, dim=-1).mean(dim=0)
        return torch.where(hr_mask.to(torch.bool), probs, torch.zeros_like(probs))

    def forward(self, inputs_embeds, hr_mask, query_index, positions=None, image_xy=None):
        return self.scores(inputs_embeds, hr_mask, query_index, positions, image_xy)

    # ---------------------------------------------------------------- persistence
    def save(self, path) -> Path:
        """rfm.safetensors: float32 weights, config JSON in the metadata (so it can be re-trained)."""
        from safetensors.torch import save_file

        path = Path(path)
        state = {k: v.detach().float().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(path), metadata={"rfm_config": json.dumps(self.config.to_dict())})
        return path

    @classmethod
    def load(cls, path) -> "RegionFocusTorch":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        if "rfm_config" not in meta:
            raise ValueError(f"{path} has no rfm_config metadata: not an RFM weights file")
        module = cls(RFMConfig.from_dict(json.loads(meta["rfm_config"])))
        module.load_state_dict(load_file(str(path)), strict=True)
        return module.eval()

    def export_onnx(self, path, fp16: bool = False) -> Path:
        from .export_rfm import export_rfm_onnx

        return export_rfm_onnx(self, path, fp16=fp16)
