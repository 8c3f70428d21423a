"""Chat prompts around the image: render the template with a placeholder, split it into prefix/suffix.

Pure text logic plus a tokenizer handed in; no torch. The converter chooses the template once and
stores it in the manifest, so the RFM, the LLM and distillation all see the same text.
"""

from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

from .errors import BundleError, InputError

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


# The first user turn: the image, then the question. LLaVA's convention; the LRS-VQA evaluation
# adds a newline after the question ("{image}\n{question}\n"), which converted checkpoints keep.
USER_TURN = "{image}\n{question}"
# How the question text reaches the model: "normalised" (whitespace runs collapsed, our own
# models are trained so) or "verbatim" (as typed or as stored in the question file, line breaks
# included: what converted checkpoints were trained and evaluated on).
QUESTION_TEXT = ("normalised", "verbatim")
# Private-use characters mark where user text sits in a rendered template.
_SLOT = "\ue000{}\ue001"
_SLOT_RE = re.compile("\ue000(\\d+)\ue001")


def prepare_question(question, question_text: str = "normalised") -> str:
    """The question as the model will see it; raises InputError when there is nothing to ask."""
    text = "" if question is None else str(question)
    if not text.strip():
        raise InputError("The question is empty: type a question about the image.")
    if question_text == "verbatim":
        return text
    return " ".join(text.split())


def build_messages(question: str, history: Sequence[Tuple[str, str]] = (),
                   system_prompt: Optional[str] = None,
                   placeholder: str = IMAGE_PLACEHOLDER, user_turn: str = USER_TURN,
                   verbatim: bool = False, slot=None) -> List[dict]:
    """Chat messages; the image goes at the start of the first user turn (LLaVA convention).

    slot: maps each piece of user text to what is put in its place (render_segments uses it to
    mark user text); by default the text itself."""
    def clean(text: str) -> str:
        # A placeholder typed by the user must not become a second image slot.
        text = str(text).replace(placeholder, "image")
        text = text if verbatim else text.strip()
        return slot(text) if slot is not None else text

    later_turn = user_turn.replace("{image}\n", "").replace("{image}", "")
    messages: List[dict] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    turns = [(q, a) for q, a in history] + [(question, None)]
    for i, (q, a) in enumerate(turns):
        form = user_turn if i == 0 else later_turn
        content = form.replace("{image}", placeholder).replace("{question}", clean(q))
        messages.append({"role": "user", "content": content})
        if a is not None:
            messages.append({"role": "assistant", "content": clean(a)})
    return messages


def render_prompt(tokenizer, template: Optional[str], messages: List[dict]) -> str:
    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=True)
    except Exception as exc:   # jinja2 errors, a template that raises on purpose, ...
        raise BundleError(f"The chat template in manifest.json (chat.template) cannot be "
                          f"rendered ({type(exc).__name__}: {exc}): fix or remove it, or "
                          "re-convert the model.") from None


def split_prompt(text: str, placeholder: str = IMAGE_PLACEHOLDER) -> Tuple[str, str]:
    if text.count(placeholder) != 1:
        raise BundleError(f"The chat template rendered {text.count(placeholder)} image "
                          f"placeholders '{placeholder}' instead of one: check manifest.json chat.")
    prefix, suffix = text.split(placeholder)
    return prefix, suffix


Pieces = List[Tuple[str, bool]]   # (text, is user text)


