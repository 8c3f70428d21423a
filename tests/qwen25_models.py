"""Tiny random Qwen2.5-VL folders for tests, built from configs (no download).

A real Qwen2.5-VL checkpoint is too large for the test machine; these share its architecture
(windowed + full vision blocks, 2x2 patch merger, M-RoPE decoder) at toy widths. The tokenizer is
a byte-level BPE trained offline with the family's special tokens."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@dataclass
class TinyQwenConfig:
    seed: int = 0
    vision_hidden: int = 32
    vision_depth: int = 3
    vision_heads: int = 2
    window_size: int = 112          # px: 4x4 merged tokens per window
    fullatt_blocks: List[int] = field(default_factory=lambda: [1])
    text_hidden: int = 64
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    mrope_section: List[int] = field(default_factory=lambda: [2, 3, 3])
    vocab_size: int = 600
    special_tokens: List[str] = field(default_factory=lambda: list(QWEN_SPECIAL))
    dtype: str = "float32"


def build_tiny_qwen25(cfg: TinyQwenConfig):
    """(Qwen2_5_VLForConditionalGeneration, tokenizer) with random weights from the seed."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from rs_vqa_plugin.modeling.tiny_model import train_tokenizer

    tokenizer = train_tokenizer(cfg.vocab_size, special_tokens=cfg.special_tokens,
                                template=QWEN_TEMPLATE)
    # A token left out of special_tokens (refusal tests) keeps a config id that nothing holds.
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in cfg.special_tokens}
    ids.update({t: len(tokenizer) - 1 for t in QWEN_SPECIAL if t not in ids})
    torch.manual_seed(cfg.seed)
    text = dict(vocab_size=len(tokenizer), hidden_size=cfg.text_hidden,
                intermediate_size=cfg.text_hidden * 2, num_hidden_layers=cfg.text_layers,
                num_attention_heads=cfg.text_heads, num_key_value_heads=cfg.text_kv_heads,
                max_position_embeddings=4096, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                 "mrope_section": list(cfg.mrope_section)},
                bos_token_id=None, eos_token_id=ids.get("<|im_end|>"),
                pad_token_id=ids.get("<|endoftext|>"))
    vision = dict(depth=cfg.vision_depth, hidden_size=cfg.vision_hidden,
                  intermediate_size=cfg.vision_hidden * 2, num_heads=cfg.vision_heads,
                  out_hidden_size=cfg.text_hidden, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, window_size=cfg.window_size,
                  fullatt_block_indexes=list(cfg.fullatt_blocks))
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                              image_token_id=ids.get("<|image_pad|>"),
                              video_token_id=ids.get("<|video_pad|>"),
                              vision_start_token_id=ids.get("<|vision_start|>"),
                              vision_end_token_id=ids.get("<|vision_end|>"))
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    return model, tokenizer


def write_tiny_qwen25(folder, cfg: TinyQwenConfig | None = None) -> Path:
    """Save the folder the way Hugging Face ships Qwen2.5-VL: config, safetensors, tokenizer,
    preprocessor_config.json with the CLIP normalisation the family uses."""
    import torch

    cfg = cfg or TinyQwenConfig()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, tokenizer = build_tiny_qwen25(cfg)
    model.to(getattr(torch, cfg.dtype)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Qwen2VLImageProcessor",
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2}, indent=2))
    return folder


def qwen_patches(pixels_nchw, patch_size: int = 14, merge: int = 2, temporal: int = 2):
    """Normalised images [N, 3, H, W] -> (flattened patches, grid_thw) in the order Qwen2-VL's
    image processor produces: each image repeated over the temporal patch, patches grouped by
    2x2 merge block. Written from the processor's documented layout, independently of the
    exporter, so that a parity test compares two implementations."""
    import numpy as np

    x = np.asarray(pixels_nchw, dtype=np.float32)
    n, c, h, w = x.shape
    gh, gw = h // patch_size, w // patch_size
    out, grids = [], []
    for image in x:
        frames = np.repeat(image[None], temporal, axis=0)                 # [T, C, H, W]
        p = frames.reshape(1, temporal, c, gh // merge, merge, patch_size, gw // merge, merge,
                           patch_size)
        p = p.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
        out.append(p.reshape(gh * gw, c * temporal * patch_size * patch_size))
        grids.append([1, gh, gw])
    return np.concatenate(out), np.asarray(grids, dtype=np.int64)
