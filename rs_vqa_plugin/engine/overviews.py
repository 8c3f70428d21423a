"""Find or build GDAL overviews (average) beside a raster or in a cache folder, never touching the file.

Overviews are always built for a temporary VRT wrapping the source (opened read-only, so GDAL writes
an external .ovr) and renamed into place only when complete: a cancel or crash leaves no partial file.
Beside the raster the result is `<file>.ovr`, which GDAL then picks up for the original file; in the
cache folder the VRT is kept (named by a hash of the file's path, size and time) with its `.vrt.ovr`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

from osgeo import gdal

from .errors import Cancelled, InputError
from .progress import CancelToken, EventSink, emit, progress_event

gdal.UseExceptions()

# Overviews go down to about this long side: the thumbnail (336) and level 1 (1008) then read
# a few hundred KB whatever the image size.
MIN_OVERVIEW_SIDE = 256
# Below this long side a read of the whole image is cheap: no overviews are needed.
NO_OVERVIEWS_BELOW = 1024


@dataclass
class OverviewState:
    """Where a raster's overviews are and which path to open to read through them."""

    source: Union[Path, str]     # the user's raster (a str for GDAL /vsi... names)
    read_path: Union[Path, str]  # what to open for reads (the source, or the cache VRT)
    location: str                # internal | external | cache | none
    factors: List[int] = field(default_factory=list)
    ovr_path: Optional[Path] = None
    built: bool = False          # built by this call
    note: str = ""

    def to_dict(self) -> dict:
        return {"location": self.location, "factors": self.factors, "built": self.built,
                "ovr_path": str(self.ovr_path) if self.ovr_path else None,
                "read_path": str(self.read_path), "note": self.note}


