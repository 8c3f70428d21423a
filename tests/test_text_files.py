"""Text files people open or write: CSV cells a spreadsheet shows rather than runs (the dock's
export included), and UTF-8 reading that names the line and byte of a file in another encoding."""

from __future__ import annotations

import csv
import io

import pytest

from rs_vqa_plugin.engine.csv_cells import spreadsheet_safe
from rs_vqa_plugin.engine.errors import InputError
from rs_vqa_plugin.engine.textfile import read_utf8_text
from rs_vqa_plugin.gui.history import Turn, export_csv


@pytest.mark.parametrize("value, written", [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"), ("+1", "'+1"), ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"), ("\tcmd", "'\tcmd"), ("\rcmd", "'\rcmd"),
    ("How many ships?", "How many ships?"), ("a=b", "a=b"), ("", ""),
    (-5, -5), (2.5, 2.5), (None, None)])
def test_spreadsheet_safe_quotes_formula_text_only(value, written):
    assert spreadsheet_safe(value) == written


def test_the_dock_csv_export_writes_no_formula():
    turns = [("harbour", Turn(question="=1+1", text="@cmd", status="answered",
                              stats={"seconds": 1.5, "tiles": 3, "llm_tokens": 40, "levels": [1, 2]})),
             ("-layer", Turn(question="How many ships?", text="three", status="answered"))]
    rows = list(csv.DictReader(io.StringIO(export_csv(turns))))
    assert [(r["layer"], r["question"], r["answer"]) for r in rows] == [
        ("harbour", "'=1+1", "'@cmd"), ("'-layer", "How many ships?", "three")]
    assert (rows[0]["seconds"], rows[0]["tiles"], rows[0]["llm_tokens"], rows[0]["levels"]) == (
        "1.5", "3", "40", "1 2")


def test_utf8_with_a_bom_is_read_and_latin1_is_located(tmp_path):
    path = tmp_path / "q.txt"
    path.write_bytes("\ufeffHow many ships?\nQuelle densité ?\n".encode("utf-8"))
    assert read_utf8_text(path) == "How many ships?\nQuelle densité ?\n"
    path.write_bytes("How many ships?\nQuelle densité ?\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"q\.txt, line 2: not UTF-8 text \(byte 0xe9\) at column 14 "
                                         r"\(byte 29 of the file\).*Save it as UTF-8"):
        read_utf8_text(path, "question file")
    with pytest.raises(InputError, match="is a folder"):
        read_utf8_text(tmp_path)
