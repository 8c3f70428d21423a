"""Chat prompts around the image: render the template with a placeholder, split it into prefix/suffix.

Pure text logic plus a tokenizer handed in; no torch. The converter chooses the template once and
stores it in the manifest, so the RFM, the LLM and distillation all see the same text.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from .errors import BundleError

IMAGE_PLACEHOLDER = "<image>"

# Qwen2-style ChatML: a default system prompt when none is given.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

# LLaVA-1.5 / Vicuna v1 conversation style ("USER: ... ASSISTANT:").
VICUNA_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + ' ' }}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if message['role'] == 'user' %}{{ 'USER: ' + message['content'] + ' ' }}"
    "{% else %}{{ 'ASSISTANT: ' + message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")

DEFAULT_TEMPLATES = {"qwen2": ("chatml", CHATML_TEMPLATE), "llama": ("vicuna", VICUNA_TEMPLATE),
                     "mistral": ("vicuna", VICUNA_TEMPLATE)}
DEFAULT_SYSTEM_PROMPTS = {
    "qwen2": "You are a helpful assistant.",
    "llama": "A chat between a curious human and an artificial intelligence assistant. The "
             "assistant gives helpful, detailed, and polite answers to the human's questions.",
}
DEFAULT_SYSTEM_PROMPTS["mistral"] = DEFAULT_SYSTEM_PROMPTS["llama"]


def build_messages(question: str, history: Sequence[Tuple[str, str]] = (),
                   system_prompt: Optional[str] = None,
                   placeholder: str = IMAGE_PLACEHOLDER) -> List[dict]:
    """Chat messages; the image goes at the start of the first user turn (LLaVA convention)."""
    def clean(text: str) -> str:
        # A placeholder typed by the user must not become a second image slot.
        return str(text).replace(placeholder, "image").strip()

    messages: List[dict] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    turns = [(clean(q), clean(a)) for q, a in history] + [(clean(question), None)]
    for i, (q, a) in enumerate(turns):
        messages.append({"role": "user", "content": (placeholder + "\n" + q) if i == 0 else q})
        if a is not None:
            messages.append({"role": "assistant", "content": a})
    return messages


def render_prompt(tokenizer, template: Optional[str], messages: List[dict]) -> str:
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                         add_generation_prompt=True)


def split_prompt(text: str, placeholder: str = IMAGE_PLACEHOLDER) -> Tuple[str, str]:
    if text.count(placeholder) != 1:
        raise BundleError(f"The chat template rendered {text.count(placeholder)} image "
                          f"placeholders '{placeholder}' instead of one: check manifest.json chat.")
    prefix, suffix = text.split(placeholder)
    return prefix, suffix


def template_accepts_text(tokenizer, template: Optional[str]) -> bool:
    """True when the template renders plain-string message content verbatim. Multimodal processor
    templates expect content lists and would mangle our placeholder."""
    if not template:
        return False
    probe = f"{IMAGE_PLACEHOLDER}\nPROBE QUESTION 7"
    try:
        text = render_prompt(tokenizer, template, [{"role": "user", "content": probe}])
    except Exception:
        return False
    return probe in text


def choose_template(tokenizer, family: str) -> Tuple[str, str]:
    """(template text, where it came from): the tokenizer's own if it takes text content, else the
    family default."""
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, str) and template_accepts_text(tokenizer, own):
        return own, "tokenizer"
    name, text = DEFAULT_TEMPLATES.get(family, DEFAULT_TEMPLATES["llama"])
    return text, f"default:{name}"
