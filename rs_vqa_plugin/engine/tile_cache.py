"""Vision encodings kept between questions: what the encoder makes of a tile does not depend on
the question, so a second question about the same raster encodes only the tiles the first did not.

A bounded in-memory LRU (by bytes) owned by the long-lived Engine. Its keys hold everything a
tile's pixels and their encoding come from, so that nothing is served stale: the model (the
vision ONNX file as loaded, its normalisation, the device), the raster as GDAL reads it (its
files' sizes and times, and a digest of the thumbnail read this question), the band choice, nodata,
8-bit stretch, scope window and polygon mask, and the pyramid level's geometry.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from typing import Hashable, Optional

import numpy as np

from .errors import InputError

# Enough for ~250 tiles of a 7B LVLM (12 x 12 tokens of 3584 floats, 2 MB a tile), i.e. the
# tiles several dip questions read on one large image; the shipped model's tiles take 8 KB.
DEFAULT_MB = 512.0


def check_megabytes(value, what: str = "The tile cache size") -> float:
    """A cache size in MB: a finite number >= 0 (0 turns the cache off)."""
    try:
        mb = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number of MB (0 turns it off), not {value!r:.60}.") from None
    if not math.isfinite(mb) or mb < 0:
        raise InputError(f"{what} must be 0 (off) or a positive number of MB, not {value}.")
    return mb


class TileCache:
    """Least recently used arrays, evicted oldest first when their bytes pass the bound."""

    def __init__(self, megabytes: float = DEFAULT_MB):
        self._items: "OrderedDict[Hashable, np.ndarray]" = OrderedDict()
        self.nbytes = 0
        self.megabytes = 0.0
        self.resize(megabytes)

    @property
    def limit_bytes(self) -> int:
        return int(self.megabytes * 2 ** 20)

    @property
    def enabled(self) -> bool:
        return self.limit_bytes > 0

    def __len__(self) -> int:
        return len(self._items)

    def resize(self, megabytes: float) -> None:
        self.megabytes = check_megabytes(megabytes)
        self._evict()

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0

    def get(self, key: Hashable) -> Optional[np.ndarray]:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: np.ndarray) -> None:
        # A copy: a slice would keep the whole batch it came from alive.
        value = np.array(value, copy=True)
        if value.nbytes > self.limit_bytes:
            return            # never fits (or the cache is off): keep what is there
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old.nbytes
        value.flags.writeable = False    # shared between questions: nobody may edit it in place
        self._items[key] = value
        self.nbytes += value.nbytes
        self._evict()

    def _evict(self) -> None:
        while self._items and self.nbytes > self.limit_bytes:
            _key, old = self._items.popitem(last=False)
            self.nbytes -= old.nbytes

    def stats(self) -> dict:
        return {"limit_mb": self.megabytes, "used_mb": round(self.nbytes / 2 ** 20, 3),
                "entries": len(self._items)}


def file_stamp(path: str) -> tuple:
    """(path, size, mtime_ns, ctime_ns, inode) of a local file; GDAL's size and mtime for a /vsi
    name. ctime and the inode catch a rewrite that keeps the size within the mtime's resolution."""
    if not path.startswith("/vsi"):
        try:
            st = os.stat(path)
            return (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        except OSError:
            return (path, None)
    from osgeo import gdal

    st = gdal.VSIStatL(path)
    return (path, st.size, st.mtime) if st is not None else (path, None)


def model_identity(bundle, provider: str) -> tuple:
    """The vision encoder as loaded: its files' stamps at load time, normalisation and tile
    geometry, and where it runs (CUDA and CPU outputs differ in the last bits)."""
    m = bundle.manifest
    files = [str(bundle.vision_path)]
    data = str(bundle.vision_path) + ".data"
    if os.path.exists(data):
        files.append(data)
    return (tuple(file_stamp(f) for f in files), tuple(m.image_mean), tuple(m.image_std),
            m.tile_size, m.patch_grid, m.pooled_grid, m.hidden_size, str(provider))


def image_identity(source, thumb_pixels: np.ndarray, thumb_valid: np.ndarray) -> str:
    """A digest of what this question's pixels come from (see the module docstring). The
    thumbnail digest backs up the file stamps: an edit in place within the clock's resolution
    that keeps the size still shows in the whole-image read (unless it is smaller than a
    thumbnail pixel)."""
    h = hashlib.blake2b(digest_size=20)

    def add(value) -> None:
        h.update(repr(value).encode("utf-8"))
        h.update(b"\0")

    add(sorted(file_stamp(f) for f in source.file_list()))
    add(source.pixel_settings())
    mask = source.scope_mask
    if mask is not None:
        h.update(np.ascontiguousarray(mask.a).tobytes())
        h.update(np.ascontiguousarray(mask.b).tobytes())
    add("thumbnail")
    h.update(np.ascontiguousarray(thumb_pixels).tobytes())
    h.update(np.ascontiguousarray(thumb_valid).tobytes())
    return h.hexdigest()


def tiles_used(trace: dict) -> int:
    """Tiles an answer looked at, encoded now or taken from the cache."""
    return int(trace.get("tiles_encoded", 0) or 0) + int(trace.get("tiles_from_cache", 0) or 0)
