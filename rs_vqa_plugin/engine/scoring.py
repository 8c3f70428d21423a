"""LRS-VQA scoring (METHOD.md §7): exact match or WordNet path similarity > 0.8, per subset and category.

Accuracy per category, OA (micro: correct / answered) and AA (mean of the category accuracies,
the paper's headline number), for each subset (question_id prefix before '_') and over all.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Tuple

from .errors import InputError

SIMILARITY_THRESHOLD = 0.8


def normalise(text: str) -> str:
    """Lower case, as the reference scorer does (its answers are stripped when written; ours too).
    Nothing else: a trailing full stop counts as wrong there, so it does here."""
    return (text or "").strip().lower()


@lru_cache(maxsize=65536)
def are_synonyms(word_a: str, word_b: str) -> bool:
    """True when any synset pair of the two has path similarity above the threshold."""
    from .wordnet import wordnet

    wn = wordnet()
    synsets_b = wn.synsets(word_b)
    for synset_a in wn.synsets(word_a):
        for synset_b in synsets_b:
            similarity = synset_a.path_similarity(synset_b)
            if similarity is not None and similarity > SIMILARITY_THRESHOLD:
                return True
    return False


def is_correct(ground_truth: str, answer: str) -> bool:
    gt, ans = normalise(ground_truth), normalise(answer)
    if not gt or not ans:
        return False
    return gt == ans or are_synonyms(gt, ans)


def subset_of(question_id) -> str:
    return str(question_id).split("_")[0]


def _summary(correct: Mapping[str, int], total: Mapping[str, int]) -> dict:
    categories = OrderedDict()
    for category in sorted(total):
        categories[category] = {"correct": correct.get(category, 0), "total": total[category],
                                "accuracy": correct.get(category, 0) / total[category]}
    answered = sum(total.values())
    right = sum(correct.values())
    return {
        "answered": answered,
        "correct": right,
        "categories": categories,
        "OA": right / answered if answered else None,
        "AA": (sum(c["accuracy"] for c in categories.values()) / len(categories)) if categories else None,
    }


def score_records(questions: Iterable[dict], answers: Iterable[dict]) -> dict:
    """Score answers ({question_id, text}) against LRS-VQA questions ({question_id, category,
    ground_truth}). Questions without an answer are counted as unanswered, not as wrong; those
    without a ground truth or a category are left out, as the reference's script does."""
    by_id: Dict[str, str] = {}
    for record in answers:
        if "question_id" not in record:
            raise InputError(f"An answer record has no question_id: {json.dumps(record)[:200]}")
        by_id[str(record["question_id"])] = str(record.get("text", record.get("answer", "")))
    per_subset: Dict[str, tuple] = OrderedDict()
    overall_correct: Dict[str, int] = {}
    overall_total: Dict[str, int] = {}
    unanswered = unscored = 0
    for question in questions:
        qid = str(question["question_id"])
        if qid not in by_id:
            unanswered += 1
            continue
        category = question.get("category")
        if not category or not str(question.get("ground_truth") or ""):
            # The reference leaves such items out of the totals.
            unscored += 1
            continue
        ok = is_correct(str(question.get("ground_truth", "")), by_id[qid])
        correct, total = per_subset.setdefault(subset_of(qid), ({}, {}))
        for c, t in ((correct, total), (overall_correct, overall_total)):
            t[category] = t.get(category, 0) + 1
            c[category] = c.get(category, 0) + int(ok)
    return {
        "subsets": {name: _summary(c, t) for name, (c, t) in sorted(per_subset.items())},
        "overall": _summary(overall_correct, overall_total),
        "unanswered": unanswered,
        "unscored": unscored,
    }


JSON_KINDS = {bool: "true/false", int: "a number", float: "a number", str: "a string",
              list: "an array", type(None): "null"}


def read_jsonl_numbered(path, what: str = "JSON-lines file") -> List[Tuple[int, dict]]:
    """(line number, object) for every non-blank line; any other line is refused by number."""
    from .textfile import read_utf8_text

    path = Path(path)
    if not path.is_file() and not path.is_dir():
        raise InputError(f"{path} does not exist: give a JSON-lines file (one object per line).")
    records = []
    # Split on newlines only: JSON strings may hold U+2028 and other characters splitlines() cuts at.
    for number, line in enumerate(read_utf8_text(path, what).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}, line {number}: not valid JSON ({exc.msg}).") from exc
        if not isinstance(record, dict):
            raise InputError(f"{path}, line {number}: {JSON_KINDS.get(type(record), 'a value')} "
                             "where one JSON object is expected, e.g. "
                             '{"question_id": "q1", "image": "a.tif", "text": "How many ships?"}.')
        records.append((number, record))
    return records


def read_jsonl(path) -> List[dict]:
    return [record for _number, record in read_jsonl_numbered(path)]


def score_file(questions_path, answers_path) -> dict:
    return score_records(read_jsonl(questions_path), read_jsonl(answers_path))


def format_scores(scores: dict) -> str:
    """A plain-text table: one block per subset, accuracy per category, OA and AA in percent."""
    lines = []
    blocks = list(scores["subsets"].items()) + [("all", scores["overall"])]
    for name, summary in blocks:
        if not summary["answered"]:
            continue
        lines.append(f"{name}: {summary['answered']} answered")
        for category, c in summary["categories"].items():
            lines.append(f"  {category:<20} {c['correct']:>5}/{c['total']:<5} {100 * c['accuracy']:6.2f}")
        lines.append(f"  {'OA':<20} {100 * summary['OA']:18.2f}")
        lines.append(f"  {'AA':<20} {100 * summary['AA']:18.2f}")
    if scores.get("unanswered"):
        lines.append(f"unanswered: {scores['unanswered']}")
    return "\n".join(lines)
