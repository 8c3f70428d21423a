"""Convert the authors' released checkpoints (llava-largeimg-Qwen2-7B / -Vicuna-7B) into a bundle.

What we learned from the reference implementation (public repository VisionXLab/LRS-VQA, its
`llava/model` package, eval script and patched transformers 4.37.2 files), stated in our words:

Files. A checkpoint folder is what `LlavaQwenForCausalLM` / `LlavaLlamaForCausalLM`
`.save_pretrained` writes with transformers 4.37: `config.json`, the weights as
`model-0000k-of-0000n.safetensors` + `model.safetensors.index.json` (or one `model.safetensors`;
older trainer settings write `pytorch_model-*.bin` pickles instead, which we refuse), the
tokenizer files, `generation_config.json`. The eval script's example folders are
`llava_largeimg_Qwen2_max8192` and `llava_largeimg_Vicuna_max2048` (presumably the
tokenizer_model_max_length they were trained with).

Weight keys (weights saved in bfloat16):
- LLM: `model.embed_tokens.weight`, `model.layers.{i}.{self_attn.{q,k,v,o}_proj, mlp.{gate,up,
  down}_proj, input_layernorm, post_attention_layernorm}.*`, `model.norm.weight`,
  `lm_head.weight` (Qwen2 has q/k/v biases; Llama/Vicuna none). Old Llama saves may add
  `...rotary_emb.inv_freq` buffers: ignored, RoPE is recomputed from rope_theta.
- Vision tower: `model.vision_tower.vision_tower.vision_model.*` (a transformers-4.37
  CLIPVisionModel: embeddings, pre_layrnorm, encoder.layers.*, post_layernorm). The reference
  code itself builds the tower with delayed loading and then reloads it from `mm_vision_tower`
  (`openai/clip-vit-large-patch14-336`, frozen during training), so a checkpoint may also lack
  these keys: then the tower comes from a local CLIP folder (`vision_tower=`).
- Projector module `model.mm_projector` (class VisionProjectorDistillPruner when
  `mm_projector_type` = `mlp2x_gelu_after_distillpruner`) holds two things:
  `mlp_projector.{0,2}.{weight,bias}` - the 2-layer GELU MLP (Linear mm_hidden->D, GELU, Linear
  D->D; with a list-valued mm_vision_select_layer it would instead be a list of such MLPs,
  `mlp_projector.{k}.mlp.{0,2}.*`, which we refuse) - and `token_pruner.*`, the RFM
  (PyramidPruneModule): `token_pruner.layers.{0..R}.*` decoder layers of the LLM's own class
  and shapes (R = len(llm_layer_list), layer 0 initialised from LLM layer l1-1, layer k from
  llm_layer_list[k-1]) and `token_pruner.norm.weight`; its RoPE buffer is not persistent and
  its `kv_proj` is an identity (no keys). These names map one-to-one onto RegionFocusTorch.
- `model.image_newline` [D]: present when `mm_patch_merge_type` contains "unpad".

Config keys (config.json, beside the usual Qwen2Config / LlamaConfig ones): architectures
LlavaQwenForCausalLM | LlavaLlamaForCausalLM (model_type llava_qwen | llava_llama);
mm_vision_tower, mm_hidden_size, mm_vision_select_layer (-2: the second-to-last hidden state),
mm_vision_select_feature ('patch': the CLS token is dropped), mm_projector_type,
mm_patch_merge_type ('spatial_unpad': unpad + one newline per token row), mm_spatial_pool_mode
('bilinear': tile features pooled 24x24 -> 12x12 by bilinear interpolation; 'average' / 'max'
are avg/max 2x2 pooling), image_aspect_ratio ('slice' in training; the eval script switches it
to 'pyramid_crop'), slice_block_size (tile size, 336), vision_patch_size (14), max_block_num,
llm_layer_list (the RFM layer list, e.g. [1, 5, 11, 14] - the paper's), select_stu_state_layer,
llm_use_last_text (query = last prompt token), tokenizer_model_max_length.

Sequence. The prompt is the conversation template with "<image>\\n{question}\\n" as the user
turn: 'qwen_1_5' (ChatML, system "You are a helpful assistant.") for Qwen2 and 'vicuna_v1'
("A chat between a curious user and an artificial intelligence assistant. The assistant gives
helpful, detailed, and polite answers to the user's questions. USER: ... ASSISTANT:", with the
tokenizer's BOS) for Vicuna. The image slot becomes [576 unpooled thumbnail tokens]
[embedding of the ':' token, the separator] [level tokens, unpadded, image_newline after each
row]. The thumbnail is the whole image scaled so its long side is 336, pasted top-left on a
336x336 canvas padded with zeros after normalisation (= the normalisation mean). The level-1
grid has long side 1008 (the pyramid's coarsest level).

Distillation in their code (patched modeling_qwen2 / modeling_llama): the teacher rows are the
LLM's own q.k logits at layers llm_layer_list from the query token (the token before the
answer) over the whole sequence; the student rows come from RFM layers 1..R. Pair indices 1
and 2 are skipped (with the paper's four layers only LLM layers 1 and 14 are distilled); per
head: KL(softmax teacher || softmax student) over the row, KL with temperature 2 over the HR
slice, and MSE of the temperature-scaled HR logits, all averaged, weight 1, added to the LM
loss. (We distil with the paper's form instead; see distill_loss.py.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..engine.errors import InputError
from ..engine.progress import EventSink, emit, progress_event

VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."
PROJECTOR_PREFIX = "model.mm_projector.mlp_projector."
RFM_PREFIX = "model.mm_projector.token_pruner."
NEWLINE_KEY = "model.image_newline"
LLM_PREFIXES = ("model.embed_tokens.", "model.layers.", "model.norm.")
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "position_ids")
SEPARATOR_TOKEN = ":"     # the reference inserts this token's embedding after the thumbnail

FAMILIES = {"qwen": "qwen2", "llama": "llama", "vicuna": "llama", "mistral": "mistral"}

SYSTEM_PROMPTS = {
    "qwen2": "You are a helpful assistant.",
    "llama": "A chat between a curious user and an artificial intelligence assistant. The "
             "assistant gives helpful, detailed, and polite answers to the user's questions.",
}
SYSTEM_PROMPTS["mistral"] = SYSTEM_PROMPTS["llama"]

# Known vision towers named by mm_vision_tower (their configs cannot be read from tensor shapes:
# the head count is not visible in the weights).
KNOWN_TOWERS = {
    "clip-vit-large-patch14-336": dict(hidden_size=1024, intermediate_size=4096,
                                       num_hidden_layers=24, num_attention_heads=16,
                                       image_size=336, patch_size=14, projection_dim=768,
                                       hidden_act="quick_gelu", layer_norm_eps=1e-5),
    "clip-vit-large-patch14": dict(hidden_size=1024, intermediate_size=4096,
                                   num_hidden_layers=24, num_attention_heads=16, image_size=224,
                                   patch_size=14, projection_dim=768, hidden_act="quick_gelu",
                                   layer_norm_eps=1e-5),
}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# config.json keys that belong to LLaVA / the RFM, not to the language model's own config.
_LLAVA_KEYS = ("mm_", "image_", "slice_", "vision_", "llm_", "select_stu", "max_block",
               "tokenizer_", "use_mm_proj", "upscale_", "concat_global", "s2", "tune_mm",
               "freeze_mm", "pretrain_mm", "use_cross", "use_dense", "architectures",
               "model_type", "auto_map", "transformers_version", "_name_or_path", "torch_dtype")


@dataclass
class ReleasedCheckpoint:
    """A released checkpoint folder, read (tensors are loaded lazily by key)."""
    root: Path
    config: dict
    family: str
    weight_files: Dict[str, Path]            # key -> safetensors file holding it
    rfm_layers: List[int]
    notes: List[str] = field(default_factory=list)
    max_length: Optional[int] = None         # tokenizer_model_max_length: the trained context

    def keys(self) -> List[str]:
        return sorted(self.weight_files)

    def shape(self, key: str) -> List[int]:
        from safetensors import safe_open

        with safe_open(str(self.weight_files[key]), framework="pt") as handle:
            return list(handle.get_slice(key).get_shape())

    def load(self, keys: Sequence[str]) -> Dict[str, "torch.Tensor"]:
        """Tensors for `keys`, read file by file (a 7B checkpoint never needs to fit twice)."""
        from safetensors import safe_open

        by_file: Dict[Path, List[str]] = {}
        for key in keys:
            by_file.setdefault(self.weight_files[key], []).append(key)
        out = {}
        for path, names in by_file.items():
            with safe_open(str(path), framework="pt") as handle:
                for name in names:
                    out[name] = handle.get_tensor(name)
        return out


# ------------------------------------------------------------------ reading
def _refuse_pickles(root: Path) -> None:
    pickles = sorted(p.name for p in root.glob("*.bin")) + sorted(p.name for p in root.glob("*.pt"))
    if pickles:
        raise InputError(
            f"{root / pickles[0]}: the checkpoint's weights are pickle files, which can run "
            "arbitrary code when loaded, so rs-vqa refuses them. Convert them to safetensors "
            "first, in the authors' own environment (LRS-VQA code + transformers 4.37): "
            "`model = LlavaQwenForCausalLM.from_pretrained(SRC)` (LlavaLlamaForCausalLM for "
            "Vicuna) then `model.save_pretrained(DST, safe_serialization=True)` and copy the "
            "tokenizer files, then run the conversion on DST.")
    raise InputError(f"{root} holds no *.safetensors weights: not a released LRS-VQA checkpoint "
                     "(expected model.safetensors.index.json with its shards).")


def _weight_files(root: Path) -> Dict[str, Path]:
    from safetensors import safe_open

    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError) as exc:
            raise InputError(f"{index} is not a safetensors index (no weight_map): {exc}") from exc
        files = {k: root / v for k, v in weight_map.items()}
        for path in sorted(set(files.values())):
            if not path.is_file():
                raise InputError(f"{path} is missing: {index.name} lists it; the download is "
                                 "incomplete.")
        return files
    shards = sorted(root.glob("*.safetensors"))
    if not shards:
        _refuse_pickles(root)
    files = {}
    for path in shards:
        with safe_open(str(path), framework="pt") as handle:
            files.update({k: path for k in handle.keys()})
    return files


def _family(config: dict, root: Path) -> str:
    names = " ".join([*(config.get("architectures") or []), str(config.get("model_type", ""))])
    for marker, family in FAMILIES.items():
        if marker in names.lower():
            return family
    raise InputError(f"{root / 'config.json'} names architecture {names.strip()!r}; the "
                     "converter knows the released Qwen2 and Vicuna (Llama) LLaVA models.")


# Settings of the released models' config.json that the bundle reproduces, with the value each must
# have (anything else would make the bundle see a different sequence than the model was trained on).
SUPPORTED_SETTINGS = (
    ("mm_spatial_pool_mode", "bilinear", "the pyramid tiles are pooled 2 x 2 bilinearly"),
    ("mm_use_im_start_end", False, "no <im_start>/<im_end> tokens around the image"),
    ("llm_use_last_text", True, "the RFM's query is the last prompt token"),
    ("concat_global_img_feature", True, "the thumbnail precedes the pyramid tokens"),
)


def _check_supported(config_path: Path, config: dict) -> None:
    """Refuse settings the bundle cannot reproduce, naming the key."""
    for key, wanted, meaning in SUPPORTED_SETTINGS:
        value = config.get(key, wanted)
        if value != wanted:
            raise InputError(f"{config_path}: {key} is {value!r}; only {wanted!r} is supported "
                             f"({meaning}, as in the released LRS-VQA models).")
    merge = str(config.get("mm_patch_merge_type", "spatial_unpad"))
    if "unpad" not in merge:
        raise InputError(f"{config_path}: mm_patch_merge_type is {merge!r}; only 'spatial_unpad' "
                         "is supported (tokens in padding dropped, a newline after each row).")


def read_checkpoint(src_dir) -> ReleasedCheckpoint:
    """Open a released checkpoint folder and check it has what the bundle needs."""
    root = Path(src_dir).expanduser()
    config_path = root / "config.json"
    if not config_path.is_file():
        raise InputError(f"{config_path} is missing: {root} is not a checkpoint folder.")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"{config_path} is not valid JSON ({exc}).") from exc
    family = _family(config, root)
    files = _weight_files(root)
    projector_type = str(config.get("mm_projector_type", ""))
    if "mlp2x_gelu" not in projector_type:
        raise InputError(f"{config_path}: mm_projector_type is {projector_type!r}; the released "
                         "LRS-VQA models use a 2-layer GELU MLP (mlp2x_gelu...).")
    if any(k.startswith(PROJECTOR_PREFIX) and ".mlp." in k for k in files):
        raise InputError(f"{root}: the projector is a list of per-layer MLPs (list-valued "
                         "mm_vision_select_layer); only the single MLP of the released models "
                         "is supported.")
    required = [PROJECTOR_PREFIX + s for s in ("0.weight", "0.bias", "2.weight", "2.bias")]
    required += ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
                 RFM_PREFIX + "norm.weight"]
    missing = [k for k in required if k not in files]
    if missing and missing[0] == "lm_head.weight" and config.get("tie_word_embeddings"):
        missing = missing[1:]
    if missing:
        hint = (" The checkpoint has no trained RFM (token_pruner): convert a plain LLaVA with "
                "`convert --from hf-llava` instead." if missing[-1].startswith(RFM_PREFIX) else "")
        raise InputError(f"{root}: weights {', '.join(missing)} are missing.{hint}")
    layers = config.get("llm_layer_list")
    if isinstance(layers, str):      # the training script passes it as a string to eval()
        layers = json.loads(layers)
    if not layers:
        raise InputError(f"{config_path} has no llm_layer_list: cannot tell which LLM layers "
                         "the RFM was trained against.")
    layers = [int(l) for l in layers]
    for i in range(len(layers) + 1):
        if not any(k.startswith(f"{RFM_PREFIX}layers.{i}.") for k in files):
            raise InputError(f"{root}: RFM layer {i} ({RFM_PREFIX}layers.{i}.*) is missing but "
                             f"llm_layer_list {layers} needs {len(layers) + 1} layers.")
    ckpt = ReleasedCheckpoint(root=root, config=config, family=family, weight_files=files,
                              rfm_layers=layers)
    _check_supported(config_path, config)
    if NEWLINE_KEY not in files:
        raise InputError(f"{root}: {NEWLINE_KEY} is missing (mm_patch_merge_type "
                         f"{config.get('mm_patch_merge_type')!r}); the method needs the learned "
                         "newline embedding after each token row.")
    max_length = config.get("tokenizer_model_max_length")
    if max_length is not None:
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
            raise InputError(f"{config_path}: tokenizer_model_max_length is {max_length!r}; "
                             "expected a positive integer (the length the model was trained at).")
        ckpt.max_length = max_length
    else:
        ckpt.notes.append("config.json has no tokenizer_model_max_length: the LLM's "
                          "max_position_embeddings is the context budget")
    return ckpt


# ------------------------------------------------------------------ parts
def text_config(ckpt: ReleasedCheckpoint, vocab_size: int):
    """The language model's own transformers config, from the LLaVA config.json."""
    from transformers import AutoConfig

    own = {k: v for k, v in ckpt.config.items()
           if not k.startswith(_LLAVA_KEYS) and k != "rope_scaling"}
    own["vocab_size"] = vocab_size
    rope_scaling = ckpt.config.get("rope_scaling")
    if rope_scaling:   # LlavaQwenForCausalLM forces it to None; Llama variants may carry one
        own["rope_scaling"] = rope_scaling
    return AutoConfig.for_model(ckpt.family, **own)


