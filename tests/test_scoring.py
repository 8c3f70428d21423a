"""LRS-VQA scoring: exact match, WordNet synonyms from Debian's data, per subset OA and AA."""

from __future__ import annotations

import json

import pytest

from rs_vqa_plugin.engine.errors import InputError
from rs_vqa_plugin.engine.scoring import (are_synonyms, is_correct, normalise, score_file,
                                          score_records)
from rs_vqa_plugin.engine.wordnet import lexnames_text, wordnet


def test_lexnames_match_the_wordnet_manual():
    import gzip
    from pathlib import Path

    manual = Path("/usr/share/man/man5/lexnames.5WN.gz")
    if not manual.exists():
        pytest.skip("lexnames(5WN) manual page not installed")
    rows = [line.split("\t")[:2] for line in gzip.open(manual, "rt") if line[:2].isdigit()]
    ours = [line.split("\t")[:2] for line in lexnames_text().splitlines()]
    assert [[n, name.strip()] for n, name in rows] == ours


def test_wordnet_reads_debian_data():
    wn = wordnet()
    assert wn.synsets("dog")[0].lexname() == "noun.animal"


def test_synonyms_by_path_similarity():
    assert are_synonyms("car", "automobile")
    assert are_synonyms("grey", "gray")
    assert not are_synonyms("ship", "boat")       # path similarity 1/3
    assert not are_synonyms("red", "blue")


def test_is_correct_lower_cases_and_trims():
    assert normalise("  Yes ") == "yes"
    assert not is_correct("yes", "Yes.")      # the reference counts a trailing stop as wrong
    assert is_correct("airplane", "Plane")
    assert is_correct("2", "two")
    assert not is_correct("3", "two")
    assert not is_correct("white", "")


def _questions():
    return [
        {"question_id": "FAIR_1", "category": "count", "ground_truth": "2"},
        {"question_id": "FAIR_2", "category": "count", "ground_truth": "5"},
        {"question_id": "FAIR_3", "category": "object color", "ground_truth": "white"},
        {"question_id": "STAR_1", "category": "object category", "ground_truth": "car"},
        {"question_id": "STAR_2", "category": "object category", "ground_truth": "ship"},
        {"question_id": "STAR_3", "category": "rural or urban", "ground_truth": "urban"},
    ]


def test_score_records_per_subset_oa_and_aa():
    answers = [
        {"question_id": "FAIR_1", "text": "2"},
        {"question_id": "FAIR_2", "text": "4"},
        {"question_id": "FAIR_3", "text": "White"},
        {"question_id": "STAR_1", "text": "automobile"},
        {"question_id": "STAR_2", "text": "boat"},
    ]
    scores = score_records(_questions(), answers)
    fair = scores["subsets"]["FAIR"]
    assert fair["categories"]["count"]["accuracy"] == 0.5
    assert fair["OA"] == pytest.approx(2 / 3)
    assert fair["AA"] == pytest.approx((0.5 + 1.0) / 2)
    star = scores["subsets"]["STAR"]
    assert star["answered"] == 2 and star["OA"] == 0.5
    assert scores["unanswered"] == 1
    assert scores["overall"]["OA"] == pytest.approx(3 / 5)


def test_score_file_reads_jsonl(tmp_path):
    q = tmp_path / "q.jsonl"
    a = tmp_path / "a.jsonl"
    q.write_text("\n".join(json.dumps(r) for r in _questions()) + "\n")
    a.write_text(json.dumps({"question_id": "STAR_3", "text": "urban"}) + "\n")
    scores = score_file(q, a)
    assert scores["subsets"]["STAR"]["AA"] == 1.0 and scores["unanswered"] == 5


def test_score_file_bad_json_names_the_line(tmp_path):
    q = tmp_path / "q.jsonl"
    q.write_text('{"question_id": "FAIR_1"}\nnot json\n')
    with pytest.raises(InputError, match="line 2"):
        score_file(q, q)


