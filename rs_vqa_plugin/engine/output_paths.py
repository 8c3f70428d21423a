"""Where an output may be written: in an existing, writable folder, never over one of the run's
inputs (the raster and every file GDAL reads for it, a question or history file), whatever the
name, symlink or `..` that leads there."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

from .errors import InputError


def same_file(a, b) -> bool:
    """True when both names lead to one file (symlinks, `..`, hard links); a missing one compares
    by its resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def folder_is_writable(folder: Path) -> bool:
    """Really try: os.access says yes to root on read-only mounts and to odd ACLs."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".rs-vqa-probe-"):
            return True
    except OSError:
        return False


def check_output_file(path, what: str) -> None:
    """InputError unless a file can be created (or replaced) at `path`: not a folder, in an
    existing folder this process can write in."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder: give a file name (e.g. {path / 'out'} "
                         f"with the right extension).")
    folder = path.absolute().parent
    if not folder.is_dir():
        raise InputError(f"{what} {path}: the folder {folder} does not exist; create it or choose "
                         "another path.")
    if not folder_is_writable(folder):
        raise InputError(f"{what} {path}: the folder {folder} cannot be written in; choose a "
                         "folder you can write to.")


def raster_files(raster) -> List[Path]:
    """The raster and every file GDAL reads for it (a VRT's sources, a GeoPackage, sidecars)."""
    from osgeo import gdal

    files = [Path(raster)] if not str(raster).startswith("/vsi") else []
    try:
        ds = gdal.OpenEx(str(raster), gdal.OF_RASTER | gdal.OF_READONLY)
        names = (ds.GetFileList() or []) if ds is not None else []
        ds = None
    except RuntimeError:
        names = []
    return files + [Path(n) for n in names if not n.startswith("/vsi")]


def refuse_inputs(output, inputs: Iterable[Tuple[str, Optional[object]]], what: str) -> None:
    """InputError when `output` is one of `inputs` ((label, path) pairs), even with overwrite:
    an output never replaces or writes into what the run reads."""
    for label, path in inputs:
        if path and same_file(output, path):
            shown = f" ({path})" if str(path) != str(output) else ""
            raise InputError(f"{what} {output} is {label}{shown}: an output never writes into an "
                             "input. Choose another file name.")