def vision_config(ckpt: ReleasedCheckpoint, vision_tower: Optional[Path]):
    """(CLIPVisionConfig, folder or None, image mean, image std) for the checkpoint's tower."""
    from transformers import CLIPVisionConfig

    name = str(ckpt.config.get("mm_vision_tower") or ckpt.config.get("vision_tower") or "")
    folder = Path(vision_tower).expanduser() if vision_tower else None
    if folder is None and name and Path(name).is_dir():
        folder = Path(name)     # the reference also accepts an existing local path here
    if folder is not None:
        if not (folder / "config.json").is_file():
            raise InputError(f"{folder / 'config.json'} is missing: the vision tower folder must "
                             "be a transformers CLIP model folder.")
        cfg = CLIPVisionConfig.from_pretrained(str(folder))
        mean, std = CLIP_MEAN, CLIP_STD
        pre = folder / "preprocessor_config.json"
        if pre.is_file():
            data = json.loads(pre.read_text(encoding="utf-8"))
            mean, std = data.get("image_mean", mean), data.get("image_std", std)
        return cfg, folder, list(mean), list(std)
    known = KNOWN_TOWERS.get(name.rstrip("/").split("/")[-1])
    if known is None:
        raise InputError(f"{ckpt.root / 'config.json'} names vision tower {name!r}, which the "
                         "converter does not know: pass the tower's local transformers folder "
                         "(--vision-tower DIR).")
    return CLIPVisionConfig(**known), None, CLIP_MEAN, CLIP_STD


