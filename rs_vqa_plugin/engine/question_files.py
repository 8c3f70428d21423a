"""Questions for a batch: typed one per line, or read from a CSV or an LRS-VQA jsonl file.

Files are read as UTF-8 (a byte-order mark allowed); a CSV whose quoting is broken is refused at
the line where it breaks, rather than read with several questions merged into one.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import List

from .errors import InputError
from .textfile import read_utf8_text

QUESTION_FILE_SUFFIXES = (".csv", ".jsonl", ".txt")
# Column / key names accepted for the question text, in order of preference (LRS-VQA uses "text").
TEXT_KEYS = ("question", "text", "query")
ID_KEYS = ("question_id", "id")


@dataclass(frozen=True)
class Question:
    text: str
    question_id: str = ""


def looks_like_question_file(value: str) -> bool:
    """One line ending like a question file is read as a path (and must then exist)."""
    value = value.strip()
    return "\n" not in value and value.lower().endswith(QUESTION_FILE_SUFFIXES)


def parse_questions(value: str) -> List[Question]:
    """Questions from the QUESTIONS parameter; InputError names the file and the expected layout."""
    value = (value or "").strip()
    if not value:
        return []
    if looks_like_question_file(value):
        return read_question_file(Path(value))
    return [Question(line.strip()) for line in value.splitlines() if line.strip()]


def read_question_file(path: Path) -> List[Question]:
    if not path.is_file():
        raise InputError(f"The question file {path} does not exist: give an existing .csv/.jsonl/.txt "
                         "file or type the questions one per line.")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".csv":
        return _read_csv(path)
    lines = read_utf8_text(path, "question file").splitlines()
    return [Question(line.strip()) for line in lines if line.strip()]


def _pick(record: dict, keys) -> str:
    for key in keys:
        if record.get(key) not in (None, ""):
            return str(record[key]).strip()
    return ""


def _read_jsonl(path: Path) -> List[Question]:
    questions = []
    for number, line in enumerate(read_utf8_text(path, "question file").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}, line {number}: not valid JSON ({exc.msg}). Each line must be one "
                             'object such as {"question_id": "q1", "text": "How many ships?"}.') from exc
        text = _pick(record, TEXT_KEYS) if isinstance(record, dict) else ""
        if not text:
            raise InputError(f"{path}, line {number}: no question text; give it under one of the keys "
                             f"{', '.join(TEXT_KEYS)}.")
        questions.append(Question(text, _pick(record, ID_KEYS)))
    return questions


def _csv_rows(path: Path) -> List[List[str]]:
    """The non-blank rows of a CSV file; InputError at the line where its quoting breaks.

    A question never spans lines: a quoted field that does is a missing closing quote, which
    would otherwise swallow the following questions into one."""
    reader = csv.reader(io.StringIO(read_utf8_text(path, "question file"), newline=""), strict=True)
    rows, start = [], 1
    try:
        for row in reader:
            if reader.line_num > start:
                raise InputError(
                    f"{path}, line {start}: a quoted field opens on this line and runs on to line "
                    f"{reader.line_num}, so those lines would be read as one question. A closing "
                    "quote is probably missing: close it (or, if the question really holds a line "
                    "break, put it on one line).")
            if any(cell.strip() for cell in row):
                rows.append(row)
            start = reader.line_num + 1
    except csv.Error as exc:
        if reader.line_num > start or "end of data" in str(exc):
            raise InputError(f"{path}, line {start}: a quoted field opens on this line and is not "
                             f"closed on it (the CSV breaks at line {reader.line_num}); add the "
                             "missing closing quote.") from None
        raise InputError(f"{path}, line {reader.line_num}: broken quoting ({exc}). Quote the whole "
                         'field and double any quote inside it: "How many ""big"" ships?"') from None
    return rows


def _read_csv(path: Path) -> List[Question]:
    rows = _csv_rows(path)
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    text_column = next((header.index(key) for key in TEXT_KEYS if key in header), None)
    if text_column is None:
        # No recognised header: every row is a question in the first column.
        return [Question(row[0].strip()) for row in rows if row[0].strip()]
    id_column = next((header.index(key) for key in ID_KEYS if key in header), None)
    questions = []
    for row in rows[1:]:
        text = row[text_column].strip() if text_column < len(row) else ""
        if text:
            qid = row[id_column].strip() if id_column is not None and id_column < len(row) else ""
            questions.append(Question(text, qid))
    return questions
