"""The answer vocabulary of each LRS-VQA category of the synthetic benchmark, and whether an answer
is of the asked kind (a colour for a colour question, digits for a count, ...), right or wrong.

A model that answers "concrete" to "What is the color of ...?" has not understood the question;
this tells that failure apart from a wrong colour. The words are the generator's own
(references.py); count answers are digits."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from ..engine.scoring import normalise
from .references import BACKGROUNDS, CATEGORIES, COLORS, SHAPES, STATUSES

COUNT = "count"
# category -> the closed answer vocabulary (count: any digits, listed separately)
VOCABULARY: Dict[str, Tuple[str, ...]] = {
    "object background": BACKGROUNDS,
    "object category": CATEGORIES,
    "object color": COLORS,
    "object shape": SHAPES,
    "object status": STATUSES,
    "reasoning": ("yes", "no"),
    "rural or urban": ("rural", "urban"),
}
KINDS = (COUNT,) + tuple(sorted(VOCABULARY))
# the count answers a training loss lists explicitly (the generator asks up to 20)
COUNT_WORDS = tuple(str(n) for n in range(0, 21))


def answer_words(category: str) -> Optional[Tuple[str, ...]]:
    """The answers of a category (count: "0".."20"); None for a category we do not know."""
    if category == COUNT:
        return COUNT_WORDS
    return VOCABULARY.get(category)


def is_of_kind(category: str, answer: str) -> Optional[bool]:
    """True when the answer (as scored: stripped, lower case) is in the category's vocabulary
    (count: digits only); None for a category outside the benchmark's eight."""
    text = normalise(answer)
    if category == COUNT:
        return text.isdigit()
    words = VOCABULARY.get(category)
    if words is None:
        return None
    return text in words
