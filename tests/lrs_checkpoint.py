"""A synthetic checkpoint in the released LRS-VQA layout (llava-largeimg-*), at tiny dimensions.

Same file layout, config keys and weight key names as the authors' released checkpoints (see the
docstring of rs_vqa_plugin.modeling.convert_lrs), random weights; the RFM ("token_pruner") gets
weights of its own, different from the LLM layers it would be copied from, as after training.

    from tests.lrs_checkpoint import write_lrs_checkpoint
    src = write_lrs_checkpoint(tmp_path / "llava-largeimg-tiny", family="qwen2")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Sequence

TILE = 112
PATCH = 14
VISION_HIDDEN = 32
TEXT_HIDDEN = 64
TEXT_LAYERS = 4
RFM_LAYERS = (1, 3)
PROJECTOR_PREFIX = "model.mm_projector."
RFM_PREFIX = "model.mm_projector.token_pruner."
VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."


def _tokenizer(family: str):
    from rs_vqa_plugin.modeling.tiny_model import train_tokenizer

    tok = train_tokenizer(600)
    if family == "llama":   # Vicuna: <s> / </s> / <unk> like LLaMA's sentencepiece vocabulary
        tok.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    tok.chat_template = None   # the released tokenizers carry no LLaVA prompt; the converter sets it
    return tok


def _text_config(family: str, vocab: int, eos_id: int):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab, hidden_size=TEXT_HIDDEN, intermediate_size=128,
                  num_hidden_layers=TEXT_LAYERS, num_attention_heads=4, tie_word_embeddings=False,
                  eos_token_id=eos_id)
    if family == "qwen2":
        return Qwen2Config(num_key_value_heads=2, max_position_embeddings=32768,
                           rope_theta=1000000.0, rms_norm_eps=1e-6, **common)
    return LlamaConfig(num_key_value_heads=4, max_position_embeddings=4096, rms_norm_eps=1e-5,
                       **common)


def _vision_config():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=VISION_HIDDEN, intermediate_size=64, num_hidden_layers=3,
                            num_attention_heads=2, image_size=TILE, patch_size=PATCH,
                            projection_dim=VISION_HIDDEN, hidden_act="quick_gelu")


def released_config(family: str, text_cfg, vision_tower: str, layers: Sequence[int]) -> dict:
    """config.json as the authors' training script leaves it (LLaVA keys + the RFM's keys)."""
    base = {k: v for k, v in text_cfg.to_dict().items()
            if k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                     "rms_norm_eps", "tie_word_embeddings", "eos_token_id", "hidden_act")}
    rope = getattr(text_cfg, "rope_parameters", None) or {}
    base["rope_theta"] = float(rope.get("rope_theta", getattr(text_cfg, "rope_theta", 10000.0)))
    arch = {"qwen2": ("LlavaQwenForCausalLM", "llava_qwen"),
            "llama": ("LlavaLlamaForCausalLM", "llava_llama")}[family]
    base.update({
        "architectures": [arch[0]], "model_type": arch[1], "torch_dtype": "bfloat16",
        "transformers_version": "4.37.2", "use_cache": True, "hidden_act": "silu",
        "mm_vision_tower": vision_tower, "mm_hidden_size": VISION_HIDDEN,
        "mm_projector_type": "mlp2x_gelu_after_distillpruner", "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "mm_patch_merge_type": "spatial_unpad",
        "mm_spatial_pool_mode": "bilinear", "image_aspect_ratio": "slice",
        "slice_block_size": TILE, "vision_patch_size": PATCH, "max_block_num": 3,
        "llm_layer_list": list(layers), "select_stu_state_layer": 1, "llm_use_last_text": True,
        "use_mm_proj": True, "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "tokenizer_model_max_length": 8192 if family == "qwen2" else 2048,
        "tokenizer_padding_side": "right", "upscale_module": False,
        "concat_global_img_feature": True, "image_grid_pinpoints": None,
    })
    if family == "qwen2":
        base.update({"use_sliding_window": False, "sliding_window": 32768})
    return base


def released_tensors(family: str, seed: int, layers: Sequence[int], vocab: int, eos_id: int,
                     include_vision: bool = True) -> Dict[str, "torch.Tensor"]:
    """All tensors with their released key names (bf16, like the authors' checkpoints)."""
    import torch
    from transformers import AutoModelForCausalLM, CLIPVisionModel

    torch.manual_seed(seed)
    text_cfg = _text_config(family, vocab, eos_id)
    llm = AutoModelForCausalLM.from_config(text_cfg)
    tensors = dict(llm.state_dict())        # model.embed_tokens, model.layers.*, lm_head.weight
    if include_vision:
        for key, value in CLIPVisionModel(_vision_config()).state_dict().items():
            key = key[len("vision_model."):] if key.startswith("vision_model.") else key
            tensors[VISION_PREFIX + key] = value
    tensors[PROJECTOR_PREFIX + "mlp_projector.0.weight"] = torch.randn(TEXT_HIDDEN, VISION_HIDDEN) * 0.1
    tensors[PROJECTOR_PREFIX + "mlp_projector.0.bias"] = torch.randn(TEXT_HIDDEN) * 0.01
    tensors[PROJECTOR_PREFIX + "mlp_projector.2.weight"] = torch.randn(TEXT_HIDDEN, TEXT_HIDDEN) * 0.1
    tensors[PROJECTOR_PREFIX + "mlp_projector.2.bias"] = torch.randn(TEXT_HIDDEN) * 0.01
    tensors["model.image_newline"] = torch.randn(TEXT_HIDDEN) * 0.1
    # The trained RFM: R+1 decoder layers and a norm of the LLM's shapes, weights of their own.
    trained = AutoModelForCausalLM.from_config(text_cfg)
    for i in range(len(layers) + 1):
        for key, value in trained.model.layers[i].state_dict().items():
            tensors[f"{RFM_PREFIX}layers.{i}.{key}"] = value
    tensors[RFM_PREFIX + "norm.weight"] = 1.0 + 0.1 * torch.randn(TEXT_HIDDEN)
    return {k: v.detach().to(torch.bfloat16).contiguous() for k, v in tensors.items()}


def write_lrs_checkpoint(folder, family: str = "qwen2", seed: int = 0,
                         layers: Sequence[int] = RFM_LAYERS, include_vision: bool = True,
                         shards: int = 2, pickle_only: bool = False,
                         clip_weights: bool = False) -> Path:
    """Write config.json, sharded safetensors + model.safetensors.index.json, tokenizer files and
    a tiny CLIP folder (referenced by mm_vision_tower, as an absolute local path). include_vision
    False leaves the tower's weights out of the checkpoint (the reference reloads the tower from
    mm_vision_tower); clip_weights puts random tower weights into the CLIP folder."""
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(family)
    eos_id = tok.convert_tokens_to_ids(tok.eos_token)
    vision_dir = folder.parent / (folder.name + "-clip")
    vision_dir.mkdir(exist_ok=True)
    if clip_weights:
        from transformers import CLIPVisionModel

        torch.manual_seed(seed + 7)
        CLIPVisionModel(_vision_config()).save_pretrained(vision_dir, safe_serialization=True)
    else:
        _vision_config().save_pretrained(vision_dir)
    (vision_dir / "preprocessor_config.json").write_text(json.dumps({
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "crop_size": {"height": TILE, "width": TILE}, "size": {"shortest_edge": TILE}}))
    tensors = released_tensors(family, seed, layers, len(tok), eos_id, include_vision)
    config = released_config(family, _text_config(family, len(tok), eos_id), str(vision_dir),
                             layers)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tok.save_pretrained(folder)
    keys = sorted(tensors)
    if pickle_only:
        torch.save(tensors, folder / "pytorch_model.bin")
        return folder
    names = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    weight_map = {}
    for i, name in enumerate(names):
        part = {k: tensors[k] for k in keys[i::shards]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return folder