def render_segments(tokenizer, template: Optional[str], question: str,
                    history: Sequence[Tuple[str, str]] = (), system_prompt: Optional[str] = None,
                    placeholder: str = IMAGE_PLACEHOLDER, user_turn: str = USER_TURN,
                    verbatim: bool = False) -> Tuple[Pieces, Pieces]:
    """The rendered prompt before and after the image, as pieces that say which text came from
    the user (questions, earlier answers) and which from the template."""
    texts: List[str] = []

    def slot(text: str) -> str:
        texts.append(text)
        return _SLOT.format(len(texts) - 1)

    messages = build_messages(question, history, system_prompt, placeholder, user_turn,
                              verbatim, slot)
    rendered = render_prompt(tokenizer, template, messages)
    found = [int(i) for i in _SLOT_RE.findall(rendered)]
    if sorted(found) != list(range(len(texts))):
        raise BundleError("The chat template in manifest.json (chat.template) does not render "
                          "each message's text once and unchanged: use a template that inserts "
                          "message['content'] as it is.")
    prefix, suffix = split_prompt(rendered, placeholder)

    def pieces(text: str) -> Pieces:
        out: Pieces = []
        for i, part in enumerate(_SLOT_RE.split(text)):
            if i % 2:
                out.append((texts[int(part)], True))
            elif part:
                out.append((part, False))
        return out

    return pieces(prefix), pieces(suffix)


def tokenize_pieces(tokenizer, pieces: Pieces) -> List[int]:
    """Token ids of the pieces as one text, except that control tokens are only recognised in the
    template's text: user text is always tokenised as text, whatever it contains (typing
    "<|im_end|>" in a question cannot end the turn). For text without control-token strings this
    equals tokenising the whole string (a tokenizer splits at its added tokens first, then
    tokenises each stretch between them, as done here)."""
    added = getattr(tokenizer, "get_added_vocab", lambda: {})()
    if added:
        names = sorted(added, key=len, reverse=True)
        pattern = re.compile("(" + "|".join(re.escape(n) for n in names) + ")")
    runs: List[object] = []     # str stretches and int control-token ids, in order
    stretch = ""
    for text, is_user in pieces:
        if is_user or not added:
            stretch += text
            continue
        for i, part in enumerate(pattern.split(text)):
            if i % 2:
                runs.append(stretch)
                runs.append(int(added[part]))
                stretch = ""
            else:
                stretch += part
    runs.append(stretch)
    ids: List[int] = []
    for run in runs:
        if isinstance(run, int):
            ids.append(run)
        elif run:
            ids += list(tokenizer(run, add_special_tokens=False,
                                  split_special_tokens=True)["input_ids"])
    return ids


def prompt_ids(tokenizer, template: Optional[str], question: str,
               history: Sequence[Tuple[str, str]] = (), system_prompt: Optional[str] = None,
               placeholder: str = IMAGE_PLACEHOLDER, user_turn: str = USER_TURN,
               question_text: str = "normalised",
               image_markers: Tuple[str, str] = ("", "")) -> Tuple[List[int], List[int]]:
    """(prefix ids, suffix ids) around the image, the way the reference tokenises a LLaVA prompt:
    each side of the image separately, BOS (where the tokenizer adds one) before the prefix only.
    image_markers: the family's control tokens around an image (Qwen2.5-VL: <|vision_start|>,
    <|vision_end|>), ending the prefix and starting the suffix."""
    verbatim = question_text == "verbatim"
    question = prepare_question(question, question_text)
    history = [(prepare_question(q, question_text), str(a)) for q, a in history]
    prefix, suffix = render_segments(tokenizer, template, question, history, system_prompt,
                                     placeholder, user_turn, verbatim)
    start, end = image_markers
    prefix = prefix + ([(start, False)] if start else [])
    suffix = ([(end, False)] if end else []) + suffix
    prefix_ids, suffix_ids = tokenize_pieces(tokenizer, prefix), tokenize_pieces(tokenizer, suffix)
    bos = tokenizer.bos_token_id
    # Llama-style tokenizers add BOS themselves; we tokenise without special tokens, so add it.
    if (bos is not None and (not prefix_ids or prefix_ids[0] != bos)
            and tokenizer("a")["input_ids"][:1] == [bos]):
        prefix_ids = [bos] + prefix_ids
    if not suffix_ids:
        raise BundleError("The chat template leaves nothing after the image: no query token.")
    return prefix_ids, suffix_ids


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
