"""The LLM in PyTorch (transformers): chat prompt pieces, embeddings, streaming greedy decoding.

Local folder only, safetensors only, never remote code. torch/transformers are imported when a
LanguageModel is made, so importing this module stays cheap for the GUI.
"""

from __future__ import annotations

import inspect
import re
from contextlib import contextmanager
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..setup_advice import runtime_setup_advice
from .budget import available_mb, check_weights_fit
from .bundle import context_tokens
from .errors import BundleError, InputError, RuntimeSetupError
from .offline import keep_offline
from .prompt import DEFAULT_TEMPLATES, IMAGE_PLACEHOLDER, USER_TURN, prompt_ids

DTYPES = ("float32", "float16", "bfloat16")
# Families whose llm/ is a transformers image-text model (decoder + lm_head inside, run from
# inputs_embeds with explicit M-RoPE positions; what is left of its vision tower, cut by the
# converter, is dropped after loading: vision.onnx does that work).
IMAGE_TEXT_TYPES = ("qwen2_5_vl",)


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise RuntimeSetupError("PyTorch is not installed in this Python: "
                                f"{runtime_setup_advice()}.") from exc
    return torch


def resolve_device(device: str = "auto") -> str:
    torch = _torch()
    if device not in ("auto", "cpu", "cuda"):
        raise RuntimeSetupError(f"Unknown device '{device}': choose auto, cpu or cuda.")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeSetupError("CUDA was requested but PyTorch sees no GPU: install a CUDA build "
                                "of torch or choose the CPU device.")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def cpu_has_native_bf16() -> bool:
    """Does this CPU compute bfloat16 natively (AVX512-BF16 or AMX)? Without it torch emulates
    bfloat16 through float32 conversions, which is slower than float32 itself."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def resolve_dtype(device: str, dtype: Optional[str], bundle_dtype: Optional[str] = None):
    """The LLM's dtype: the one asked for, else the bundle's where the device runs it well.

    CUDA: the bundle's dtype (bfloat16 falls back to float16 where unsupported; a bundle that
    does not say gets bfloat16/float16). CPU: a bfloat16 or float16 bundle runs in bfloat16 on
    CPUs with native bfloat16 -- measured 2.3x faster than float32 at half the memory on a
    Qwen2-0.5B-sized LLM (bench/bench_llm_dtype.py; float16 1.8x) -- and in float32 elsewhere; a
    float32 bundle (the bundled default model) stays float32."""
    torch = _torch()
    if dtype not in (None, "auto"):
        if dtype not in DTYPES:
            raise RuntimeSetupError(f"Unknown dtype '{dtype}': choose one of auto, {', '.join(DTYPES)}.")
        return getattr(torch, dtype)
    if device == "cpu":
        if bundle_dtype in ("bfloat16", "float16") and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    if bundle_dtype == "float32":
        return torch.float32
    if bundle_dtype == "float16" or not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _free_mb(device: str) -> Optional[float]:
    """Memory free for the weights on the device: the GPU's free memory, else the system's."""
    if device == "cuda":
        torch = _torch()
        free, _total = torch.cuda.mem_get_info()
        return free / (1024.0 * 1024.0)
    return available_mb()


def _reason(exc: BaseException) -> str:
    """One line of a library's error, without advice we must not give (we never run code from
    a model folder, so "trust_remote_code=True" is never the fix)."""
    text = " ".join(str(exc).split())
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if "remote" not in s.lower()]
    return f"{type(exc).__name__}: {' '.join(sentences)}"[:400].rstrip(": ")


def _load_part(what: str, llm_dir, load):
    try:
        return load()
    except MemoryError:
        raise
    except Exception as exc:   # tokenizers/safetensors/torch raise their own types for bad files
        raise BundleError(f"Cannot load the language model's {what} from {llm_dir} "
                          f"({_reason(exc)}): re-create the bundle with "
                          "`python -m rs_vqa_plugin convert`.") from exc


def _check_model_type(config_path, config: dict) -> None:
    """Only architectures implemented inside transformers load: an unknown model_type would make
    transformers suggest running code from the model folder, which we never do."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise BundleError(
            f"{config_path}: model_type {model_type!r} is not an architecture that transformers "
            f"{transformers.__version__} implements, and rs-vqa never runs model code shipped in "
            f"a model folder. Convert a model of a supported family "
            f"({', '.join(tuple(DEFAULT_TEMPLATES) + IMAGE_TEXT_TYPES)}), or, if this type is "
            "newer than the installed "
            "transformers, update the runtime with ./build.sh setup.")


