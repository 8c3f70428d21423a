"""The answers table of `batch`: JSON lines, CSV or a GeoPackage table, one row per (raster,
question), appended and made durable one answer at a time.

An existing file is resumed, never replaced: the rows already there are the answers a rerun skips
(a half-written last line, from a crash, is dropped first). A file that is not such a table is
refused before anything is asked. CSV text cells are written spreadsheet-safe.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import List, Sequence, Set, Tuple

from .csv_cells import spreadsheet_safe_row
from .errors import InputError
from .tile_cache import tiles_used

COLUMNS = ("raster", "question_id", "question", "answer", "mode", "seconds", "tiles_read",
           "llm_vision_tokens", "levels", "stop_reason")
GPKG_LAYER = "answers"
SUFFIXES = (".jsonl", ".csv", ".gpkg")
Key = Tuple[str, str]     # (raster, question_id)


def answer_row(raster: str, question_id: str, question: str, answer) -> dict:
    trace = answer.trace or {}
    return {"raster": raster, "question_id": question_id, "question": question,
            "answer": answer.text, "mode": answer.mode,
            "seconds": float((trace.get("seconds") or {}).get("total", 0.0)),
            "tiles_read": tiles_used(trace), "llm_vision_tokens": int(trace.get("llm_vision_tokens", 0)),
            "levels": ",".join(str(level) for level in trace.get("levels", [])),
            "stop_reason": str(trace.get("stop_reason", ""))}


def _not_ours(path: Path, why: str) -> InputError:
    return InputError(f"{path} is not an answers table of `batch` ({why}): choose a new --out "
                      "file (or the --out of an earlier batch run, to resume it); the file is left "
                      "as it is.")


def _drop_torn_tail(path: Path, text: str) -> str:
    """A last line without its newline is what a crash mid-write leaves: cut it off the file."""
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
        with path.open("r+b") as handle:
            handle.truncate(len(text.encode("utf-8")))
    return text


class JsonlAnswers:
    def __init__(self, path: Path):
        self.path = path
        self.done: Set[Key] = set()
        if path.exists():
            from .textfile import read_utf8_text

            text = _drop_torn_tail(path, read_utf8_text(path, "answers file"))
            for number, line in enumerate(text.split("\n"), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise _not_ours(path, f"line {number} is not JSON") from None
                if not isinstance(row, dict) or not {"raster", "question_id", "answer"} <= row.keys():
                    raise _not_ours(path, f"line {number} has no raster, question_id and answer")
                self.done.add((str(row["raster"]), str(row["question_id"])))
        self._file = None

    def add(self, row: dict) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class CsvAnswers:
    def __init__(self, path: Path):
        self.path = path
        self.done: Set[Key] = set()
        self._header_written = False
        if path.exists():
            from .textfile import read_utf8_text

            text = _drop_torn_tail(path, read_utf8_text(path, "answers file"))
            rows = list(csv.reader(io.StringIO(text, newline="")))
            if rows:
                if tuple(rows[0]) != COLUMNS:
                    raise _not_ours(path, f"its header is not {','.join(COLUMNS)}")
                self._header_written = True
                for row in rows[1:]:
                    if len(row) >= 2:
                        # written spreadsheet-safe: a leading ' may guard an id such as -1
                        self.done.add((_unguard(row[0]), _unguard(row[1])))
        self._file = None

    def add(self, row: dict) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8", newline="")
            self._writer = csv.writer(self._file)
            if not self._header_written:
                self._writer.writerow(COLUMNS)
                self._header_written = True
        self._writer.writerow(spreadsheet_safe_row([row[c] for c in COLUMNS]))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _unguard(cell: str) -> str:
    from .csv_cells import FORMULA_STARTS

    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS) else cell


class GpkgAnswers:
    """A table (no geometry) in a GeoPackage, made at the first answer (an existing GeoPackage
    without it gets it as a new layer); one committed transaction per answer."""

    def __init__(self, path: Path):
        self.path = path
        self.done: Set[Key] = set()
        self._ds = self._layer = None
        if path.exists():
            ds = self._open_existing()
            layer = ds.GetLayerByName(GPKG_LAYER)
            if layer is not None:
                definition = layer.GetLayerDefn()
                names = {definition.GetFieldDefn(i).GetName()
                         for i in range(definition.GetFieldCount())}
                if not set(COLUMNS) <= names:
                    raise _not_ours(path, f"its layer '{GPKG_LAYER}' lacks the fields "
                                          f"{', '.join(sorted(set(COLUMNS) - names))}")
                for feature in layer:
                    self.done.add((feature.GetField("raster"), feature.GetField("question_id")))
            layer = ds = None

    def _open_existing(self):
        from osgeo import gdal

        gdal.UseExceptions()
        try:
            return gdal.OpenEx(str(self.path), gdal.OF_VECTOR | gdal.OF_UPDATE,
                               allowed_drivers=["GPKG"])
        except RuntimeError:
            raise _not_ours(self.path, "not a GeoPackage that can be written") from None

    def _open(self) -> None:
        from osgeo import ogr

        if self.path.exists():
            self._ds = self._open_existing()
        else:
            self._ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(self.path))
        self._layer = self._ds.GetLayerByName(GPKG_LAYER)
        if self._layer is None:
            kinds = {"seconds": ogr.OFTReal, "tiles_read": ogr.OFTInteger,
                     "llm_vision_tokens": ogr.OFTInteger}
            self._ds.StartTransaction()
            self._layer = self._ds.CreateLayer(GPKG_LAYER, None, ogr.wkbNone)
            for name in COLUMNS:
                self._layer.CreateField(ogr.FieldDefn(name, kinds.get(name, ogr.OFTString)))
            self._ds.CommitTransaction()

    def add(self, row: dict) -> None:
        from osgeo import ogr

        from .heatmap import transaction

        if self._ds is None:
            self._open()
        with transaction(self._ds):
            feature = ogr.Feature(self._layer.GetLayerDefn())
            for name in COLUMNS:
                feature.SetField(name, row[name])
            self._layer.CreateFeature(feature)

    def close(self) -> None:
        self._layer = None
        self._ds = None


def open_answers(path, inputs: Sequence[Tuple[str, object]] = ()):
    """The answers table at `path` (resumed when it exists); InputError for a path that is an
    input of the run, a folder, in a missing folder, of another format, or another kind of file."""
    from .output_paths import check_output_file, refuse_inputs

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"--out {path}: write the answers to a .jsonl, .csv or .gpkg file.")
    refuse_inputs(path, inputs, "--out")
    check_output_file(path, "--out")
    return {".jsonl": JsonlAnswers, ".csv": CsvAnswers, ".gpkg": GpkgAnswers}[suffix](path)


def read_rows(path) -> List[dict]:
    """Every row of an answers table (for tests and reports)."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))
    from osgeo import gdal

    ds = gdal.OpenEx(str(path), gdal.OF_VECTOR)
    layer = ds.GetLayerByName(GPKG_LAYER)
    rows = [{name: feature.GetField(name) for name in COLUMNS} for feature in layer]
    layer = ds = None
    return rows
