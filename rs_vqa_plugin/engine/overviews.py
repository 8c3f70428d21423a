"""Find or build GDAL overviews beside a raster or in a cache folder, never touching the file.

Overviews are always built for a temporary VRT wrapping the source (opened read-only, so GDAL writes
an external .ovr) and renamed into place only when complete: a cancel or crash leaves no partial file
(and a killed build's temporaries are removed by the next build, see overview_temp).
Beside the raster the result is `<file>.ovr`, which GDAL then picks up for the original file; in the
cache folder the VRT is kept (named by a hash of the file's path, size and time) with its `.vrt.ovr`.
Every overview file we write records what it was built from (overview_checks): one that no longer
matches its raster is rebuilt when it is ours, and otherwise ignored (reads then go through a cache
VRT that hides it), as is a truncated or corrupt one. Palette (class) rasters get nearest overviews.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

from osgeo import gdal

from .errors import Cancelled, InputError
from .overview_checks import (NO_OVERVIEWS, STAMP_DOMAIN, STAMP_VERSION, OverviewCheck, check_overview_file,
                              source_stamp, write_stamp)
from .output_paths import folder_is_writable
from .overview_temp import TempBuild, clean_leftovers
from .progress import CancelToken, EventSink, emit, progress_event

gdal.UseExceptions()

# Overviews go down to about this long side: the thumbnail (336) and level 1 (1008) then read
# a few hundred KB whatever the image size.
MIN_OVERVIEW_SIDE = 256
# Below this long side a read of the whole image is cheap: no overviews are needed.
NO_OVERVIEWS_BELOW = 1024
# GDAL's block cache while overviews are built (bench/bench_overviews.py measures peak RSS and time
# against GDAL's default).
OVERVIEW_BLOCK_CACHE_MB = 128


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
    open_options: List[str] = field(default_factory=list)   # to open read_path with
    ignored: Optional[Path] = None   # an overview file beside the raster that must not be read
    problem: str = ""                # what is wrong with an overview file found (stale, corrupt)

    def to_dict(self) -> dict:
        return {"location": self.location, "factors": self.factors, "built": self.built,
                "ovr_path": str(self.ovr_path) if self.ovr_path else None,
                "read_path": str(self.read_path), "note": self.note,
                "ignored": str(self.ignored) if self.ignored else None, "problem": self.problem}

    def open(self):
        """The dataset to read pixels from (read-only)."""
        return gdal.OpenEx(str(self.read_path), gdal.OF_RASTER | gdal.OF_READONLY,
                           open_options=list(self.open_options))


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
    """The `<file>.ovr` GDAL would read for `source` (it looks for no other name)."""
    if isinstance(source, str):
        return None
    for candidate in (Path(str(source) + ".ovr"), Path(str(source) + ".OVR")):
        if candidate.is_file():
            return candidate
    return None


def resampling_for_overviews(ds) -> str:
    """NEAREST for palette (class) rasters: averaging class numbers makes classes that do not exist
    (and GDAL's colour-matching average on a 16-bit palette takes minutes); AVERAGE otherwise."""
    for i in range(1, ds.RasterCount + 1):
        if ds.GetRasterBand(i).GetColorTable() is not None:
            return "NEAREST"
    return "AVERAGE"


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


def _describe_problem(ovr: Path, check: OverviewCheck) -> str:
    if check.verdict == "corrupt":
        return f"{ovr} is truncated or corrupt ({check.reason})"
    return f"{ovr} does not match the raster: {check.reason}"


def _source_overviews(path):
    """(width, height, factors, origin) of the raster's own overviews; origin internal|external|None.
    A truncated .ovr makes GDAL fail on the overview count: reported as (.., [], "broken")."""
    ds = gdal.Open(str(path), gdal.GA_ReadOnly)
    width, height = ds.RasterXSize, ds.RasterYSize
    try:
        factors = overview_factors(ds)
        band = ds.GetRasterBand(1)
        origin = None
        if factors:
            described = band.GetOverview(0).GetDataset().GetDescription()
            origin = "external" if described.lower().endswith(".ovr") else "internal"
    except RuntimeError:
        factors, origin = [], "broken"
    return width, height, factors, origin


def inspect_overviews(path, cache_dir=None) -> OverviewState:
    """What exists now and is safe to read through, without building anything."""
    path = _source(path)
    width, height, factors, origin = _source_overviews(path)
    wanted = needed_factors(width, height)
    complete = bool(factors) and (not wanted or max(factors) >= max(wanted) // 2)
    ovr = _external_ovr(path)
    ignored, problem, stamp = None, "", None
    if origin == "broken" and ovr is None:   # GDAL found a bad overview file we do not know by name
        ignored, problem = Path(str(path) + ".ovr"), f"the overviews of {path} cannot be read"
    elif ovr is not None and origin in ("external", "broken"):
        stamp = source_stamp(path)
        check = check_overview_file(path, ovr, stamp)
        if check.verdict != "ok":
            ignored, problem = ovr, _describe_problem(ovr, check)
        elif complete:
            return OverviewState(path, path, "external", factors, ovr)
    elif complete:
        return OverviewState(path, path, "internal" if origin == "internal" else "external", factors, ovr)
    vrt = cached_vrt(path, cache_dir)
    cached_ovr = Path(str(vrt) + ".ovr")
    if vrt.is_file() and cached_ovr.is_file():
        check = check_overview_file(path, cached_ovr, stamp)
        if check.verdict == "ok":
            ds = gdal.Open(str(vrt), gdal.GA_ReadOnly)
            cached = overview_factors(ds)
            ds = None
            return OverviewState(path, vrt, "cache", cached, cached_ovr, ignored=ignored, problem=problem,
                                 note=f"{problem}: it is not read, the overviews in the cache are"
                                 if problem else "")
        problem = problem or f"the cached {_describe_problem(cached_ovr, check)}"
    small = max(width, height) < NO_OVERVIEWS_BELOW
    if ignored is not None:
        note = f"{problem}: it is not read (delete {ignored.name} to have overviews rebuilt beside the raster)"
    else:
        note = problem or ("small image: overviews not needed" if small else "")
    location = "partial" if factors and not ignored else "none"
    # A stale or corrupt .ovr must not be read: open the raster with its overviews hidden.
    return OverviewState(path, path, location, [] if ignored else factors, None, note=note, problem=problem,
                         open_options=list(NO_OVERVIEWS) if ignored else [], ignored=ignored)


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


class _BlockCacheCap:
    """Lower GDAL's block cache for the duration of a with-block (unless the user set GDAL_CACHEMAX),
    restoring it after. GDAL's default is 5 % of RAM and an overview build fills it with source
    blocks it reads once: a 27k px raster's build peaked at 1.46 GB. The block rows in flight
    (a few rows of 512 px blocks per factor) fit well under the cap."""

    def __init__(self, megabytes: int):
        self.limit = megabytes * 2**20
        self.saved = None

    def __enter__(self):
        if not gdal.GetConfigOption("GDAL_CACHEMAX") and gdal.GetCacheMax() > self.limit:
            self.saved = gdal.GetCacheMax()
            gdal.SetCacheMax(self.limit)

    def __exit__(self, *exc):
        if self.saved is not None:
            gdal.SetCacheMax(self.saved)


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


def _build_for_vrt(source, temp: TempBuild, final_ovr: Path, factors: List[int], events, cancel) -> str:
    """Write a VRT of `source` at temp.vrt, build its .ovr, stamp it, move it to `final_ovr` when
    complete. The VRT opens the source with its own overviews hidden (a stale .ovr is never read).
    Returns the resampling used."""
    # An absolute source path: the cache VRT must not depend on where it lives.
    name = source if isinstance(source, str) else str(source.resolve())
    stamp = source_stamp(source)
    src = gdal.OpenEx(name, gdal.OF_RASTER | gdal.OF_READONLY, open_options=NO_OVERVIEWS)
    resampling = resampling_for_overviews(src)
    gdal.Translate(str(temp.vrt), src, format="VRT")
    src = None
    ds = gdal.Open(str(temp.vrt), gdal.GA_ReadOnly)  # read-only: GDAL writes an external .ovr
    with _ConfigOptions(COMPRESS_OVERVIEW="DEFLATE", BIGTIFF_OVERVIEW="IF_SAFER",
                        GDAL_NUM_THREADS="ALL_CPUS"), _BlockCacheCap(OVERVIEW_BLOCK_CACHE_MB):
        try:
            label = os.path.basename(str(source))
            ds.BuildOverviews(resampling, factors, callback=_gdal_progress(events, cancel, label))
        except RuntimeError as exc:
            ds = None   # close the temporary .ovr before it is removed (Windows keeps open files)
            if cancel is not None and cancel.cancelled:
                raise Cancelled("Overview building cancelled; nothing was written.") from None
            raise InputError(f"Could not build overviews for {source}: {exc}. Check free disk "
                             "space, or pass --cache-dir to build them elsewhere.") from None
    ds = None
    if cancel is not None:
        cancel.raise_if_cancelled()
    write_stamp(temp.ovr, stamp, resampling)
    os.replace(temp.ovr, final_ovr)
    return resampling


def _cache_folder(cache_dir) -> Path:
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"Cannot create the overview cache folder {cache} ({exc.strerror}); "
                         "pass --cache-dir with a writable folder or set RS_VQA_CACHE.") from None
    if not folder_is_writable(cache):
        raise InputError(f"The overview cache folder {cache} is not writable; pass --cache-dir "
                         "with a writable folder or set RS_VQA_CACHE.")
    return cache


def build_overviews(path, cache_dir=None, use_cache: bool = False, events: Optional[EventSink] = None,
                    cancel: Optional[CancelToken] = None) -> OverviewState:
    """Build missing overviews (factors down to ~256 px) and return the resulting state.

    Beside the file when its folder is writable and `use_cache` is false; otherwise (or when the
    raster already has partial overviews that GDAL would not extend without rewriting it, or an
    overview file beside it that is not ours and does not match it) in the cache folder. Existing
    overviews that match the raster are reused as they are; ours that no longer match are rebuilt.
    """
    path = _source(path)
    virtual = isinstance(path, str)
    label = os.path.basename(str(path))
    state = inspect_overviews(path, cache_dir)
    if state.location in ("internal", "external", "cache"):
        return state
    ds = gdal.OpenEx(str(path), gdal.OF_RASTER, open_options=NO_OVERVIEWS)
    width, height = ds.RasterXSize, ds.RasterYSize
    ds = None
    factors = needed_factors(width, height)
    ignored = state.ignored
    # Our own stale or corrupt .ovr beside the raster is replaced in place; anyone else's is left.
    ours = ignored is not None and _stamped(ignored)
    if max(width, height) < NO_OVERVIEWS_BELOW and not ours:
        return state   # reads are cheap without overviews (a foreign bad .ovr stays hidden)
    folder = None if virtual else path.resolve().parent
    writable = folder is not None and folder_is_writable(folder)
    beside = (not use_cache and writable and state.location == "none" and (ignored is None or ours))
    if writable:
        clean_leftovers(folder, path.name)
    note = ""
    if beside:
        final_ovr = Path(str(path) + ".ovr")
        with TempBuild(folder, path.name) as temp:
            resampling = _build_for_vrt(path, temp, final_ovr, factors, events, cancel)
        read_path, location, ovr = path, "external", final_ovr
        if ignored is not None:
            note = f"{state.problem}: it was rebuilt"
            ignored = None
    else:
        cache = _cache_folder(cache_dir)
        clean_leftovers(cache)
        vrt = cached_vrt(path, cache)
        with TempBuild(cache, vrt.stem) as temp:
            resampling = _build_for_vrt(path, temp, Path(str(vrt) + ".ovr"), factors, events, cancel)
            # The VRT goes in last: a cache entry is complete when the VRT exists.
            os.replace(temp.vrt, vrt)
        read_path, location, ovr = vrt, "cache", Path(str(vrt) + ".ovr")
        if ignored is not None:
            note = (f"{state.problem}: it is not read and overviews were built in the cache {cache}; "
                    f"delete {ignored.name} to have them rebuilt beside the raster")
        elif state.problem:
            note = f"{state.problem}: it was rebuilt"
        elif not use_cache:
            note = (f"the folder of {label} is not writable (or is virtual) or already holds partial overviews: "
                    f"overviews were built in the cache {cache}")
    emit(events, progress_event("overviews", 1.0, f"overviews of {label} ready ({location}, {resampling.lower()})"))
    return OverviewState(path, read_path, location, factors, ovr, built=True, note=note, ignored=ignored,
                         problem=state.problem)


def _stamped(ovr: Path) -> bool:
    """Does this overview file carry our stamp (so we built it and may replace it)?"""
    try:
        ds = gdal.Open(str(ovr), gdal.GA_ReadOnly)
        return (ds.GetMetadata(STAMP_DOMAIN) or {}).get("FORMAT") == STAMP_VERSION
    except RuntimeError:
        return False
