"""The default model's tokenizer: byte-level BPE trained offline on the question/answer corpus.

Byte-level, so any text still encodes (a question with unseen words degrades, it does not fail);
the merges come from the training questions and answers, so they cost one or two tokens a word."""

from __future__ import annotations

from typing import Iterable

from ...engine.prompt import CHATML_TEMPLATE, DEFAULT_SYSTEM_PROMPTS
from ..tiny_model import SPECIAL_TOKENS

# Words the chat template and the LRS-VQA question style always use.
_FIXED_TEXT = [DEFAULT_SYSTEM_PROMPTS["qwen2"], "system", "user", "assistant",
               "Answer the question using a single word or phrase.",
               "zero one two three four five six seven eight nine ten yes no"]


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """PreTrainedTokenizerFast with the ChatML template attached (the converter keeps it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    corpus = [str(t) for t in texts] + _FIXED_TEXT * 20
    tok.train_from_iterator(sorted(corpus), trainer=trainer)   # sorted: same merges every run
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token=None,
                                   additional_special_tokens=["<|im_start|>", "<image>"])
    fast.chat_template = CHATML_TEMPLATE
    return fast
