"""The Qwen2.5-VL vision tower as a fixed-size, batched graph for vision.onnx.

transformers runs the tower on a packed list of patches of any size (grid_thw, cu_seqlens). A
bundle needs one tile size B (a multiple of 28) and a batch of tiles, so everything that depends
only on the size is computed once here and becomes a constant of the graph:

- patch embedding: a still image is the same frame repeated over the temporal patch, so the
  Conv3d equals a Conv2d whose kernel is the temporal sum of the 3D kernel;
- the patches in 2x2 merge-block order, then in window order (the merged units of each window of
  window_size px together), the 2D rotary tables (row, col) in that order;
- windowed blocks: attention only within a window (a block-diagonal mask); full blocks
  (fullatt_block_indexes): attention over the whole tile;
- the merger (RMSNorm, 4 patches concatenated, MLP), then back to raster order of the merged grid.

Output: [N, (B/28)^2, D] merged tokens, raster order; both of vision.onnx's outputs (`tokens`
for the thumbnail, `pooled` for pyramid tiles) are these: the merger is this family's 2x2 pooling.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .export_vision import VisionSpec


def window_order(grid: int, merged_window: int) -> torch.Tensor:
    """Merged-unit indices (raster order of the grid x grid merged tokens) in window order: windows
    of merged_window x merged_window units raster-ordered, units raster-ordered inside each; the
    last row/column of windows is smaller when grid is not a multiple (as transformers pads)."""
    order = []
    for wr in range(0, grid, merged_window):
        for wc in range(0, grid, merged_window):
            for r in range(wr, min(wr + merged_window, grid)):
                order += [r * grid + c for c in range(wc, min(wc + merged_window, grid))]
    return torch.tensor(order, dtype=torch.long)


def window_ids(grid: int, merged_window: int) -> torch.Tensor:
    """The window of each merged unit, in window order (for the block-diagonal mask)."""
    ids = []
    k = 0
    for wr in range(0, grid, merged_window):
        for wc in range(0, grid, merged_window):
            rows = min(wr + merged_window, grid) - wr
            cols = min(wc + merged_window, grid) - wc
            ids += [k] * (rows * cols)
            k += 1
    return torch.tensor(ids, dtype=torch.long)


class QwenVisionGraph(nn.Module):
    """pixels [N, 3, B, B] (normalised) -> (tokens, pooled), both [N, (B/28)^2, D]."""

    def __init__(self, tower: nn.Module, tile_size: int):
        super().__init__()
        c = tower.config
        patch, merge = int(c.patch_size), int(c.spatial_merge_size)
        unit = patch * merge
        if tile_size % unit:
            raise ValueError(f"tile size {tile_size} must be a multiple of {unit} (patch "
                             f"{patch} x merge {merge})")
        self.patch, self.merge = patch, merge
        self.grid = tile_size // unit                  # merged tokens per side
        self.heads = int(c.num_heads)
        self.dim = int(c.hidden_size)
        self.head_dim = self.dim // self.heads
        weight = tower.patch_embed.proj.weight.detach()          # [C, 3, T, p, p]
        self.embed = nn.Conv2d(3, self.dim, patch, stride=patch, bias=False)
        with torch.no_grad():
            self.embed.weight.copy_(weight.sum(dim=2))
        self.blocks = tower.blocks
        self.merger = tower.merger
        self.full = [i in set(c.fullatt_block_indexes) for i in range(len(tower.blocks))]
        merged_window = max(int(c.window_size) // merge // patch, 1)
        order = window_order(self.grid, merged_window)
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("restore", torch.argsort(order), persistent=False)
        same = window_ids(self.grid, merged_window).repeat_interleave(merge * merge)
        self.register_buffer("window_mask", same[:, None] == same[None, :], persistent=False)
        cos, sin = self._rotary(tower)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.spec = VisionSpec(tile_size=tile_size, patch_size=unit, patch_grid=self.grid,
                               pooled_grid=self.grid, hidden_size=int(c.out_hidden_size),
                               feature_layer=-1, drop_cls=False)

    def _rotary(self, tower):
        """cos/sin [S, head_dim] of each patch's (row, col) in patch units, window order."""
        patches = self.grid * self.merge
        rows, cols = torch.meshgrid(torch.arange(patches), torch.arange(patches), indexing="ij")
        m, g = self.merge, self.grid
        # merge-block order: (block row, block col, row in block, col in block)
        rows = rows.reshape(g, m, g, m).permute(0, 2, 1, 3).reshape(-1, m * m)
        cols = cols.reshape(g, m, g, m).permute(0, 2, 1, 3).reshape(-1, m * m)
        inv = tower.rotary_pos_emb.inv_freq.detach().float()
        def table(pos):
            return pos[..., None].float() * inv                  # [units, m*m, head_dim/4]
        freqs = torch.cat([table(rows), table(cols)], dim=-1)
        freqs = torch.cat([freqs, freqs], dim=-1)                 # [units, m*m, head_dim]
        order = window_order(g, max(int(tower.config.window_size) // m // self.patch, 1))
        freqs = freqs[order].reshape(-1, freqs.shape[-1])
        return freqs.cos(), freqs.sin()

    def _attention(self, block, x, mask):
        n, s, _ = x.shape
        qkv = block.attn.qkv(x).reshape(n, s, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                          # [N, H, S, d]
        q = q * self.cos + _rotate_half(q) * self.sin
        k = k * self.cos + _rotate_half(k) * self.sin
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return block.attn.proj(out.transpose(1, 2).reshape(n, s, self.dim))

    def forward(self, pixels: torch.Tensor):
        n = pixels.shape[0]
        m, g = self.merge, self.grid
        h = self.embed(pixels)                                    # [N, C, gm, gm]
        h = h.reshape(n, self.dim, g, m, g, m).permute(0, 2, 4, 3, 5, 1)
        h = h.reshape(n, g * g, m * m, self.dim)[:, self.order].reshape(n, -1, self.dim)
        for block, full in zip(self.blocks, self.full):
            mask = None if full else self.window_mask
            h = h + self._attention(block, block.norm1(h), mask)
            h = h + block.mlp(block.norm2(h))
        merged = self.merger.mlp(self.merger.ln_q(h).reshape(n, g * g, -1))
        tokens = merged[:, self.restore]
        return tokens, tokens


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def merged_grid(tile_size: int) -> int:
    return int(math.floor(tile_size / 28))
