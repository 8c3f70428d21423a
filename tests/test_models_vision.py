"""vision.onnx against the PyTorch LLaVA it came from (issue 4: parity at another batch size)."""

from __future__ import annotations

import numpy as np
import pytest

from rs_vqa_plugin.engine.bundle import load_bundle

pytest_plugins = ["tests.fixtures_models"]


@pytest.fixture(scope="module")
def llava(tiny_llava_dir):
    import torch
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, dtype=torch.float32).eval()


def _torch_reference(llava, pixels_nchw: np.ndarray):
    """HF's own feature path (get_image_features: layer -2, CLS dropped, projector), then 2x2
    average pooling, which equals bilinear halving for an even grid."""
    import torch
    from torch.nn import functional as F

    with torch.no_grad():
        out = llava.model.get_image_features(
            pixel_values=torch.from_numpy(pixels_nchw), vision_feature_layer=-2,
            vision_feature_select_strategy="default")
        feats = torch.stack(list(out.pooler_output))                 # [N, G*G, D]
        n, t, d = feats.shape
        G = int(round(t ** 0.5))
        pooled = F.avg_pool2d(feats.reshape(n, G, G, d).permute(0, 3, 1, 2), 2)
        pooled = pooled.permute(0, 2, 3, 1).reshape(n, -1, d)
    return feats.numpy(), pooled.numpy()


def test_onnx_vision_matches_torch_at_untraced_batch(tiny_bundle, llava):
    import onnxruntime as ort

    bundle = load_bundle(tiny_bundle)
    B = bundle.manifest.tile_size
    rng = np.random.default_rng(1)
    pixels = rng.normal(size=(5, 3, B, B)).astype(np.float32)     # traced with N=2
    session = ort.InferenceSession(str(bundle.vision_path), providers=["CPUExecutionProvider"])
    tokens, pooled = session.run(["tokens", "pooled"], {"pixels": pixels})
    ref_tokens, ref_pooled = _torch_reference(llava, pixels)
    assert tokens.shape == (5, bundle.manifest.patch_grid ** 2, bundle.manifest.hidden_size)
    assert pooled.shape == (5, bundle.manifest.pooled_grid ** 2, bundle.manifest.hidden_size)
    assert np.abs(tokens - ref_tokens).max() <= 1e-4
    assert np.abs(pooled - ref_pooled).max() <= 1e-4
    # Tiles differ from each other: the batch is not collapsed or broadcast.
    assert np.abs(pooled[0] - pooled[1]).max() > 1e-3


def test_vision_encoder_normalises_and_fills_padding_with_mean(tiny_bundle, llava):
    from rs_vqa_plugin.engine.vision import VisionEncoder

    bundle = load_bundle(tiny_bundle)
    m = bundle.manifest
    encoder = VisionEncoder(bundle, device="cpu")
    assert encoder.provider == "CPUExecutionProvider"
    rng = np.random.default_rng(2)
    tiles = rng.integers(0, 256, size=(3, m.tile_size, m.tile_size, 3), dtype=np.uint8)
    valid = np.ones(tiles.shape[:3], dtype=bool)
    valid[1, :, m.tile_size // 2:] = False                        # right half is padding
    pooled = encoder.encode_tiles(tiles, valid)
    assert pooled.shape == (3, m.pooled_grid, m.pooled_grid, m.hidden_size)
    mean = np.asarray(m.image_mean, np.float32)
    std = np.asarray(m.image_std, np.float32)
    expected = ((tiles / 255.0 - mean) / std).astype(np.float32)
    expected[~valid] = 0.0
    _, ref_pooled = _torch_reference(llava, np.ascontiguousarray(expected.transpose(0, 3, 1, 2)))
    assert np.abs(pooled.reshape(3, -1, m.hidden_size) - ref_pooled).max() <= 1e-4
    thumb = encoder.encode_thumbnail(tiles[0], valid[0])
    assert thumb.shape == (m.patch_grid, m.patch_grid, m.hidden_size)


def test_fp16_export_keeps_float32_interface(tiny_bundle, llava, tmp_path):
    """--fp16 halves the weights for GPU inference; the graph still takes and gives float32."""
    import onnxruntime as ort

    from rs_vqa_plugin.modeling.export_vision import (VisionGraph, export_vision_onnx,
                                                      vision_spec)

    spec = vision_spec(llava.config, llava.config.text_config.hidden_size)
    graph = VisionGraph(llava.model.vision_tower, llava.model.multi_modal_projector, spec).eval()
    path = export_vision_onnx(graph, tmp_path / "vision16.onnx", fp16=True)
    pixels = np.random.default_rng(3).normal(size=(3, 3, spec.tile_size, spec.tile_size))
    pixels = pixels.astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)"
    pooled = session.run(["pooled"], {"pixels": pixels})[0]
    assert pooled.dtype == np.float32
    _, ref = _torch_reference(llava, pixels)
    assert np.abs(pooled - ref).max() <= 2e-3 * max(1.0, np.abs(ref).max())
    assert path.stat().st_size < load_bundle(tiny_bundle).vision_path.stat().st_size