def _reference_scores(answer_items):
    """The reference script's rules (Script/evaluation_LRSVQA.py), restated: group by the prefix of
    `id`; per item lower-case ground_truth and text; skip items without ground truth or category;
    correct if equal or if any synset pair of the two has path similarity > 0.8; per subset the
    category accuracies, OA = correct / samples and AA = their mean."""
    wn = wordnet()

    def synonyms(a, b):
        return any((s1.path_similarity(s2) or 0) > 0.8
                   for s1 in wn.synsets(a) for s2 in wn.synsets(b))

    groups = {}
    for item in answer_items:
        groups.setdefault(item["id"].split("_")[0], []).append(item)
    out = {}
    for name, items in groups.items():
        correct, total = {}, {}
        for item in items:
            gt, ans, cat = item.get("ground_truth", "").lower(), item.get("text", "").lower(), \
                item.get("category")
            if not gt or not cat:
                continue
            ok = gt == ans or synonyms(gt, ans)
            correct[cat] = correct.get(cat, 0) + ok
            total[cat] = total.get(cat, 0) + 1
        accs = [correct[c] / total[c] for c in sorted(total)]
        out[name] = {"correct": sum(correct.values()), "samples": sum(total.values()),
                     "per_category": {c: (correct[c], total[c]) for c in sorted(total)},
                     "AA": sum(accs) / len(accs)}
    return out


# Ground truths in LRS-VQA's style and answers a model gives, synonym matches included.
FIXED_ANSWERS = [
    ("FAIR_1", "count", "2", "2"), ("FAIR_2", "count", "12", "two"), ("FAIR_3", "count", "2", "two"),
    ("FAIR_4", "object color", "grey", "gray"), ("FAIR_5", "object color", "white", "White"),
    ("FAIR_6", "object color", "red", "blue"), ("FAIR_7", "object category", "car", "automobile"),
    ("FAIR_8", "object category", "airplane", "plane"), ("FAIR_9", "object category", "ship", "boat"),
    ("FAIR_10", "object category", "truck", "motortruck"), ("FAIR_11", "object status", "yes", "Yes."),
    ("STAR_1", "rural or urban", "urban", "urban"), ("STAR_2", "rural or urban", "rural", "country"),
    ("STAR_3", "reasoning", "no", "No"), ("STAR_4", "object shape", "rectangle", "rectangular"),
    ("STAR_5", "object background", "water", "H2O"), ("STAR_6", "object background", "grass", "lawn"),
    ("GLH-Bridge_1", "object category", "bridge", "span"), ("GLH-Bridge_2", "count", "1", "one"),
    ("GLH-Bridge_3", "count", "", "1"), ("GLH-Bridge_4", "object status", "intact", "intact"),
]


def test_our_scores_equal_the_reference_scripts_rules():
    questions = [{"question_id": q, "category": c, "ground_truth": gt} for q, c, gt, _ in FIXED_ANSWERS]
    items = [{"id": q, "question_id": q, "category": c, "ground_truth": gt, "text": a.strip()}
             for q, c, gt, a in FIXED_ANSWERS]
    ours = score_records(questions, items)
    reference = _reference_scores(items)
    assert set(ours["subsets"]) == set(reference)
    for name, ref in reference.items():
        mine = ours["subsets"][name]
        assert (mine["correct"], mine["answered"]) == (ref["correct"], ref["samples"]), name
        assert {c: (v["correct"], v["total"]) for c, v in mine["categories"].items()} == \
            ref["per_category"]
        assert mine["AA"] == pytest.approx(ref["AA"])
    # The set exercises synonyms both ways: matches by WordNet, and near words that are not.
    synonym_hits = [q for q, _, gt, a in FIXED_ANSWERS if gt and gt != a.lower() and is_correct(gt, a)]
    assert len(synonym_hits) >= 5 and "FAIR_9" not in synonym_hits and "FAIR_11" not in synonym_hits
    assert ours["unscored"] == 1


def test_answer_records_carry_the_reference_id_field():
    from types import SimpleNamespace

    from rs_vqa_plugin.engine.evaluate import answer_record

    question = {"question_id": "FAIR_7", "image": "a.tif", "text": "q", "category": "count",
                "ground_truth": "1"}
    record = answer_record(question, SimpleNamespace(text="1", mode="dip", trace={}))
    assert record["id"] == record["question_id"] == "FAIR_7"
    assert {"text", "ground_truth", "category"} <= set(record)
