"""Cells of the CSV files we write, made safe to open in a spreadsheet.

Question and answer text comes from people and from a model: a cell that starts with = + - @ (or a
tab or carriage return) would be run as a formula by Excel, LibreOffice or Google Sheets (CSV
injection). Such text is written with a leading single quote (the OWASP rule), which spreadsheets
show as plain text. Numbers are left as they are.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """`value`, with a leading ' when it is text a spreadsheet would read as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def spreadsheet_safe_row(values):
    return [spreadsheet_safe(v) for v in values]