class LanguageModel:
    """The bundle's causal LM: prompt_segments, embed_ids, generate."""

    # Prompt tokens per prefill forward where the attention holds a chunk x L score matrix (the
    # eager implementation: one pass would hold L x L per head). With SDPA (the default) the
    # prefill runs in one pass: chunks there attend through an explicit mask, which measured 1.7-2.3x
    # slower at 9.4k tokens on 2 CPU cores, and one pass holds no L x L matrix anyway.
    PREFILL_CHUNK = 1024

    def __init__(self, bundle, device: str = "auto", dtype: Optional[str] = None):
        keep_offline()   # before transformers (and huggingface_hub) are imported
        torch = _torch()
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()   # stderr noise in the worker and the CLI

        llm_dir = bundle.llm_dir
        if not list(llm_dir.glob("*.safetensors")):
            raise BundleError(f"{llm_dir} has no *.safetensors weights; pickle weights are "
                              "refused because loading them can run arbitrary code.")
        _check_model_type(llm_dir / "config.json", bundle.llm_config)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(self.device, dtype, (bundle.manifest.llm or {}).get("dtype"))
        check_weights_fit(llm_dir, self.dtype.itemsize, self.device, _free_mb(self.device))
        self.tokenizer = _load_part("tokenizer (tokenizer.json, tokenizer_config.json)", llm_dir,
                                    lambda: AutoTokenizer.from_pretrained(
                                        llm_dir, local_files_only=True, trust_remote_code=False))
        image_text = bundle.llm_config.get("model_type") in IMAGE_TEXT_TYPES
        auto = AutoModelForImageTextToText if image_text else AutoModelForCausalLM
        self.model = _load_part("weights", llm_dir, lambda: auto.from_pretrained(
            llm_dir, use_safetensors=True, trust_remote_code=False, local_files_only=True,
            dtype=self.dtype))
        if image_text and getattr(self.model.model, "visual", None) is not None:
            self.model.model.visual = None     # its memory back: vision.onnx encodes the tiles
        self.model = self.model.to(self.device).eval()
        chat = bundle.manifest.chat or {}
        self.template: Optional[str] = chat.get("template") or None
        self.system_prompt: Optional[str] = chat.get("system_prompt") or None
        self.placeholder: str = chat.get("image_placeholder") or IMAGE_PLACEHOLDER
        self.user_turn: str = chat.get("user_turn") or USER_TURN
        self.question_text: str = chat.get("question_text") or "normalised"
        self.image_markers = (chat.get("image_start") or "", chat.get("image_end") or "")
        vocab = self.tokenizer.get_vocab()
        for key, marker in zip(("image_start", "image_end"), self.image_markers):
            if marker and marker not in vocab:
                raise BundleError(f"manifest.json chat.{key} is {marker!r}, which is not a token "
                                  f"of the tokenizer in {llm_dir}: correct it, or re-create the "
                                  "bundle.")
        config = self.model.config.get_text_config()
        self.max_context: int = context_tokens(bundle.manifest, bundle.llm_config)
        self.hidden_size: int = int(config.hidden_size)
        self.stop_ids = self._stop_ids(chat.get("stop_tokens") or [])
        self._embedding = self.model.get_input_embeddings()
        params = inspect.signature(self.model.forward).parameters
        # transformers 5.x renamed past_key_values to cache; accept either.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._torch = torch
        # A template that cannot render fails the load, not the first question.
        self.prompt_segments("Does the chat template render?")

    def _stop_ids(self, stop_tokens: Sequence[str]) -> set:
        ids = set()
        vocab = self.tokenizer.get_vocab()
        for token in stop_tokens:
            if token in vocab:
                ids.add(int(vocab[token]))
        for source in (self.tokenizer.eos_token_id,
                       getattr(self.model.config.get_text_config(), "eos_token_id", None),
                       getattr(self.model.generation_config, "eos_token_id", None)):
            if source is None:
                continue
            ids.update(int(i) for i in (source if isinstance(source, (list, tuple)) else [source]))
        return ids

    # ------------------------------------------------------------------ text
    def _ids(self, text: str) -> List[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_segments(self, question: str, history: Sequence[Tuple[str, str]] = ()
                        ) -> Tuple[List[int], List[int]]:
        """(prefix ids, suffix ids) around the image; the last suffix id is the query token."""
        return prompt_ids(self.tokenizer, self.template, question, history, self.system_prompt,
                          self.placeholder, self.user_turn, self.question_text,
                          self.image_markers)

    def count_tokens(self, text: str) -> int:
        return len(self._ids(text))

    def embed_ids(self, ids: Sequence[int]) -> np.ndarray:
        """float32 [n, D] from the LLM's own embedding table (the RFM sees the same vectors)."""
        torch = self._torch
        with torch.no_grad():
            index = torch.as_tensor(list(ids), dtype=torch.long, device=self.device)
            return self._embedding(index).float().cpu().numpy()

    # ------------------------------------------------------------------ decoding
    def generate(self, embeds: np.ndarray, max_new_tokens: int = 32,
                 on_token: Optional[Callable[[str], None]] = None, cancel=None,
                 positions: Optional[np.ndarray] = None) -> str:
        """Greedy decoding from inputs_embeds [L, D] with a KV cache; stops at a stop token or
        max_new_tokens; on_token receives each new piece of text; cancel is checked per prefill
        chunk and per token. positions: int [3, L] M-RoPE positions of the prompt (mrope.py);
        each new token then takes the next position after the largest; None: 0..L-1."""
        torch = self._torch
        embeds = np.asarray(embeds, dtype=np.float32)
        if embeds.ndim != 2 or embeds.shape[1] != self.hidden_size:
            raise InputError(f"LLM input must be [L, {self.hidden_size}], got {embeds.shape}.")
        if embeds.shape[0] + max_new_tokens > self.max_context:
            raise InputError(f"{embeds.shape[0]} prompt tokens + {max_new_tokens} new tokens "
                             f"exceed the LLM's context of {self.max_context}: lower the tile cap "
                             "or the keep ratio.")
        if int(max_new_tokens) <= 0:
            return ""
        inputs = torch.from_numpy(embeds)[None].to(self.device, self.dtype)
        position_ids = self._position_ids(positions, embeds.shape[0])
        generated: List[int] = []
        emitted = ""
        with torch.no_grad():
            logits, cache = self.prefill(inputs, cancel, positions=position_ids)
            for step in range(int(max_new_tokens)):
                token = int(logits[0, -1].argmax())
                if token in self.stop_ids:
                    break
                generated.append(token)
                emitted = self._stream(generated, emitted, on_token)
                if step + 1 == int(max_new_tokens):
                    break
                if cancel is not None:
                    cancel.raise_if_cancelled()
                step_positions = None
                if position_ids is not None:
                    step_positions = position_ids[:, :, -1:] + 1 + step
                logits, cache = self._forward(
                    self._embedding(torch.tensor([[token]], device=self.device)), cache,
                    step_positions)
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        # Flush what was held back (an unfinished character at the very end).
        if on_token is not None and text.startswith(emitted) and len(text) > len(emitted):
            on_token(text[len(emitted):])
        return text

    def _position_ids(self, positions, length: int):
        """[3, 1, L] long tensor from int [3, L] (None stays None); decoding continues from the
        largest position, which text tokens at the end of the prompt hold on all three axes."""
        if positions is None:
            return None
        positions = np.asarray(positions, dtype=np.int64)
        if positions.shape != (3, length):
            raise InputError(f"M-RoPE positions must be [3, {length}], got {positions.shape}.")
        if not (positions[:, -1] == positions.max()).all():
            raise InputError("M-RoPE positions must end with a text token at the largest "
                             "position (the last prompt token).")
        torch = self._torch
        return torch.from_numpy(positions)[:, None, :].to(self.device)

    def prefill(self, inputs, cancel=None, chunk: Optional[int] = None, positions=None):
        """The first forward over the whole prompt [1, L, D] into the KV cache, in chunks of
        `chunk` tokens (default: prefill_chunk()), cancel checked between chunks and before every
        decoder layer's attention and MLP, so a cancel waits at most one such block. Returns
        (last logits, cache); chunked logits equal one pass's within float rounding (tested)."""
        length = int(inputs.shape[1])
        chunk = int(chunk or self.prefill_chunk() or length or 1)
        cache = None
        logits = None
        with self._layer_checks(cancel):
            for start in range(0, length, chunk):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                part = None if positions is None else positions[:, :, start:start + chunk]
                logits, cache = self._forward(inputs[:, start:start + chunk], cache, part)
        return logits, cache

    def prefill_chunk(self) -> int:
        """Tokens per prefill forward: PREFILL_CHUNK where attention is eager, 0 (one pass) else."""
        implementation = getattr(self.model.config, "_attn_implementation", None) or "eager"
        return int(self.PREFILL_CHUNK) if implementation == "eager" else 0

    @contextmanager
    def _layer_checks(self, cancel):
        """Within the block, each decoder layer and each of its blocks (attention, MLP, norms)
        checks cancel before it runs (forward pre-hooks: Cancelled leaves the forward and the
        half-filled cache is dropped). Hooks cost nothing measurable next to the work."""
        layers = self.decoder_layers()
        if cancel is None or layers is None:
            yield
            return

        def check(_module, _args):
            cancel.raise_if_cancelled()

        modules = [m for layer in layers for m in (layer, *layer.children())]
        handles = [m.register_forward_pre_hook(check) for m in modules]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def decoder_layers(self):
        """The decoder layers (a causal LM's model.layers; an image-text model's
        model.language_model.layers), or None."""
        base = getattr(self.model, "model", None)
        base = getattr(base, "language_model", base)
        return getattr(base, "layers", None)

    def _forward(self, inputs, cache, positions=None):
        extra = {} if positions is None else {"position_ids": positions}
        out = self.model(inputs_embeds=inputs, use_cache=True, logits_to_keep=1,
                         **{self._cache_arg: cache}, **extra)
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = getattr(out, "past_key_values", None)
        return out.logits, cache

    def _stream(self, generated: List[int], emitted: str, on_token) -> str:
        """Decode all tokens so far and pass on the new text; a word split over several tokens
        (or an unfinished UTF-8 character) waits until it decodes cleanly."""
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        if text.endswith("\ufffd") or not text.startswith(emitted):
            return emitted
        if on_token is not None and len(text) > len(emitted):
            on_token(text[len(emitted):])
        return text
