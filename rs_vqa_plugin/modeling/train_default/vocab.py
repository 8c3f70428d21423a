"""The default model's tokenizer: byte-level BPE trained offline on the question/answer corpus.

Byte-level, so any text still encodes (a question with unseen words degrades, it does not fail);
the merges come from the training questions and answers, so they cost one or two tokens a word."""

from __future__ import annotations

from typing import Iterable

from ...engine.prompt import DEFAULT_SYSTEM_PROMPTS
from ..tiny_model import train_chatml_bpe

# Words the chat template and the LRS-VQA question style always use.
_FIXED_TEXT = [DEFAULT_SYSTEM_PROMPTS["qwen2"], "system", "user", "assistant",
               "Answer the question using a single word or phrase.",
               "zero one two three four five six seven eight nine ten yes no"]


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """PreTrainedTokenizerFast with the ChatML template attached (the converter keeps it)."""
    corpus = [str(t) for t in texts] + _FIXED_TEXT * 20
    return train_chatml_bpe(sorted(corpus), vocab_size)   # sorted: same merges every run
