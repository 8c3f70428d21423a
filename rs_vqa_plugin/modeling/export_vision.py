"""Export vision tower + projector + 2x2 bilinear pooling of a LLaVA-family model to vision.onnx."""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .onnx_io import external_data_needed, strip_source_metadata

INPUT_NAMES = ["pixels"]
OUTPUT_NAMES = ["tokens", "pooled"]


@dataclass(frozen=True)
class VisionSpec:
    tile_size: int        # B
    patch_size: int
    patch_grid: int       # G = B / patch
    pooled_grid: int      # g = ceil(G / 2)
    hidden_size: int      # D, the LLM's width (after the projector)
    feature_layer: int    # index into the tower's hidden states (LLaVA: -2)
    drop_cls: bool        # LLaVA 'default' strategy drops the CLS token


class VisionGraph(nn.Module):
    """pixels [N,3,B,B] (normalised) -> tokens [N, G*G, D] (projected), pooled [N, g*g, D].

    Runs only the tower layers the selected hidden state needs (LLaVA's layer -2 skips the last)."""

    def __init__(self, tower: nn.Module, projector: nn.Module, spec: VisionSpec):
        super().__init__()
        inner = getattr(tower, "vision_model", tower)
        self.embeddings = inner.embeddings
        self.pre_norm = getattr(inner, "pre_layrnorm", None)   # CLIP has one, SigLIP does not
        layers = inner.encoder.layers
        depth = len(layers)
        # hidden_states[0] is the embedding output, hidden_states[k] the output of layer k.
        keep = spec.feature_layer if spec.feature_layer >= 0 else depth + 1 + spec.feature_layer
        if not 0 <= keep <= depth:
            raise ValueError(f"vision_feature_layer {spec.feature_layer} is outside a "
                             f"{depth}-layer tower")
        self.layers = nn.ModuleList(list(layers)[:keep])
        self.projector = projector
        self.spec = spec

    def forward(self, pixels: torch.Tensor):
        h = self.embeddings(pixels)
        if self.pre_norm is not None:
            h = self.pre_norm(h)
        for layer in self.layers:
            h = layer(h, None)
        if self.spec.drop_cls:
            h = h[:, 1:]
        tokens = self.projector(h)
        n, G, g = tokens.shape[0], self.spec.patch_grid, self.spec.pooled_grid
        grid = tokens.reshape(n, G, G, -1).permute(0, 3, 1, 2)
        # METHOD §2: bilinear 2x2 down-sampling (for even G exactly the mean of each 2x2 block).
        pooled = F.interpolate(grid, size=(g, g), mode="bilinear", align_corners=False)
        pooled = pooled.permute(0, 2, 3, 1).reshape(n, g * g, -1)
        return tokens, pooled


def vision_spec(config, hidden_size: int) -> VisionSpec:
    """Read the LLaVA-family config (vision_config + feature selection) into a VisionSpec."""
    vc = config.vision_config
    layer = config.vision_feature_layer
    if not isinstance(layer, int):
        raise ValueError(f"vision_feature_layer {layer!r} (several layers concatenated) is not "
                         "supported: convert a model that selects one layer")
    strategy = getattr(config, "vision_feature_select_strategy", "default")
    grid = vc.image_size // vc.patch_size
    # SigLIP towers have no CLS token, so 'default' must not drop a patch there.
    has_cls = vc.model_type != "siglip_vision_model"
    return VisionSpec(tile_size=vc.image_size, patch_size=vc.patch_size, patch_grid=grid,
                      pooled_grid=math.ceil(grid / 2), hidden_size=hidden_size,
                      feature_layer=layer, drop_cls=(strategy == "default" and has_cls))


def export_vision_onnx(graph: VisionGraph, path, fp16: bool = False, example_batch: int = 2) -> Path:
    """Write vision.onnx with a dynamic tile batch; fp16 weights keep float32 inputs/outputs."""
    path = Path(path)
    spec = graph.spec
    module = _Fp16Wrapper(copy.deepcopy(graph).half()) if fp16 else graph.float()
    example = (torch.randn(example_batch, 3, spec.tile_size, spec.tile_size),)
    batch = torch.export.Dim("N", min=1, max=4096)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module.eval(), example, dynamo=True, input_names=INPUT_NAMES,
                                    output_names=OUTPUT_NAMES,
                                    dynamic_shapes={"pixels": {0: batch}}, verbose=False)
        program.save(str(path), external_data=external_data_needed(module))
    strip_source_metadata(path)
    return path


class _Fp16Wrapper(nn.Module):
    def __init__(self, graph: VisionGraph):
        super().__init__()
        # Not named `graph`: that would shadow torch.fx's GraphModule.graph during export.
        self.encoder = graph

    def forward(self, pixels):
        tokens, pooled = self.encoder(pixels.half())
        return tokens.float(), pooled.float()
