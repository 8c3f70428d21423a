"""The QUESTIONS parameter of rs_vqa:ask: typed lines, CSV (with or without header) and LRS-VQA jsonl."""

from __future__ import annotations

import json

import pytest

from rs_vqa_plugin.engine.errors import InputError
from rs_vqa_plugin.engine.question_files import Question, parse_questions


def test_typed_lines_skip_blanks():
    assert parse_questions("  How many ships?\n\n What colour is the roof? \n") == [
        Question("How many ships?"), Question("What colour is the roof?")]
    assert parse_questions("   \n") == []


def test_csv_with_a_header_uses_question_and_id_columns(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('id,question,note\nq1,"How many ships, roughly?",x\nq2,,empty\nq3,Is it urban?,\n')
    assert parse_questions(str(path)) == [Question("How many ships, roughly?", "q1"),
                                          Question("Is it urban?", "q3")]


def test_csv_without_a_header_reads_the_first_column(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("How many ships?\nIs it urban?\n")
    assert [q.text for q in parse_questions(str(path))] == ["How many ships?", "Is it urban?"]


def test_lrs_vqa_jsonl_and_its_errors(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question_id": "FAIR_1", "image": "a.tif", "text": "How many?"}) + "\n\n")
    assert parse_questions(str(path)) == [Question("How many?", "FAIR_1")]
    path.write_text('{"question_id": "x", "image": "a.tif"}\n')
    with pytest.raises(InputError, match=r"q.jsonl, line 1: no question text"):
        parse_questions(str(path))
    path.write_text("{not json\n")
    with pytest.raises(InputError, match=r"line 1: not valid JSON"):
        parse_questions(str(path))


def test_a_missing_question_file_is_named(tmp_path):
    with pytest.raises(InputError, match=r"missing\.txt does not exist"):
        parse_questions(str(tmp_path / "missing.txt"))


@pytest.mark.parametrize("text, line, message", [
    # An unclosed quote would swallow the next questions into one.
    ('id,question\nq1,"How many ships?\nq2,What colour is the roof?\nq3,Is it urban?\n', 2,
     "not closed on it .the CSV breaks at line 4"),
    ('id,question\nq1,"How many ships?\nq2,What colour is the "roof"?\nq3,Is it urban?\n', 2,
     "breaks at line 3"),
    ('id,question\nq1,"How many ships?\nq2,What colour is the roof?"\nq3,Is it urban?\n', 2,
     "runs on to line 3"),
    ('id,question\nq1,Is it urban?\nq2,"How many" big ships?\n', 3, "broken quoting"),
])
def test_csv_with_broken_quoting_is_refused_at_its_line(tmp_path, text, line, message):
    path = tmp_path / "q.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=rf"q\.csv, line {line}: .*{message}"):
        parse_questions(str(path))


def test_csv_quoting_that_is_right_is_read(tmp_path):
    path = tmp_path / "q.csv"
    # A byte-order mark, CRLF line ends, a comma and doubled quotes inside quoted fields.
    path.write_bytes('\ufeffid,question\r\nq1,"How many ""big"" ships, roughly?"\r\nq2,Is it a 5" pipe?\r\n'
                     .encode("utf-8"))
    assert parse_questions(str(path)) == [Question('How many "big" ships, roughly?', "q1"),
                                          Question('Is it a 5" pipe?', "q2")]


@pytest.mark.parametrize("suffix", [".csv", ".txt", ".jsonl"])
def test_a_question_file_in_latin1_names_the_line_and_byte(tmp_path, suffix):
    path = tmp_path / f"q{suffix}"
    line = '{"text": "Quelle est la densité du bâti ?"}' if suffix == ".jsonl" else "Quelle densité ?"
    path.write_bytes(("question\n" + line + "\n").encode("latin-1"))
    with pytest.raises(InputError, match=r"line 2: not UTF-8 text \(byte 0xe9\) at column \d+.*Save it as UTF-8"):
        parse_questions(str(path))