def _vision_state(ckpt: ReleasedCheckpoint, folder: Optional[Path]) -> Dict[str, "torch.Tensor"]:
    """Vision tower weights with CLIPVisionModel's own key names (without the model prefix)."""
    keys = [k for k in ckpt.keys() if k.startswith(VISION_PREFIX)
            and not k.endswith(IGNORED_SUFFIXES)]
    if keys:
        return {k[len(VISION_PREFIX):]: v for k, v in ckpt.load(keys).items()}
    if folder is None or not list(folder.glob("*.safetensors")):
        where = f" ({folder} has no *.safetensors)" if folder is not None else ""
        raise InputError(f"{ckpt.root} carries no vision tower weights ({VISION_PREFIX}*){where}: "
                         "pass a local copy of the tower named in config.json mm_vision_tower "
                         "with safetensors weights (--vision-tower DIR).")
    from transformers import CLIPVisionModel

    tower = CLIPVisionModel.from_pretrained(str(folder), use_safetensors=True)
    return {k[len("vision_model."):] if k.startswith("vision_model.") else k: v
            for k, v in tower.state_dict().items()}


def _assign(module, state: Dict[str, "torch.Tensor"], what: str, root: Path):
    """Load `state` into a module built on the meta device: names and shapes must match exactly;
    computed buffers (RoPE frequencies, position ids) are then rebuilt on the CPU."""
    shapes = module.state_dict()
    missing, unexpected = sorted(set(shapes) - set(state)), sorted(set(state) - set(shapes))
    if missing or unexpected:
        raise InputError(f"{root}: the {what} weights do not fit its config (missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]}): a config.json or "
                         "--vision-tower that does not match the checkpoint?")
    for key, value in state.items():
        if tuple(shapes[key].shape) != tuple(value.shape):
            raise InputError(f"{root}: {what} tensor {key} has shape {tuple(value.shape)} but the "
                             f"config implies {tuple(shapes[key].shape)}.")
    module.load_state_dict(state, strict=True, assign=True)
    for sub in module.modules():
        meta = [n for n, buf in sub.named_buffers(recurse=False) if buf is not None and buf.is_meta]
        if meta:
            fresh = type(sub)(sub.config)      # rotary embeddings and CLIP embeddings take a config
            for name in meta:
                setattr(sub, name, getattr(fresh, name))
    return module.eval()


