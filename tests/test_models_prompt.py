"""Chat templates around the image placeholder (engine.prompt), with a real offline tokenizer."""

from __future__ import annotations

import pytest

from rs_vqa_plugin.engine.errors import BundleError
from rs_vqa_plugin.engine.prompt import (VICUNA_TEMPLATE, build_messages, choose_template,
                                         render_prompt, split_prompt)

# A processor-style template: content is a list of {"type": ...} parts, not plain text.
MULTIMODAL_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% for part in m['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% else %}<image>{% endif %}"
    "{% endfor %}\n{% endfor %}")


@pytest.fixture(scope="module")
def tokenizer():
    from rs_vqa_plugin.modeling.tiny_model import train_tokenizer

    return train_tokenizer(400)


def test_messages_put_image_in_first_user_turn():
    messages = build_messages("and now?", [("what is it?", "a port")], "SYS")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "<image>\nwhat is it?"
    assert messages[3]["content"] == "and now?"
    assert build_messages("q")[0] == {"role": "user", "content": "<image>\nq"}


def test_vicuna_default_for_llama_without_usable_template(tokenizer):
    tokenizer.chat_template = MULTIMODAL_TEMPLATE
    template, source = choose_template(tokenizer, "llama")
    assert (template, source) == (VICUNA_TEMPLATE, "default:vicuna")
    text = render_prompt(tokenizer, template, build_messages(
        "How many ships?", [("Any planes?", "no")], "A chat."))
    prefix, suffix = split_prompt(text)
    assert prefix == "A chat. USER: "
    assert suffix == "\nAny planes? ASSISTANT: no<|im_end|>USER: How many ships? ASSISTANT:"


def test_own_text_template_is_kept(tokenizer):
    from rs_vqa_plugin.engine.prompt import CHATML_TEMPLATE

    tokenizer.chat_template = CHATML_TEMPLATE
    assert choose_template(tokenizer, "qwen2") == (CHATML_TEMPLATE, "tokenizer")


def test_split_needs_exactly_one_placeholder():
    with pytest.raises(BundleError, match="2 image placeholders"):
        split_prompt("a <image> b <image>")
    with pytest.raises(BundleError, match="0 image placeholders"):
        split_prompt("no image here")
