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
    assert normalise("  Yes. ") == "yes"
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
