"""Export the RFM's scoring (RegionFocusTorch.scores) to rfm.onnx with a dynamic sequence length."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch

from .onnx_io import external_data_needed, strip_source_metadata
from .rfm_attention import GRAPH_ATTENTION

INPUT_NAMES = ["inputs_embeds", "hr_mask", "query_index"]
OUTPUT_NAMES = ["scores"]


class _ScoringGraph(torch.nn.Module):
    """inputs_embeds [1, L, D] float32, hr_mask [L] bool, query_index [] int64 -> scores [L]."""

    def __init__(self, rfm, fp16: bool):
        super().__init__()
        self.rfm = rfm
        self.fp16 = fp16

    def forward(self, inputs_embeds, hr_mask, query_index, position_ids=None, image_xy=None):
        # position_ids: M-RoPE families; image_xy: RFMs with image positions (keyword inputs)
        embeds = inputs_embeds.half() if self.fp16 else inputs_embeds
        return self.rfm.scores(embeds, hr_mask, query_index, position_ids, image_xy).float()


def _half_keeping_rope(rfm):
    """A float16 copy whose RoPE frequencies stay float32. Halved, inv_freq carries a relative
    error of up to 5e-4, which turns a rotation by up to 0.6 rad at position 4,000 and several
    radians at 12,000 (the length of one N_max = 80 pass of a 7B bundle): the scores of far
    tokens would be wrong, not merely rounded. The rotation tables are computed in float32 and
    only then cast to the layers' dtype (RegionFocusTorch._rope_tables)."""
    module = copy.deepcopy(rfm).half()
    module.inv_freq = rfm.inv_freq.detach().float().clone()
    return module


def export_rfm_onnx(rfm, path, fp16: bool = False, example_length: int = 48,
                    attention: str = "gqa") -> Path:
    """Write rfm.onnx (inputs/outputs fixed by the bundle contract). fp16 halves the weights for
    GPU inference; inputs and outputs stay float32 so the engine is unchanged. attention: "gqa"
    (one com.microsoft GroupQueryAttention node per full layer, memory linear in L) or "eager"
    (the former per-head L x L graph, kept to benchmark against)."""
    if attention not in GRAPH_ATTENTION:
        raise ValueError(f"attention must be one of {GRAPH_ATTENTION}, not {attention!r}")
    path = Path(path)
    module = _half_keeping_rope(rfm) if fp16 else rfm.float()
    graph = _ScoringGraph(module.eval(), fp16).eval()
    hidden = rfm.config.hidden_size
    example = (torch.randn(1, example_length, hidden),
               torch.arange(example_length) % 3 == 0,
               torch.tensor(example_length - 1, dtype=torch.long))
    length = torch.export.Dim("L", min=2, max=1 << 20)
    dynamic = {"inputs_embeds": {1: length}, "hr_mask": {0: length}, "query_index": None}
    names = list(INPUT_NAMES)
    extra = {}
    if rfm.config.mrope_section:
        # M-RoPE families take (t, h, w) per token; distinct axes in the example so that the
        # trace cannot fold them into one.
        steps = torch.arange(example_length)
        extra["position_ids"] = torch.stack([steps, steps + steps % 5, steps + steps % 7])
        dynamic["position_ids"] = {1: length}
        names.append("position_ids")
    if rfm.config.image_xy:
        extra["image_xy"] = torch.rand(example_length, 2)
        dynamic["image_xy"] = {0: length}
        names.append("image_xy")
    previous, module.graph_attention = module.graph_attention, attention
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, example, kwargs=extra or None, dynamo=True,
                                        input_names=names,
                                        output_names=OUTPUT_NAMES, dynamic_shapes=dynamic,
                                        verbose=False)
            program.save(str(path), external_data=external_data_needed(graph))
    finally:
        module.graph_attention = previous
    strip_source_metadata(path)
    return path
