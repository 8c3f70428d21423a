"""Open a transformers LLaVA-family folder and take it apart: vision tower, projector, LLM, newline."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..engine.errors import BundleError

# model_type -> transformers class name (LLaVA-1.5, LLaVA-NeXT, LLaVA-OneVision)
LLAVA_CLASSES = {"llava": "LlavaForConditionalGeneration",
                 "llava_next": "LlavaNextForConditionalGeneration",
                 "llava_onevision": "LlavaOnevisionForConditionalGeneration"}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
SIGLIP_MEAN = SIGLIP_STD = [0.5, 0.5, 0.5]
LLM_FAMILIES = ("qwen2", "llama", "mistral")


@dataclass
class LlavaParts:
    model: object               # the whole LLaVA model (eval, float32)
    config: object
    vision_tower: object
    projector: object
    language_model: object      # the base decoder (embed_tokens, layers, norm)
    lm_head: object
    image_newline: Optional[object]   # LLaVA-NeXT / OneVision learned newline, else None
    family: str                 # LLM family
    tower: str                  # 'clip' | 'siglip'


def read_config(src: Path) -> dict:
    path = src / "config.json"
    if not path.is_file():
        raise BundleError(f"{path} is missing: {src} is not a transformers model folder.")
    return json.loads(path.read_text(encoding="utf-8"))


def check_safetensors(src: Path) -> None:
    if not list(src.glob("*.safetensors")):
        pickles = [p.name for p in src.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        hint = (f" ({', '.join(pickles[:3])} are pickle files, refused because loading them "
                "can run arbitrary code)") if pickles else ""
        raise BundleError(f"{src} has no *.safetensors weights{hint}: convert the checkpoint to "
                          "safetensors first.")


def load_llava(src, dtype=None) -> LlavaParts:
    """Load a LLaVA-family folder offline, safetensors only, no remote code. dtype None: the
    checkpoint's own (bf16 stays bf16; the exporters make float32 copies of what they need)."""
    import torch
    import transformers

    src = Path(src)
    raw = read_config(src)
    model_type = raw.get("model_type")
    if model_type not in LLAVA_CLASSES:
        raise BundleError(f"{src / 'config.json'} is model_type {model_type!r}; the hf-llava "
                          f"converter reads {', '.join(LLAVA_CLASSES)}.")
    check_safetensors(src)
    cls = getattr(transformers, LLAVA_CLASSES[model_type])
    model = cls.from_pretrained(src, dtype=dtype or _raw_dtype(raw), use_safetensors=True,
                                trust_remote_code=False, local_files_only=True).eval()
    inner = model.model
    family = model.config.text_config.model_type
    if family not in LLM_FAMILIES:
        raise BundleError(f"{src}: LLM family {family!r} is not supported (Qwen2, Llama, Mistral).")
    tower_type = model.config.vision_config.model_type
    tower = "siglip" if "siglip" in tower_type else "clip" if "clip" in tower_type else None
    if tower is None:
        raise BundleError(f"{src}: vision tower {tower_type!r} is not supported (CLIP, SigLIP).")
    return LlavaParts(model=model, config=model.config, vision_tower=inner.vision_tower,
                      projector=inner.multi_modal_projector, language_model=inner.language_model,
                      lm_head=model.lm_head, image_newline=getattr(inner, "image_newline", None),
                      family=family, tower=tower)


def extract_causal_lm(parts: LlavaParts, dtype=None):
    """A stand-alone AutoModelForCausalLM holding the LLaVA's LLM weights: the tensors are shared
    (built on the meta device, then assigned), so a 7B model is never held twice in memory."""
    import torch
    from transformers import AutoModelForCausalLM

    text_config = parts.config.text_config
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(text_config)
    state = {f"model.{k}": v for k, v in parts.language_model.state_dict().items()}
    state["lm_head.weight"] = parts.lm_head.weight
    missing, unexpected = lm.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise BundleError(f"LLM weights do not fit {type(lm).__name__}: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}.")
    _rebuild_meta_buffers(lm)
    lm.generation_config.eos_token_id = text_config.eos_token_id
    if dtype is not None:
        lm = lm.to(dtype)
    lm.config.dtype = next(lm.parameters()).dtype
    return lm.eval()


def _rebuild_meta_buffers(lm) -> None:
    """Non-persistent buffers (RoPE inv_freq) are not in the state dict and stay on the meta
    device: rebuild the modules that own them from their config, on the CPU."""
    for name, module in list(lm.named_modules()):
        if any(b.is_meta for b in module.buffers(recurse=False)) and hasattr(module, "config"):
            parent = lm.get_submodule(name.rsplit(".", 1)[0]) if "." in name else lm
            setattr(parent, name.rsplit(".", 1)[-1], type(module)(config=module.config))
    left = [n for n, t in list(lm.named_parameters()) + list(lm.named_buffers()) if t.is_meta]
    if left:
        raise BundleError(f"Could not materialise LLM tensors {left[:3]} while extracting it.")


def image_normalisation(src: Path, tower: str):
    """(mean, std) from the folder's preprocessor_config.json, else the tower's usual values."""
    path = Path(src) / "preprocessor_config.json"
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        if "image_mean" in data and "image_std" in data:
            return [float(x) for x in data["image_mean"]], [float(x) for x in data["image_std"]]
    return (SIGLIP_MEAN, SIGLIP_STD) if tower == "siglip" else (CLIP_MEAN, CLIP_STD)


def _raw_dtype(raw: dict):
    import torch

    text = raw.get("text_config") or {}
    name = text.get("dtype") or text.get("torch_dtype") or raw.get("dtype") or raw.get(
        "torch_dtype")
    return getattr(torch, str(name), torch.float32) if name else torch.float32


def source_dtype(config):
    """The dtype the checkpoint was saved in (the LLM is re-saved in it, not inflated to fp32)."""
    import torch

    name = getattr(config.text_config, "dtype", None) or getattr(config, "dtype", None)
    if isinstance(name, torch.dtype):
        return name
    return getattr(torch, str(name), torch.float32) if name else torch.float32
