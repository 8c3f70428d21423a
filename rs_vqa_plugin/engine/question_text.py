"""Cheap checks of a question's text, made before anything tokenises it.

A 10 MB paste into the question box must be refused without running the tokenizer over it (that
alone holds hundreds of MB), and bytes that are not UTF-8 (a terminal in another encoding gives
Python's argv surrogate escapes) must be named, not crash the tokenizer.
"""

from __future__ import annotations

from typing import Sequence, Tuple

from .errors import InputError

# No tokenizer we load packs more than a few characters into an average token (English text is
# ~4 characters per token); text longer than 16 characters per context token cannot fit.
CHARS_PER_TOKEN = 16


def max_question_chars(context_tokens: int) -> int:
    return int(context_tokens) * CHARS_PER_TOKEN


def check_question_text(question, history: Sequence[Tuple[str, str]] = (),
                        context_tokens: int = 0) -> None:
    """Raise InputError for a question (with the earlier turns) that is not text, not Unicode,
    or far longer than a context of `context_tokens` tokens can hold (0: no length check)."""
    if not isinstance(question, str):
        raise InputError(f"The question must be text, not {type(question).__name__}.")
    texts = [("The question", question)]
    for number, turn in enumerate(history or (), start=1):
        if len(turn) != 2 or not all(isinstance(t, str) for t in turn):
            raise InputError(f"Earlier turn {number} must be a pair of texts (question, answer).")
        texts += [(f"Earlier question {number}", turn[0]), (f"Earlier answer {number}", turn[1])]
    if context_tokens:
        total = sum(len(text) for _, text in texts)
        limit = max_question_chars(context_tokens)
        if total > limit:
            raise InputError(
                f"The question{' with the earlier turns' if history else ''} is {total:,} "
                f"characters long, more than the language model's context of {context_tokens:,} "
                f"tokens can hold (at most {limit:,} characters): shorten it"
                f"{' or start a new conversation' if history else ''}.")
    for what, text in texts:
        _check_unicode(what, text)


def _check_unicode(what: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        # Python keeps an undecodable argv byte 0xNN as the lone surrogate U+DCNN.
        shown = f"the byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else \
            f"the lone surrogate U+{code:04X}"
        raise InputError(f"{what} is not valid text: {shown} at character {exc.start + 1} is "
                         "not UTF-8. Retype it, or set the terminal or file to UTF-8.") from None
