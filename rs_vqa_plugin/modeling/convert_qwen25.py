"""Convert a Hugging Face Qwen2.5-VL folder (Qwen2_5_VLForConditionalGeneration, safetensors, no
remote code) into an rs-vqa bundle: `convert SRC OUT --from hf-qwen2.5-vl`.

What the bundle holds for this family (manifest):
- vision.onnx: the vision tower at one tile size B (a multiple of 28; --tile-size, default 336,
  12 x 12 = 144 merged tokens a tile, the paper's pyramid geometry), qwen25_vision.py; the
  thumbnail is one tile of B px too, so patch_grid = pooled_grid = B / 28.
- positions "mrope": explicit (t, h, w) positions per token, engine/mrope.py.
- newline "none": this family has no image-newline token.
- separator: the embeddings of <|vision_end|><|vision_start|> (closing the thumbnail, opening the
  pyramid tokens); chat image_start / image_end put <|vision_start|> before the thumbnail and
  <|vision_end|> after the last image token, as the family's own template does.
- rfm: copied from the LLM's own layers (training-free), with M-RoPE.
- llm/: the transformers model with its vision tower cut to zero blocks (the decoder runs from
  inputs_embeds with explicit position ids; vision.onnx holds the tower, so its weights are not
  stored twice: about 1.3 GB of a 7B bf16 checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..engine import bundle as B
from ..engine.errors import BundleError, InputError
from ..engine.progress import emit, progress_event
from ..engine.prompt import IMAGE_PLACEHOLDER, choose_template

MODEL_TYPE = "qwen2_5_vl"
DEFAULT_TILE = 336
N_MAX = 80
# The family's control tokens, by the config key that holds each id.
MARKERS = {"vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>",
           "image_token_id": "<|image_pad|>"}
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
SYSTEM_PROMPT = "You are a helpful assistant."
# Converting holds the checkpoint once as stored, plus float32 copies of the vision tower and the
# RFM layers and the ONNX exporter's working memory: a margin over the weights.
CONVERT_MEMORY_FACTOR = 1.6


def check_source(src: Path, memory_limit_mb: Optional[float] = None) -> dict:
    """Refuse, before loading anything, a folder that is not a usable Qwen2.5-VL: the file or key
    named. Returns the config as a dict."""
    from .llava_parts import LLAVA_CLASSES, check_safetensors, read_config

    raw = read_config(src)
    model_type = raw.get("model_type")
    if model_type != MODEL_TYPE:
        other = (" (a LLaVA-family folder: use --from hf-llava)" if model_type in LLAVA_CLASSES
                 else "")
        raise BundleError(f"{src / 'config.json'} is model_type {model_type!r}{other}; "
                          f"--from hf-qwen2.5-vl reads model_type '{MODEL_TYPE}' "
                          "(Qwen2_5_VLForConditionalGeneration).")
    check_safetensors(src)
    for key in MARKERS:
        if not isinstance(raw.get(key), int):
            what = (" (a video-only configuration: images need their own placeholder token)"
                    if key == "image_token_id" and isinstance(raw.get("video_token_id"), int) else "")
            raise BundleError(f"{src / 'config.json'} has no integer '{key}'{what}: this is not "
                              "a Qwen2.5-VL image model folder, or its config is incomplete.")
    vision = raw.get("vision_config") or {}
    if int(vision.get("spatial_merge_size", 2)) != 2:
        raise BundleError(f"{src / 'config.json'}: vision_config.spatial_merge_size is "
                          f"{vision.get('spatial_merge_size')}; rs-vqa reads the 2x2 merger only.")
    text = raw.get("text_config") or raw
    rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
    section = rope.get("mrope_section")
    heads = int(text.get("num_attention_heads") or 0)
    half = int(text.get("hidden_size", 0)) // max(heads, 1) // 2
    if not (isinstance(section, list) and len(section) == 3 and sum(section) == half):
        raise BundleError(f"{src / 'config.json'}: text rope_parameters.mrope_section is "
                          f"{section!r}; it must be three numbers adding up to half the head "
                          f"size ({half}).")
    check_memory(src, memory_limit_mb)
    return raw


def check_tokenizer(src: Path, raw: dict, tokenizer) -> None:
    """The family's control tokens exist in the tokenizer with the ids the config gives them."""
    vocab = tokenizer.get_vocab()
    for key, token in MARKERS.items():
        if token not in vocab:
            raise BundleError(f"The tokenizer in {src} (tokenizer.json) has no special token "
                              f"{token} ({key} in config.json): the folder is not a complete "
                              "Qwen2.5-VL image model.")
        if vocab[token] != raw[key]:
            raise BundleError(f"{src / 'config.json'} says {key} {raw[key]} but the tokenizer "
                              f"gives {token} the id {vocab[token]}: the config and the tokenizer "
                              "belong to different models.")


