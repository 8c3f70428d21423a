"""Hidden temporary files of an overview build, and the clean-up of those a killed build left.

An overview build writes a temporary VRT and its `.vrt.ovr` (hundreds of MB for a big raster) and
renames the `.ovr` into place only when complete. A killed process (QGIS closed, out of memory,
power cut) cannot remove them, so every build holds a lock file beside its temporaries; the next
build removes any group whose lock nobody holds any more. Only our own names are ever touched.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import Iterable, List

MARK = "rs-vqa-tmp"
# Temporaries of versions without lock files are removed once untouched for this long (a live
# build rewrites its .ovr continuously).
LEGACY_IDLE_SECONDS = 15 * 60
_SUFFIXES = (".vrt", ".vrt.ovr", ".vrt.aux.xml", ".vrt.ovr.aux.xml")


def _lock(fd: int) -> bool:
    """Take an exclusive lock on an open file without waiting; False if another process holds it."""
    try:
        if os.name == "nt":
            import msvcrt
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _unlink_all(paths: Iterable[Path]) -> int:
    """Remove what exists and can be removed (Windows refuses files another process holds open)."""
    freed = 0
    for path in paths:
        try:
            size = path.stat().st_size
            path.unlink()
            freed += size
        except OSError:
            pass
    return freed


class TempBuild:
    """`<folder>/.<stem>.rs-vqa-tmp-XXXX.vrt` (+ `.vrt.ovr`), locked for as long as the build runs."""

    def __init__(self, folder: Path, stem: str):
        fd, name = tempfile.mkstemp(prefix=f".{stem}.{MARK}-", suffix=".lock", dir=folder)
        if not _lock(fd):   # a fresh file nobody else knows: only a broken lock service gets here
            os.close(fd)
            os.unlink(name)
            raise OSError(f"cannot lock {name}")
        self._fd = fd
        self.lock = Path(name)
        base = name[:-len(".lock")]
        self.vrt = Path(base + ".vrt")
        self.ovr = Path(base + ".vrt.ovr")

    def files(self) -> List[Path]:
        base = str(self.lock)[:-len(".lock")]
        return [Path(base + s) for s in _SUFFIXES]

    def close(self) -> None:
        """Remove the temporaries (the lock file last: a group without its lock is never left)."""
        _unlink_all(self.files())
        os.close(self._fd)
        _unlink_all([self.lock])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _legacy_patterns(stem: str) -> List[re.Pattern]:
    # mkstemp's 8 random characters; the names earlier versions used beside the raster / in the cache.
    rand, tail = r"[a-z0-9_]{8}", r"(\.ovr)?(\.aux\.xml)?"
    return [re.compile(rf"^\.{re.escape(stem)}\.{rand}\.rs-vqa\.vrt{tail}$"),
            re.compile(rf"^\.{re.escape(stem)}-[0-9a-f]{{16}}\.{rand}\.vrt{tail}$")]


def clean_leftovers(folder: Path, stem: str = "") -> int:
    """Remove temporaries of dead builds in `folder` (for one raster's `stem`, or every one when
    empty: the cache folder). Returns the bytes freed. Builds still running are left alone."""
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    freed = 0
    prefix = f".{stem}." if stem else "."
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".lock") and f".{MARK}-" in name):
            continue
        lock = Path(folder) / name
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            if not _lock(fd):
                continue               # its build is still running
            base = str(lock)[:-len(".lock")]
            freed += _unlink_all(Path(base + s) for s in _SUFFIXES)
        finally:
            os.close(fd)
        freed += _unlink_all([lock])
    now = time.time()
    if stem:
        patterns = _legacy_patterns(stem)
    else:
        patterns = [re.compile(r"^\..+-[0-9a-f]{16}\.[a-z0-9_]{8}\.vrt(\.ovr)?(\.aux\.xml)?$")]
    for name in names:
        if any(p.match(name) for p in patterns):
            path = Path(folder) / name
            try:
                if now - path.stat().st_mtime > LEGACY_IDLE_SECONDS:
                    freed += _unlink_all([path])
            except OSError:
                continue
    return freed
