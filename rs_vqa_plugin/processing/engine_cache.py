"""One loaded engine kept between Processing runs, so that a batch (one run per row) or a model
that takes a minute to load is loaded once, not once per raster.

Only the last (model folder, device) is kept: a real LVLM holds gigabytes, and a batch uses one
model. The key includes the bundle files' modification times, so a model rebuilt in place is
reloaded. In the QGIS desktop, or without the ML stack in this Python, the engine is the runtime's
worker process (worker_engine.py, see runtime.py), kept warm the same way; a worker that died is
replaced by a fresh one on the next run. A lock serialises runs that share the engine (its
sessions are not meant for two questions at once); the provider's unload frees it."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Tuple

_lock = threading.RLock()
_engine = None
_key: Optional[Tuple] = None
loads = 0          # how many engines were built in this process (tests and diagnostics read it)


def _bundle_key(model_dir, device: str, python: str) -> Tuple:
    folder = Path(model_dir).expanduser().resolve()
    stamps = tuple(sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns, p.stat().st_size)
                          for p in folder.rglob("*") if p.is_file()))
    return str(folder), str(device), python, stamps


def _close(engine) -> None:
    close = getattr(engine, "close", None)
    if close is not None:
        close()


@contextmanager
def shared_engine(model_dir, device: str = "auto", on_load=None, tile_cache_mb=None):
    """The engine of `model_dir` on `device`, loaded now or reused; held exclusively in the block.
    `on_load()` is called before a (slow) load, e.g. to tell the user. `tile_cache_mb` (None:
    as it is) bounds its tile cache, which is kept with the engine, so a batch's rows over one
    raster reuse each other's tile encodings."""
    global _engine, _key, loads
    from ..engine import RuntimeSetupError
    from .runtime import in_desktop, ml_runtime_problem, runs_in_worker, worker_python

    with _lock:
        python = worker_python() if runs_in_worker() else ""
        if not python and in_desktop():   # never torch inside the QGIS desktop
            raise RuntimeSetupError(ml_runtime_problem() or "No runtime Python for RS-VQA.")
        key = _bundle_key(model_dir, device, python)
        if _engine is None or key != _key or not getattr(_engine, "alive", True):
            old, _engine, _key = _engine, None, None   # free the old model before the next loads
            _close(old)
            if on_load is not None:
                on_load()
            if python:
                from .worker_engine import WorkerEngine

                _engine = WorkerEngine(python, model_dir, device)
            else:
                from ..engine import Engine

                _engine = Engine(model_dir, device=device)
            _key = key
            loads += 1
        if tile_cache_mb is not None:
            _engine.set_tile_cache_mb(tile_cache_mb)
        yield _engine


def release() -> None:
    """Drop the kept engine (plugin unload, or to free memory)."""
    global _engine, _key
    with _lock:
        old, _engine, _key = _engine, None, None
        _close(old)