def check_memory(src: Path, limit_mb: Optional[float] = None) -> None:
    """Refuse a checkpoint the converting machine cannot hold (limit: the memory available now)."""
    from ..engine.budget import MB, available_mb, format_mb

    weights = sum(p.stat().st_size for p in src.glob("*.safetensors"))
    needed = weights * CONVERT_MEMORY_FACTOR / MB
    limit = available_mb() if limit_mb is None else float(limit_mb)
    if limit is not None and needed > limit:
        raise InputError(f"{src}: its *.safetensors weights are {format_mb(weights / MB)} and "
                         f"converting them needs about {format_mb(needed)} of memory, but "
                         f"{format_mb(limit)} is available on this machine: free memory or convert "
                         "on a machine with more.")



def convert_hf_qwen25(src, out_dir, rfm_layers: Optional[Sequence[int]] = None,
                      tile_size: int = DEFAULT_TILE, fp16: bool = False,
                      provenance: Optional[dict] = None, licence: Optional[str] = None,
                      events=None, cancel=None, overwrite: bool = False,
                      memory_limit_mb: Optional[float] = None) -> Path:
    """Export the vision tower and the copied M-RoPE RFM to ONNX, save the LLM; return out_dir."""
    import numpy as np
    import torch
    import transformers
    from transformers import AutoTokenizer

    from .bundle_writer import BundleWriter, check_target, rfm_manifest_section
    from .export_vision import export_vision_onnx
    from .llava_parts import image_normalisation, source_dtype
    from .quiet import quiet_model_libraries
    from .qwen25_vision import QwenVisionGraph
    from .rfm_torch import RegionFocusTorch

    quiet_model_libraries()
    check_target(out_dir, overwrite)
    src = Path(src).expanduser()
    if int(tile_size) < 28 or int(tile_size) % 28:
        raise InputError(f"--tile-size {tile_size} must be a positive multiple of 28 (14 px "
                         "patches merged 2x2), e.g. 336.")

    def step(fraction: float, message: str) -> None:
        if cancel is not None:
            cancel.raise_if_cancelled()
        emit(events, progress_event("convert", fraction, message))

    step(0.0, f"checking {src}")
    raw = check_source(src, memory_limit_mb)
    tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True, trust_remote_code=False)
    check_tokenizer(src, raw, tokenizer)
    step(0.05, f"loading {src}")
    model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
        src, dtype=_stored_dtype(raw), use_safetensors=True, trust_remote_code=False,
        local_files_only=True).eval()
    config = model.config
    text = config.text_config
    hidden = int(text.hidden_size)
    mean, std = image_normalisation(src, "clip")
    with BundleWriter(out_dir, overwrite=overwrite) as writer, torch.no_grad():
        step(0.1, f"exporting the vision tower at {tile_size} px tiles")
        import copy

        tower = copy.deepcopy(model.model.visual).float().eval()
        graph = QwenVisionGraph(tower, int(tile_size)).eval()
        export_vision_onnx(graph, writer.path(B.VISION_ONNX), fp16=fp16)
        spec = graph.spec
        del graph, tower

        step(0.4, "copying and exporting the region focus module (M-RoPE)")
        try:
            rfm = RegionFocusTorch.from_llm(model.model.language_model, rfm_layers)
        except ValueError as exc:
            raise InputError(f"RFM layers for {src}: {exc}") from exc
        writer.save_rfm(rfm, fp16=fp16)

        step(0.6, "embeddings")
        embed = model.get_input_embeddings().weight.detach().float()
        start, end = raw["vision_start_token_id"], raw["vision_end_token_id"]
        separator = embed[[end, start]].numpy()
        writer.save_embeddings(np.zeros(hidden, np.float32), separator)

        step(0.7, "saving the language model")
        vision_config = config.vision_config.to_dict()
        _cut_vision_tower(model)
        writer.save_llm(model, tokenizer)

        step(0.9, "validating")
        # The family's template (the tokenizer's own where it takes text content; Qwen2.5-VL's
        # does), else ChatML, which renders a text conversation the same way.
        template, template_source = choose_template(tokenizer, "qwen2")
        manifest = B.Manifest(
            format_version=B.FORMAT_VERSION, family=MODEL_TYPE, tile_size=spec.tile_size,
            patch_size=spec.patch_size, patch_grid=spec.patch_grid, pooled_grid=spec.pooled_grid,
            hidden_size=hidden, image_mean=mean, image_std=std, thumbnail_size=spec.tile_size,
            newline="none", separator="tokens <|vision_end|><|vision_start|>",
            positions="mrope", alpha=0.25, n_max=N_MAX,
            rfm=rfm_manifest_section(rfm, "copied"),
            chat={"template": template, "template_source": template_source,
                  "system_prompt": SYSTEM_PROMPT, "image_placeholder": IMAGE_PLACEHOLDER,
                  "user_turn": "{image}{question}",
                  "image_start": MARKERS["vision_start_token_id"],
                  "image_end": MARKERS["vision_end_token_id"],
                  "question_text": "verbatim",
                  "stop_tokens": [t for t in STOP_TOKENS if t in tokenizer.get_vocab()]},
            provenance=dict(provenance or {"source": str(src.name),
                                           "converter": "hf-qwen2.5-vl"}),
            licence=licence or "see the source model's licence", name=Path(out_dir).name,
            vision={"tower": "qwen2.5-vl", "patch_size": int(vision_config["patch_size"]),
                    "spatial_merge_size": 2, "window_size": int(vision_config["window_size"]),
                    "depth": int(vision_config["depth"]),
                    "fullatt_block_indexes": list(vision_config["fullatt_block_indexes"]),
                    "pooling": "the tower's 2x2 patch merger",
                    "source_class": type(model).__name__, "fp16": bool(fp16)},
            llm={"model_type": text.model_type, "num_hidden_layers": text.num_hidden_layers,
                 "num_attention_heads": text.num_attention_heads,
                 "num_key_value_heads": text.num_key_value_heads,
                 "intermediate_size": text.intermediate_size,
                 "max_position_embeddings": text.max_position_embeddings,
                 "mrope_section": list(rfm.config.mrope_section),
                 "dtype": str(source_dtype(config)).replace("torch.", "")},
            embeddings={"image_newline": "unused (newline none)",
                        "image_separator": "token embeddings of <|vision_end|>, <|vision_start|>"})
        result = writer.finish(manifest)
    step(1.0, f"bundle written to {result}")
    return result


def _cut_vision_tower(model) -> None:
    """Drop the tower's blocks (and say so in the config): llm/ then loads as the same class with
    a zero-block tower, nothing missing or unexpected, and never runs it (the engine encodes with
    vision.onnx). The patch embedding and merger stay: small, and needed for the class to load."""
    from torch import nn

    model.model.visual.blocks = nn.ModuleList()
    model.config.vision_config.depth = 0
    model.config.vision_config.fullatt_block_indexes = []


def _stored_dtype(raw: dict):
    from .llava_parts import _raw_dtype

    return _raw_dtype(raw)
