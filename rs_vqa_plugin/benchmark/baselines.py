"""How much of the answers the question's wording gives away: chance levels and text-only predictors.

A benchmark of perception must not be answerable without the image. Per category we compare:
  - uniform: 1 / size of the category's answer vocabulary (questions.ANSWERS);
  - majority: the share of the most frequent answer among the evaluated questions themselves
    (an upper bound of any constant answer);
  - template: learnt on another split (train): the most frequent answer among training questions
    with the same template, i.e. the same text once the reference's colour and extreme words
    ("red", "left-most", "largest", ...) and articles are removed; the category's most frequent
    training answer when the template was never seen;
  - words: multinomial naive Bayes over the question's words and word pairs, learnt on train.
A category whose text-only accuracy is far above its majority rate leaks its answer in the text.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Dict, Iterable, List, Sequence

from .questions import ANSWERS, SUFFIX
from .references import COLORS, EXTREMES

_DROPPED = set(COLORS) | set(EXTREMES) | {"a", "an"}


def words(text: str) -> List[str]:
    text = text[:-len(SUFFIX)] if text.endswith(SUFFIX) else text
    return text.lower().replace("?", " ").split()


def template(text: str) -> str:
    """The question without the reference's colour and extreme words (and articles)."""
    return " ".join(w for w in words(text) if w not in _DROPPED)


class TemplateMajority:
    """The most frequent training answer per (category, template)."""

    def __init__(self, train: Iterable[dict]):
        by_template: Dict[tuple, Counter] = defaultdict(Counter)
        by_category: Dict[str, Counter] = defaultdict(Counter)
        for q in train:
            by_template[(q["category"], template(q["text"]))][q["ground_truth"]] += 1
            by_category[q["category"]][q["ground_truth"]] += 1
        self.templates = {k: _most_common(c) for k, c in by_template.items()}
        self.categories = {k: _most_common(c) for k, c in by_category.items()}

    def predict(self, q: dict) -> str:
        return self.templates.get((q["category"], template(q["text"])), self.categories.get(q["category"], ""))


class WordsNaiveBayes:
    """Multinomial naive Bayes per category over words and word pairs (add-one smoothing)."""

    def __init__(self, train: Iterable[dict]):
        self.prior: Dict[str, Counter] = defaultdict(Counter)
        self.counts: Dict[tuple, Counter] = defaultdict(Counter)
        self.vocab: Dict[str, set] = defaultdict(set)
        for q in train:
            category, answer = q["category"], q["ground_truth"]
            self.prior[category][answer] += 1
            feats = _features(q["text"])
            self.counts[(category, answer)].update(feats)
            self.vocab[category].update(feats)

    def predict(self, q: dict) -> str:
        category = q["category"]
        prior = self.prior.get(category)
        if not prior:
            return ""
        feats = _features(q["text"])
        size = len(self.vocab[category]) + 1
        total = sum(prior.values())

        def log_posterior(answer: str) -> float:
            counts = self.counts[(category, answer)]
            n = sum(counts.values())
            return math.log(prior[answer] / total) + sum(math.log((counts[f] + 1) / (n + size)) for f in feats)

        return max(sorted(prior), key=log_posterior)


def _features(text: str) -> List[str]:
    w = words(text)
    return w + [f"{a} {b}" for a, b in zip(w, w[1:])]


def _most_common(counter: Counter) -> str:
    # ties broken by the answer's text, so the predictor does not depend on the training order
    return min(counter.items(), key=lambda item: (-item[1], item[0]))[0]


def chance_levels(questions: Sequence[dict]) -> Dict[str, dict]:
    """{category: {"n", "uniform", "majority", "majority_answer"}} for the evaluated questions."""
    by_category: Dict[str, Counter] = defaultdict(Counter)
    for q in questions:
        by_category[q["category"]][q["ground_truth"]] += 1
    out = {}
    for category, counts in sorted(by_category.items()):
        n = sum(counts.values())
        answer = _most_common(counts)
        out[category] = {"n": n, "uniform": 1.0 / len(ANSWERS.get(category, counts)),
                         "majority": counts[answer] / n, "majority_answer": answer}
    return out


def accuracy_by_category(questions: Sequence[dict], predicted: Dict[str, str]) -> Dict[str, float]:
    """{category: accuracy} of predicted answers ({question_id: text}), scored by the engine's rules."""
    from ..engine.scoring import is_correct

    right: Counter = Counter()
    total: Counter = Counter()
    for q in questions:
        if q["question_id"] not in predicted:
            continue
        total[q["category"]] += 1
        right[q["category"]] += is_correct(q["ground_truth"], predicted[q["question_id"]])
    return {c: right[c] / total[c] for c in sorted(total)}


PREDICTORS = {"template": TemplateMajority, "words": WordsNaiveBayes}


def text_baselines(train: Sequence[dict], questions: Sequence[dict]) -> Dict[str, Dict[str, float]]:
    """{predictor: {category: accuracy}} on `questions` for the text-only predictors learnt on `train`."""
    out = {}
    for name, make in PREDICTORS.items():
        model = make(train)
        out[name] = accuracy_by_category(questions, {q["question_id"]: model.predict(q) for q in questions})
    return out


def blind_table(questions: Sequence[dict], columns: Dict[str, Dict[str, float]]) -> str:
    """Markdown: per category n, uniform chance, majority rate, then one column per accuracy dict."""
    chance = chance_levels(questions)
    head = ["category", "n", "uniform", "majority"] + list(columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    pct = lambda v: "-" if v is None else f"{100 * v:.0f}"     # noqa: E731
    for category, c in chance.items():
        row = [category, str(c["n"]), pct(c["uniform"]), pct(c["majority"])]
        row += [pct(col.get(category)) for col in columns.values()]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
