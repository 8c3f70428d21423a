"""Text files people write by hand (questions, answers, histories): read as UTF-8, a byte-order mark
allowed, and a file in another encoding named with the line and byte where it stops being UTF-8."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError


def read_utf8_text(path, what: str = "file") -> str:
    """The text of `path`; InputError naming the file, line and byte of the first non-UTF-8 byte."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"The {what} {path} is a folder: give a file.")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"The {what} {path} cannot be read ({exc.strerror or exc}).") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(
            f"The {what} {path}, line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}) at "
            f"column {column} (byte {exc.start} of the file); it is probably Latin-1 / "
            "Windows-1252. Save it as UTF-8 (e.g. in a spreadsheet: Save as › CSV UTF-8; in a text "
            "editor: encoding UTF-8) and run again.") from None