def default_cache_dir() -> Path:
    """$RS_VQA_CACHE/overviews, else ~/.cache/rs-vqa/overviews."""
    root = os.environ.get("RS_VQA_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "rs-vqa"
    return base / "overviews"


def needed_factors(width: int, height: int, min_side: int = MIN_OVERVIEW_SIDE) -> List[int]:
    """2, 4, 8, ... until the coarsest overview's long side is at most `min_side`."""
    long_side = max(width, height)
    factors, factor = [], 2
    while long_side / (factor // 2) > min_side:
        factors.append(factor)
        factor *= 2
    return factors


def overview_factors(ds) -> List[int]:
    """Decimation factors of band 1's existing overviews (internal or external)."""
    band = ds.GetRasterBand(1)
    out = []
    for i in range(band.GetOverviewCount()):
        ov = band.GetOverview(i)
        if ov is not None and ov.XSize > 0:
            out.append(int(round(ds.RasterXSize / ov.XSize)))
    return sorted(set(out))


def _is_virtual(name: str) -> bool:
    """GDAL virtual file systems (/vsizip/, /vsicurl/, ...): no folder to write beside."""
    return name.startswith("/vsi")


def _source(path) -> Union[Path, str]:
    # pathlib folds the '//' of '/vsizip//abs/path', which GDAL needs: keep those as strings.
    name = os.fspath(path)
    return name if _is_virtual(name) else Path(name)


def _external_ovr(source) -> Optional[Path]:
    if isinstance(source, str):
        return None
    for candidate in (Path(str(source) + ".ovr"), source.with_suffix(".ovr")):
        if candidate.is_file():
            return candidate
    return None


def cache_key(path) -> str:
    """Stable name for a cached overview: changes when the file is replaced or modified."""
    source = _source(path)
    if isinstance(source, str):
        st = gdal.VSIStatL(source)
        size, mtime, name = (st.size, st.mtime, source) if st else (0, 0, source)
    else:
        st = source.stat()
        size, mtime, name = st.st_size, st.st_mtime_ns, str(source.resolve())
    digest = hashlib.sha1(f"{name}|{size}|{mtime}".encode()).hexdigest()[:16]
    return f"{Path(str(source)).stem[:40]}-{digest}"


def cached_vrt(path, cache_dir: Optional[Path] = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"{cache_key(path)}.vrt"


def inspect_overviews(path, cache_dir=None) -> OverviewState:
    """What exists now, without building anything."""
    path = _source(path)
    ds = gdal.Open(str(path), gdal.GA_ReadOnly)
    width, height = ds.RasterXSize, ds.RasterYSize
    factors = overview_factors(ds)
    ds = None
    wanted = needed_factors(width, height)
    if factors and (not wanted or max(factors) >= max(wanted) // 2):
        ovr = _external_ovr(path)
        return OverviewState(path, path, "external" if ovr else "internal", factors, ovr)
    vrt = cached_vrt(path, cache_dir)
    ovr = Path(str(vrt) + ".ovr")
    if vrt.is_file() and ovr.is_file():
        ds = gdal.Open(str(vrt), gdal.GA_ReadOnly)
        cached = overview_factors(ds)
        ds = None
        return OverviewState(path, vrt, "cache", cached, ovr)
    note = "" if max(width, height) >= NO_OVERVIEWS_BELOW else "small image: overviews not needed"
    return OverviewState(path, path, "none" if not factors else "partial", factors, None, note=note)


def _gdal_progress(events: Optional[EventSink], cancel: Optional[CancelToken], label: str):
    last = [-1.0]

    def callback(complete, _message, _data):
        if cancel is not None and cancel.cancelled:
            return 0  # GDAL stops; no further progress is reported
        if complete - last[0] >= 0.01 or complete >= 1.0:
            last[0] = complete
            emit(events, progress_event("overviews", complete, f"building overviews of {label}"))
        return 1

    return callback


class _ConfigOptions:
    """Set GDAL config options for the duration of a with-block, restoring the old values."""

    def __init__(self, **options):
        self.options = options
        self.saved = {}

    def __enter__(self):
        for key, value in self.options.items():
            self.saved[key] = gdal.GetConfigOption(key)
            gdal.SetConfigOption(key, value)

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            gdal.SetConfigOption(key, value)


def _build_for_vrt(source, vrt: Path, final_ovr: Path, factors: List[int],
                   events, cancel) -> None:
    """Write a VRT of `source` at `vrt`, build its .ovr, move it to `final_ovr` when complete."""
    tmp_ovr = Path(str(vrt) + ".ovr")
    try:
        # An absolute source path: the cache VRT must not depend on where it lives.
        gdal.Translate(str(vrt), source if isinstance(source, str) else str(source.resolve()), format="VRT")
        ds = gdal.Open(str(vrt), gdal.GA_ReadOnly)  # read-only: GDAL writes an external .ovr
        with _ConfigOptions(COMPRESS_OVERVIEW="DEFLATE", BIGTIFF_OVERVIEW="IF_SAFER",
                            GDAL_NUM_THREADS="ALL_CPUS"):
            try:
                label = os.path.basename(str(source))
                ds.BuildOverviews("AVERAGE", factors, callback=_gdal_progress(events, cancel, label))
            except RuntimeError as exc:
                if cancel is not None and cancel.cancelled:
                    raise Cancelled("Overview building cancelled; nothing was written.") from None
                raise InputError(f"Could not build overviews for {source}: {exc}. Check free disk "
                                 "space, or pass --cache-dir to build them elsewhere.") from None
        ds = None
        if cancel is not None:
            cancel.raise_if_cancelled()
        os.replace(tmp_ovr, final_ovr)
    except BaseException:
        for leftover in (tmp_ovr, Path(str(tmp_ovr) + ".aux.xml")):
            if leftover.exists():
                leftover.unlink()
        raise


def _probe_writable(folder: Path) -> bool:
    """Really try: os.access says yes to root on read-only mounts and to odd ACLs."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".rs-vqa-probe-"):
            return True
    except OSError:
        return False


def build_overviews(path, cache_dir=None, use_cache: bool = False, events: Optional[EventSink] = None,
                    cancel: Optional[CancelToken] = None) -> OverviewState:
    """Build missing overviews (average, factors down to ~256 px) and return the resulting state.

    Beside the file when its folder is writable and `use_cache` is false; otherwise (or when the
    raster already has partial overviews that GDAL would not extend without rewriting it) in the
    cache folder. Existing complete overviews are reused as they are.
    """
    path = _source(path)
    virtual = isinstance(path, str)
    label = os.path.basename(str(path))
    state = inspect_overviews(path, cache_dir)
    if state.location in ("internal", "external", "cache") or state.note:
        return state
    ds = gdal.Open(str(path), gdal.GA_ReadOnly)
    factors = needed_factors(ds.RasterXSize, ds.RasterYSize)
    ds = None
    beside = (not use_cache and state.location == "none" and not virtual
              and _probe_writable(path.resolve().parent))
    note = ""
    if beside:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".rs-vqa.vrt",
                                        dir=path.resolve().parent)
        os.close(fd)
        tmp_vrt = Path(tmp_name)
        final_ovr = Path(str(path) + ".ovr")
        try:
            _build_for_vrt(path, tmp_vrt, final_ovr, factors, events, cancel)
        finally:
            tmp_vrt.unlink(missing_ok=True)
        read_path, location, ovr = path, "external", final_ovr
    else:
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"Cannot create the overview cache folder {cache} ({exc.strerror}); "
                             "pass --cache-dir with a writable folder or set RS_VQA_CACHE.") from None
        if not _probe_writable(cache):
            raise InputError(f"The overview cache folder {cache} is not writable; pass --cache-dir "
                             "with a writable folder or set RS_VQA_CACHE.")
        vrt = cached_vrt(path, cache)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{vrt.stem}.", suffix=".vrt", dir=cache)
        os.close(fd)
        tmp_vrt = Path(tmp_name)
        try:
            _build_for_vrt(path, tmp_vrt, Path(str(vrt) + ".ovr"), factors, events, cancel)
            # The VRT goes in last: a cache entry is complete when the VRT exists.
            os.replace(tmp_vrt, vrt)
        finally:
            tmp_vrt.unlink(missing_ok=True)
        read_path, location, ovr = vrt, "cache", Path(str(vrt) + ".ovr")
        if not use_cache:
            note = (f"the folder of {label} is not writable (or is virtual) or already holds partial overviews: "
                    f"overviews were built in the cache {cache}")
    emit(events, progress_event("overviews", 1.0, f"overviews of {label} ready ({location})"))
    return OverviewState(path, read_path, location, factors, ovr, built=True, note=note)
