"""One loaded Engine kept between Processing runs, so that a batch (one run per row) or a model
that takes a minute to load is loaded once, not once per raster.

Only the last (model folder, device) is kept: a real LVLM holds gigabytes, and a batch uses one
model. The key includes the bundle files' modification times, so a model rebuilt in place is
reloaded. A lock serialises runs that share the engine (its sessions are not meant for two
questions at once); the provider's unload frees it."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Tuple

_lock = threading.RLock()
_engine = None
_key: Optional[Tuple] = None
loads = 0          # how many engines were built in this process (tests and diagnostics read it)


def _bundle_key(model_dir, device: str) -> Tuple:
    folder = Path(model_dir).expanduser().resolve()
    stamps = tuple(sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns, p.stat().st_size)
                          for p in folder.rglob("*") if p.is_file()))
    return str(folder), str(device), stamps


@contextmanager
def shared_engine(model_dir, device: str = "auto", on_load=None):
    """The engine of `model_dir` on `device`, loaded now or reused; held exclusively in the block.
    `on_load()` is called before a (slow) load, e.g. to tell the user."""
    global _engine, _key, loads
    with _lock:
        key = _bundle_key(model_dir, device)
        if _engine is None or key != _key:
            _engine, _key = None, None      # free the old model before loading the next
            if on_load is not None:
                on_load()
            from ..engine.pipeline import Engine

            _engine = Engine(model_dir, device=device)
            _key = key
            loads += 1
        yield _engine


def release() -> None:
    """Drop the kept engine (plugin unload, or to free memory)."""
    global _engine, _key
    with _lock:
        _engine, _key = None, None
