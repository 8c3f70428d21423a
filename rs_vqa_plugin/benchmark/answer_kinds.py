"""Whether an answer is of the asked kind (a colour for a colour question, digits for a count, ...),
right or wrong, by the generator's closed answer vocabulary (questions.ANSWERS).

A model that answers "concrete" to "What is the color of ...?" has not understood the question;
this tells that failure apart from a wrong colour."""

from __future__ import annotations

from typing import Optional, Tuple

from ..engine.scoring import normalise
from .questions import ANSWERS, CATEGORIES

COUNT = "count"
KINDS = tuple(CATEGORIES)       # index order of the answer-kind tables in training


def answer_words(category: str) -> Optional[Tuple[str, ...]]:
    """The answers of a category (count: "0".."20"); None for a category we do not know."""
    words = ANSWERS.get(category)
    return tuple(words) if words is not None else None


def is_of_kind(category: str, answer: str) -> Optional[bool]:
    """True when the answer (as scored: stripped, lower case) is in the category's vocabulary
    (count: any digits); None for a category outside the benchmark's eight."""
    text = normalise(answer)
    if category == COUNT:
        return text.isdigit()
    words = ANSWERS.get(category)
    if words is None:
        return None
    return text in words
