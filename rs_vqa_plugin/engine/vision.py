"""The vision encoder (tower + projector + 2x2 pooling) in ONNX Runtime: tiles in, token grids out."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import InputError
from .onnx_session import make_session, run_session

# Tiles per ONNX Runtime call: bounds peak memory (CLIP-L activations are ~100 MB per tile).
BATCH = 8


class VisionEncoder:
    """encode_tiles -> pooled [N, g, g, D] for pyramid tiles; encode_thumbnail -> [G, G, D]."""

    def __init__(self, bundle, device: str = "auto", threads: int = 0):
        m = bundle.manifest
        self.tile_size, self.patch_grid, self.pooled_grid = m.tile_size, m.patch_grid, m.pooled_grid
        self.hidden_size = m.hidden_size
        self._mean = np.asarray(m.image_mean, dtype=np.float32) * 255.0
        self._scale = 1.0 / (np.asarray(m.image_std, dtype=np.float32) * 255.0)
        self.session, self.provider = make_session(bundle.vision_path, device, threads)

    def normalise(self, pixels: np.ndarray, valid: Optional[np.ndarray]) -> np.ndarray:
        """uint8 [N,B,B,3] -> float32 [N,3,B,B]; invalid pixels become the mean, i.e. 0."""
        B = self.tile_size
        if pixels.ndim != 4 or pixels.shape[1:] != (B, B, 3):
            raise InputError(f"Tiles must be [N, {B}, {B}, 3] uint8, got {pixels.shape}.")
        x = (pixels.astype(np.float32) - self._mean) * self._scale
        if valid is not None:
            x[~np.asarray(valid, dtype=bool)] = 0.0
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def _run(self, pixels, valid, output: str, cancel=None) -> np.ndarray:
        x = self.normalise(np.asarray(pixels), valid)
        chunks = [run_session(self.session, [output], {"pixels": x[i:i + BATCH]}, cancel)[0]
                  for i in range(0, x.shape[0], BATCH)]
        return np.concatenate(chunks, axis=0) if chunks else np.zeros(
            (0, (self.pooled_grid if output == "pooled" else self.patch_grid) ** 2,
             self.hidden_size), np.float32)

    def encode_tiles(self, pixels: np.ndarray, valid: Optional[np.ndarray] = None,
                     cancel=None) -> np.ndarray:
        g = self.pooled_grid
        out = self._run(pixels, valid, "pooled", cancel)
        return out.reshape(out.shape[0], g, g, self.hidden_size).astype(np.float32, copy=False)

    def encode_thumbnail(self, pixels: np.ndarray, valid: Optional[np.ndarray] = None,
                         cancel=None) -> np.ndarray:
        G = self.patch_grid
        out = self._run(np.asarray(pixels)[None], None if valid is None else
                        np.asarray(valid)[None], "tokens", cancel)
        return out.reshape(G, G, self.hidden_size).astype(np.float32, copy=False)
