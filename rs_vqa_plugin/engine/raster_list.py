"""The rasters of a batch, from files, folders and glob patterns, each once and in a stable order."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Iterable, List

from .errors import InputError

# What a folder contributes; a file named on its own is given to GDAL whatever its name.
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2", ".png", ".jpg", ".jpeg")
GLOB_CHARACTERS = "*?["


def _folder_rasters(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)


def list_rasters(arguments: Iterable[str]) -> List[Path]:
    """Absolute paths: a file as given, a folder's rasters (not its sub-folders), a glob's
    matches (quote it; ** recurses). InputError for a name that matches nothing."""
    found: List[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = _folder_rasters(path)
            if not matches:
                raise InputError(f"The folder {argument} holds no raster ({', '.join(RASTER_SUFFIXES)}).")
        elif any(c in argument for c in GLOB_CHARACTERS):
            matches = sorted(Path(p) for p in glob.glob(argument, recursive=True) if Path(p).is_file())
            if not matches:
                raise InputError(f"The pattern {argument} matches no file.")
        else:
            raise InputError(f"The raster {argument} does not exist: give raster files, folders or "
                             "quoted glob patterns such as 'scenes/*.tif'.")
        found += matches
    unique, seen = [], set()
    for path in found:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(resolved)
    if not unique:
        raise InputError("No rasters were given.")
    return unique