def vision_parts(ckpt: ReleasedCheckpoint, vision_tower=None):
    """(LlavaConfig without weights, CLIP tower, projector, image mean, image std): the tower and
    the 2-layer GELU projector in transformers' LLaVA classes, float32, for the ONNX export."""
    import torch
    from transformers import CLIPVisionModel, LlavaConfig
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    vis_cfg, folder, mean, std = vision_config(ckpt, vision_tower)
    mm_hidden = int(ckpt.config.get("mm_hidden_size", vis_cfg.hidden_size))
    if mm_hidden != vis_cfg.hidden_size:
        raise InputError(f"{ckpt.root / 'config.json'}: mm_hidden_size {mm_hidden} but the vision "
                         f"tower has width {vis_cfg.hidden_size}: wrong --vision-tower?")
    select = ckpt.config.get("mm_vision_select_layer", -2)
    if not isinstance(select, int):
        raise InputError(f"{ckpt.root / 'config.json'}: mm_vision_select_layer {select!r} is not a "
                         "single layer index.")
    strategy = "full" if ckpt.config.get("mm_vision_select_feature") == "cls_patch" else "default"
    embed_shape = ckpt.shape("model.embed_tokens.weight")
    config = LlavaConfig(vision_config=vis_cfg, text_config=text_config(ckpt, embed_shape[0]),
                         image_token_id=0, vision_feature_layer=select,
                         vision_feature_select_strategy=strategy, projector_hidden_act="gelu",
                         multimodal_projector_bias=True,
                         image_seq_length=(vis_cfg.image_size // vis_cfg.patch_size) ** 2)
    with torch.device("meta"):
        tower = CLIPVisionModel(vis_cfg)
        projector = LlavaMultiModalProjector(config)
    state = _vision_state(ckpt, folder)
    prefix = "vision_model." if any(k.startswith("vision_model.") for k in tower.state_dict()) else ""
    _assign(tower, {prefix + k: v.float() for k, v in state.items()}, "vision tower", ckpt.root)
    keys = {f"{dst}.{part}": PROJECTOR_PREFIX + f"{src}.{part}"
            for src, dst in (("0", "linear_1"), ("2", "linear_2")) for part in ("weight", "bias")}
    tensors = ckpt.load(list(keys.values()))
    _assign(projector, {k: tensors[v].float() for k, v in keys.items()}, "projector", ckpt.root)
    return config, tower, projector, mean, std


def causal_lm(ckpt: ReleasedCheckpoint):
    """The LLM as a transformers causal LM in the checkpoint's own dtype: the released LLM keys
    (model.*, lm_head.weight) are already the causal LM's, so nothing is copied or inflated."""
    import torch
    from transformers import AutoModelForCausalLM

    keys = [k for k in ckpt.keys() if k.startswith(LLM_PREFIXES + ("lm_head.",))
            and not k.endswith(IGNORED_SUFFIXES)]
    state = ckpt.load(keys)
    dtype = state["model.embed_tokens.weight"].dtype
    config = text_config(ckpt, int(state["model.embed_tokens.weight"].shape[0]))
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if config.tie_word_embeddings and "lm_head.weight" not in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    _assign(lm, state, "language model", ckpt.root)
    lm.generation_config.eos_token_id = config.eos_token_id
    return lm


def unmapped_keys(ckpt: ReleasedCheckpoint) -> List[str]:
    """Tensors the bundle does not use (reported in the manifest, never silently relied on)."""
    used = (VISION_PREFIX, PROJECTOR_PREFIX, RFM_PREFIX, NEWLINE_KEY, "lm_head.") + LLM_PREFIXES
    return [k for k in ckpt.keys() if not k.startswith(used) and not k.endswith(IGNORED_SUFFIXES)]


def load_trained_rfm(ckpt: ReleasedCheckpoint, base_rfm):
    """Put the checkpoint's trained token_pruner weights into `base_rfm`, a RegionFocusTorch of the
    same layer list copied from the same LLM (it supplies the RoPE frequencies, which the
    checkpoint does not store). Every other tensor is replaced, bit for bit (bf16 -> float32)."""
    keys = [k for k in ckpt.keys() if k.startswith(RFM_PREFIX) and not k.endswith(IGNORED_SUFFIXES)]
    trained = {k[len(RFM_PREFIX):]: v.float() for k, v in ckpt.load(keys).items()}
    shapes = base_rfm.state_dict()
    expected = {k for k in shapes if k != "inv_freq"}
    if set(trained) != expected:
        extra = sorted(set(trained) - expected)[:3]
        lacking = sorted(expected - set(trained))[:3]
        raise InputError(f"{ckpt.root}: the RFM weights ({RFM_PREFIX}*) do not match "
                         f"llm_layer_list {ckpt.rfm_layers} (unexpected {extra}, missing {lacking}).")
    for key, value in trained.items():
        if tuple(value.shape) != tuple(shapes[key].shape):
            raise InputError(f"{ckpt.root}: {RFM_PREFIX}{key} has shape {tuple(value.shape)}, "
                             f"expected {tuple(shapes[key].shape)}.")
    trained["inv_freq"] = shapes["inv_freq"]
    base_rfm.load_state_dict(trained, strict=True)
    return base_rfm.eval()


# ------------------------------------------------------------------ the bundle
# How the authors trained the RFM (their released code, see the module docstring).
REFERENCE_LOSS = {"form": "released code (VisionXLab/LRS-VQA)", "pairs": "first and last",
                  "kl_full_row": 1.0, "kl_hr_temperature": 2.0, "mse_hr_logits_temperature": 2.0,
                  "reduction": "plain mean of all terms", "added_to": "LM loss, weight 1"}
LICENCE = ("weights: see the released checkpoint's model card (the LLM's licence applies: "
           "Qwen2 / Llama 2); conversion code: this plugin's licence")
PROVENANCE_KEYS = ("mm_vision_tower", "mm_vision_select_layer", "mm_vision_select_feature",
                   "mm_projector_type", "mm_patch_merge_type", "mm_spatial_pool_mode",
                   "image_aspect_ratio", "slice_block_size", "llm_layer_list",
                   "select_stu_state_layer", "llm_use_last_text", "tokenizer_model_max_length")


def _tokenizer(ckpt: ReleasedCheckpoint):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(ckpt.root, local_files_only=True,
                                             trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{ckpt.root}: cannot load the tokenizer ({exc}); the checkpoint folder "
                         "must carry its tokenizer files.") from exc


def _separator(ckpt: ReleasedCheckpoint, tokenizer, embed):
    """The embedding of ':' - the token the reference puts between thumbnail and HR tokens."""
    token_id = tokenizer.convert_tokens_to_ids(SEPARATOR_TOKEN)
    if token_id is None or token_id == tokenizer.unk_token_id:
        ids = tokenizer(SEPARATOR_TOKEN, add_special_tokens=False)["input_ids"]
        if not ids:
            raise InputError(f"{ckpt.root}: the tokenizer cannot encode {SEPARATOR_TOKEN!r}.")
        token_id = ids[-1]
    return embed[int(token_id)].detach().float().numpy(), int(token_id)


def convert(src_dir, out_dir, rfm_layers: Optional[Sequence[int]] = None, fp16: bool = False,
            events: Optional[EventSink] = None, vision_tower=None, cancel=None,
            overwrite: bool = False) -> Path:
    """Released LRS-VQA checkpoint -> bundle, its trained RFM carried over exactly.

    rfm_layers: None (or the checkpoint's own llm_layer_list) keeps the trained RFM; another list
    gives an untrained RFM copied from the LLM (manifest rfm.made = 'copied'). vision_tower: a
    local transformers CLIP folder, needed when the checkpoint does not carry the tower's weights
    or names a tower the converter does not know. Built in memory with the shared exporters;
    the LLM stays in the checkpoint's dtype and is never copied."""
    import torch

    from ..engine import bundle as B
    from .bundle_writer import BundleWriter, rfm_manifest_section
    from .export_vision import VisionGraph, export_vision_onnx, vision_spec
    from .rfm_torch import RegionFocusTorch

    def step(fraction: float, message: str) -> None:
        if cancel is not None:
            cancel.raise_if_cancelled()
        emit(events, progress_event("convert", fraction, message))

    ckpt = read_checkpoint(src_dir)
    trained = rfm_layers is None or [int(l) for l in rfm_layers] == ckpt.rfm_layers
    layers = ckpt.rfm_layers if trained else [int(l) for l in rfm_layers]
    step(0.0, f"read {ckpt.root.name}: {ckpt.family} LLM, RFM trained for layers {ckpt.rfm_layers}")
    tokenizer = _tokenizer(ckpt)
    config, tower, projector, mean, std = vision_parts(ckpt, vision_tower)
    unmapped = unmapped_keys(ckpt)
    if unmapped:
        ckpt.notes.append(f"ignored {len(unmapped)} tensors: {', '.join(unmapped[:5])}")
    tile = config.vision_config.image_size
    block = int(ckpt.config.get("slice_block_size", tile))
    if block != tile:
        raise InputError(f"{ckpt.root / 'config.json'}: slice_block_size {block} differs from the "
                         f"vision tower's input size {tile}; position-embedding interpolation is "
                         "not supported.")
    spec = vision_spec(config, config.text_config.hidden_size)
    with BundleWriter(out_dir, overwrite=overwrite) as writer, torch.no_grad():
        step(0.1, "exporting the vision encoder")
        export_vision_onnx(VisionGraph(tower, projector, spec).eval(),
                           writer.path(B.VISION_ONNX), fp16=fp16)
        del tower, projector
        step(0.4, "building the region focus module")
        lm = causal_lm(ckpt)
        dtype = lm.dtype
        rfm = RegionFocusTorch.from_llm(lm, layers)
        if trained:
            rfm = load_trained_rfm(ckpt, rfm)
        writer.save_rfm(rfm, fp16=fp16)
        step(0.6, "embeddings")
        embed = lm.get_input_embeddings().weight
        separator, separator_id = _separator(ckpt, tokenizer, embed)
        newline = ckpt.load([NEWLINE_KEY])[NEWLINE_KEY].float().numpy()
        writer.save_embeddings(newline, separator)
        step(0.7, "saving the language model")
        writer.save_llm(lm, tokenizer)
        section = (rfm_manifest_section(rfm, "distilled (released checkpoint)", REFERENCE_LOSS)
                   if trained else rfm_manifest_section(rfm, "copied"))
        manifest = _manifest(ckpt, tokenizer, spec, mean, std, lm.config, dtype, separator_id,
                             fp16, section, Path(out_dir).name)
        step(0.9, "validating")
        result = writer.finish(manifest)
    step(1.0, f"bundle written to {result}")
    return result


def _manifest(ckpt, tokenizer, spec, mean, std, text, dtype, separator_id, fp16, rfm_section, name):
    from ..engine import bundle as B
    from ..engine.prompt import CHATML_TEMPLATE, IMAGE_PLACEHOLDER, VICUNA_TEMPLATE
    from .convert_hf import N_MAX, STOP_TOKENS

    vocab = tokenizer.get_vocab()
    if rfm_section.get("made") == "copied":
        rfm_section["note"] = (f"copied from the LLM; the checkpoint's trained RFM (layers "
                               f"{ckpt.rfm_layers}) was not used")
    qwen = ckpt.family == "qwen2"
    return B.Manifest(
        format_version=B.FORMAT_VERSION, family=ckpt.family, tile_size=spec.tile_size,
        patch_size=spec.patch_size, patch_grid=spec.patch_grid, pooled_grid=spec.pooled_grid,
        hidden_size=spec.hidden_size, image_mean=list(mean), image_std=list(std),
        thumbnail_size=spec.tile_size, alpha=0.25, n_max=N_MAX.get(ckpt.family, 80),
        rfm=rfm_section,
        # The reference's conversation templates: qwen_1_5 (ChatML) and vicuna_v1.
        chat={"template": CHATML_TEMPLATE if qwen else VICUNA_TEMPLATE,
              "template_source": "reference: " + ("qwen_1_5" if qwen else "vicuna_v1"),
              "system_prompt": SYSTEM_PROMPTS[ckpt.family], "image_placeholder": IMAGE_PLACEHOLDER,
              # The reference's evaluation: "<image>\n" + the question as stored + "\n".
              "user_turn": "{image}\n{question}\n", "question_text": "verbatim",
              "stop_tokens": [t for t in STOP_TOKENS if t in vocab]},
        # The reference's unpad (partly padded token rows dropped) and keep count (int(alpha N)).
        pyramid={"unpad": "floor", "skip_equal_grids": True},
        selection={"keep_rounding": "floor"},
        provenance={"source": ckpt.root.name, "converter": "lrs-vqa",
                    "reference": "VisionXLab/LRS-VQA (llava-largeimg checkpoints)",
                    "architecture": (ckpt.config.get("architectures") or ["?"])[0],
                    "llava_config": {k: ckpt.config[k] for k in PROVENANCE_KEYS
                                     if k in ckpt.config},
                    "notes": list(ckpt.notes)},
        licence=LICENCE, name=name,
        vision={"tower": "clip", "feature_layer": spec.feature_layer, "drop_cls": spec.drop_cls,
                "pooling": "bilinear 2x2", "source_class": "LlavaForConditionalGeneration "
                "(from the released layout)", "fp16": bool(fp16)},
        llm={"model_type": text.model_type, "num_hidden_layers": text.num_hidden_layers,
             "num_attention_heads": text.num_attention_heads,
             "num_key_value_heads": getattr(text, "num_key_value_heads", None),
             "intermediate_size": text.intermediate_size,
             "max_position_embeddings": getattr(text, "max_position_embeddings", None),
             "max_context": ckpt.max_length,
             "dtype": str(dtype).replace("torch.", "")},
        embeddings={"image_newline": f"checkpoint {NEWLINE_KEY}",
                    "image_separator": f"embedding of token {SEPARATOR_TOKEN!r} (id "
                                       f"{separator_id}), as the reference inserts it"})
