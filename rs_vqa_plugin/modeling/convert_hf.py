"""Convert a transformers LLaVA-family folder into an rs-vqa bundle (the issue's path 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..engine import bundle as B
from ..engine.errors import InputError
from ..engine.progress import emit, progress_event
from ..engine.prompt import DEFAULT_SYSTEM_PROMPTS, IMAGE_PLACEHOLDER, choose_template

# Paper defaults (METHOD §5): tile cap 80 for Qwen2-7B, 40 for Vicuna-7B.
N_MAX = {"qwen2": 80, "llama": 40, "mistral": 40}
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>")


def convert_hf_llava(src, out_dir, rfm_layers: Optional[Sequence[int]] = None, fp16: bool = False,
                     provenance: Optional[dict] = None, licence: Optional[str] = None,
                     events=None, cancel=None, overwrite: bool = False) -> Path:
    """Export vision (+projector+pooling) and the copied RFM to ONNX, save the LLM; return out_dir."""
    import torch
    from transformers import AutoTokenizer

    from .bundle_writer import BundleWriter, check_target, rfm_manifest_section
    from .export_vision import VisionGraph, export_vision_onnx, vision_spec
    from .llava_parts import extract_causal_lm, image_normalisation, load_llava, source_dtype
    from .quiet import quiet_model_libraries
    from .rfm_torch import RegionFocusTorch

    quiet_model_libraries()
    check_target(out_dir, overwrite)
    src = Path(src).expanduser()

    def step(fraction: float, message: str) -> None:
        if cancel is not None:
            cancel.raise_if_cancelled()
        emit(events, progress_event("convert", fraction, message))

    step(0.0, f"loading {src}")
    parts = load_llava(src)
    tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True, trust_remote_code=False)
    hidden = parts.config.text_config.hidden_size
    spec = vision_spec(parts.config, hidden)
    mean, std = image_normalisation(src, parts.tower)
    with BundleWriter(out_dir, overwrite=overwrite) as writer, torch.no_grad():
        step(0.1, "exporting the vision encoder")
        # ONNX parts are exported in float32 (fp16 on request) whatever the checkpoint's dtype.
        graph = VisionGraph(parts.vision_tower.float(), parts.projector.float(), spec).eval()
        export_vision_onnx(graph, writer.path(B.VISION_ONNX), fp16=fp16)

        step(0.4, "copying and exporting the region focus module")
        lm = extract_causal_lm(parts)
        try:
            rfm = RegionFocusTorch.from_llm(lm, rfm_layers)
        except ValueError as exc:
            raise InputError(f"RFM layers for {src}: {exc}") from exc
        writer.save_rfm(rfm, fp16=fp16)

        step(0.6, "embeddings")
        embed = lm.get_input_embeddings().weight
        newline, newline_source = _newline(parts, tokenizer, embed)
        # Plain LLaVA has no learned separator; "\n" is what it sees between image and text.
        separator, separator_source = _token_embedding(tokenizer, embed, "\n")
        writer.save_embeddings(newline, separator)

        step(0.7, "saving the language model")
        writer.save_llm(lm.to(source_dtype(parts.config)), tokenizer)

        template, template_source = choose_template(tokenizer, parts.family)
        text = parts.config.text_config
        manifest = B.Manifest(
            format_version=B.FORMAT_VERSION, family=parts.family, tile_size=spec.tile_size,
            patch_size=spec.patch_size, patch_grid=spec.patch_grid, pooled_grid=spec.pooled_grid,
            hidden_size=hidden, image_mean=mean, image_std=std, thumbnail_size=spec.tile_size,
            alpha=0.25, n_max=N_MAX.get(parts.family, 80),
            rfm=rfm_manifest_section(rfm, "copied"),
            chat={"template": template, "template_source": template_source,
                  "system_prompt": DEFAULT_SYSTEM_PROMPTS.get(parts.family, ""),
                  "image_placeholder": IMAGE_PLACEHOLDER,
                  # LLaVA models were trained on the question text as written.
                  "question_text": "verbatim",
                  "stop_tokens": [t for t in STOP_TOKENS if t in tokenizer.get_vocab()]},
            provenance=dict(provenance or {"source": str(src.name), "converter": "hf-llava"}),
            licence=licence or "see the source model's licence", name=Path(out_dir).name,
            vision={"tower": parts.tower, "feature_layer": spec.feature_layer,
                    "drop_cls": spec.drop_cls, "pooling": "bilinear 2x2",
                    "source_class": type(parts.model).__name__, "fp16": bool(fp16)},
            llm={"model_type": text.model_type, "num_hidden_layers": text.num_hidden_layers,
                 "num_attention_heads": text.num_attention_heads,
                 "num_key_value_heads": getattr(text, "num_key_value_heads", None),
                 "intermediate_size": text.intermediate_size,
                 "max_position_embeddings": getattr(text, "max_position_embeddings", None),
                 "dtype": str(source_dtype(parts.config)).replace("torch.", "")},
            embeddings={"image_newline": newline_source, "image_separator": separator_source})
        step(0.9, "validating")
        result = writer.finish(manifest)
    step(1.0, f"bundle written to {result}")
    return result


def _token_embedding(tokenizer, embed, text: str):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if ids:
        return embed[ids[-1]].detach().float().numpy(), f"token embedding of {text!r}"
    return embed.detach().float().mean(0).numpy(), "mean token embedding"


def _newline(parts, tokenizer, embed):
    if parts.image_newline is not None:
        return parts.image_newline.detach().float().numpy(), "checkpoint image_newline"
    return _token_embedding(tokenizer, embed, "\n")
