"""A tiny random LLaVA (CLIP + Qwen2) with an offline-trained tokenizer, for tests and demos.

Built from configs (no download), saved as a transformers LLaVA folder, then converted into a
bundle by the same path as real checkpoints (convert_hf)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..engine.prompt import CHATML_TEMPLATE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]

# Words of remote-sensing questions and answers: the tokenizer learns merges for them.
_VOCABULARY = """
how many what is the color of shape status where are there any in this image picture scene
answer question using a single word or phrase yes no one two three four five six seven eight
nine ten zero airplane airplanes plane ship ships boat vessel harbour harbor port airport runway
bridge bridges river road roads car cars vehicle vehicles truck trucks tank tanks storage
building buildings house roof field farmland forest tree trees water lake sea coast beach
parking lot lots football soccer tennis court baseball basketball ground track stadium
swimming pool pools roundabout intersection dam container crane helicopter windmill
white black red blue green yellow gray grey orange brown silver square round circle
rectangle rectangular circular triangle large small big tiny left right top bottom center
middle near next to on under above below moving parked docked stationary under construction
rural urban residential industrial commercial area region object objects category type which
is it a an of and or to at by with from for than more most less least larger smaller
satellite aerial remote sensing image tile resolution north south east west
system user assistant you are helpful
"""


@dataclass
class TinyModelConfig:
    seed: int = 0
    tile_size: int = 112
    patch_size: int = 14
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    text_hidden: int = 64
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 128
    vocab_size: int = 600


def train_chatml_bpe(corpus, vocab_size: int, special_tokens=None, template: str = CHATML_TEMPLATE):
    """Byte-level BPE trained offline on `corpus` (any text still encodes, decoding is lossless),
    wrapped as a PreTrainedTokenizerFast with the ChatML template the converter keeps.
    special_tokens: the added tokens (default SPECIAL_TOKENS; ChatML's three must be among them)."""
    special_tokens = list(special_tokens or SPECIAL_TOKENS)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token=None,
                                   additional_special_tokens=[
                                       t for t in special_tokens
                                       if t not in ("<|im_end|>", "<|endoftext|>")])
    fast.chat_template = template
    return fast


def train_tokenizer(vocab_size: int, special_tokens=None, template: str = CHATML_TEMPLATE):
    """The tiny model's tokenizer, trained on the built-in remote-sensing vocabulary."""
    words = _VOCABULARY.split()
    corpus = [" ".join(words[i:i + 12]) for i in range(0, len(words), 6)]
    corpus += [w.capitalize() + "?" for w in words] + ["\n".join(words[:20])]
    return train_chatml_bpe(corpus * 3, vocab_size, special_tokens, template)


def build_tiny_llava(cfg: TinyModelConfig):
    """(LlavaForConditionalGeneration, tokenizer) with random weights from the seed."""
    import torch
    from transformers import (CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration,
                              Qwen2Config)

    tokenizer = train_tokenizer(cfg.vocab_size)
    torch.manual_seed(cfg.seed)
    vision = CLIPVisionConfig(hidden_size=cfg.vision_hidden, intermediate_size=cfg.vision_hidden * 2,
                              num_hidden_layers=cfg.vision_layers,
                              num_attention_heads=cfg.vision_heads, image_size=cfg.tile_size,
                              patch_size=cfg.patch_size, projection_dim=cfg.vision_hidden)
    text = Qwen2Config(vocab_size=len(tokenizer), hidden_size=cfg.text_hidden,
                       intermediate_size=cfg.text_intermediate, num_hidden_layers=cfg.text_layers,
                       num_attention_heads=cfg.text_heads, num_key_value_heads=cfg.text_kv_heads,
                       max_position_embeddings=32768, tie_word_embeddings=False,
                       eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                       pad_token_id=tokenizer.pad_token_id)
    grid = cfg.tile_size // cfg.patch_size
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", image_seq_length=grid * grid,
                         tie_word_embeddings=False)
    model = LlavaForConditionalGeneration(config).eval()
    return model, tokenizer


def write_tiny_llava(folder, cfg: TinyModelConfig) -> Path:
    """Save the tiny LLaVA folder (safetensors, tokenizer, preprocessor normalisation)."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, tokenizer = build_tiny_llava(cfg)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # What a real LLaVA folder carries for the image processor: normalisation and size.
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "crop_size": {"height": cfg.tile_size, "width": cfg.tile_size}}, indent=2))
    return folder


def make_tiny_bundle(out_dir, cfg: TinyModelConfig | None = None, events=None,
                     overwrite: bool = False) -> Path:
    """Build the tiny LLaVA in a scratch folder and convert it into a bundle at out_dir."""
    import tempfile

    from .bundle_writer import check_target
    from .convert_hf import convert_hf_llava

    check_target(out_dir, overwrite)
    cfg = cfg or TinyModelConfig()
    with tempfile.TemporaryDirectory(prefix="rs-vqa-tiny-") as tmp:
        src = write_tiny_llava(Path(tmp) / "llava", cfg)
        return convert_hf_llava(src, out_dir, provenance={
            "source": "tiny-model", "seed": cfg.seed,
            "note": "random weights from configs; for tests and demos of the machinery only"},
            licence="Apache-2.0 (generated, random weights)", events=events,
            overwrite=overwrite)
