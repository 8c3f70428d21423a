"""One engine answering work units, the same code in one process and in every Ray actor.

A unit is one question about one raster. Units of one raster are given to one worker one after the
other, so its engine reuses the raster's pyramid and tile encodings across them (tile_cache.py).
A failed question is returned as an Outcome with its error, not raised: the run records it and goes
on. Cancellation still raises.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Hashable, List, Optional

from .answer import Answer
from .errors import Cancelled, RsVqaError


@dataclass(frozen=True)
class WorkUnit:
    key: Hashable          # what the output is resumed by (an eval question id, a (raster, id) pair)
    raster: str            # the file the engine reads
    question: str
    group: str             # units of one group go to one worker, one after the other (the raster)
    meta: dict = field(default_factory=dict)   # what the output needs back (question record, ...)


@dataclass
class Outcome:
    unit: WorkUnit
    answer: Optional[Answer] = None
    error: str = ""
    worker: str = ""       # host:pid that answered (or failed)

    @property
    def failed(self) -> bool:
        return self.answer is None


def group_units(units: List[WorkUnit]) -> List[List[WorkUnit]]:
    """Units grouped by `group`, groups in order of first appearance, units in their order."""
    groups = {}
    for unit in units:
        groups.setdefault(unit.group, []).append(unit)
    return list(groups.values())


class AnswerWorker:
    """An Engine with its options, answering one unit at a time."""

    def __init__(self, model_dir: str, options, device: str = "auto", tile_cache_mb: float = 512.0,
                 threads: int = 0, keep_heat_cells: bool = True, dtype: Optional[str] = None):
        from .offline import keep_offline

        keep_offline()     # in a Ray worker process too, before onnxruntime/transformers load
        if threads:
            os.environ["OMP_NUM_THREADS"] = str(threads)
            import torch

            torch.set_num_threads(int(threads))
        from .pipeline import Engine

        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.options = options
        self.keep_heat_cells = keep_heat_cells
        started = time.perf_counter()
        self.engine = Engine(model_dir, device=device, tile_cache_mb=tile_cache_mb, dtype=dtype,
                             threads=threads)
        self.load_seconds = time.perf_counter() - started

    def describe(self) -> dict:
        """Where this worker runs and what it runs on (for the run's log)."""
        import rs_vqa_plugin

        return {"worker": self.name, "provider": getattr(self.engine.vision, "provider", ""),
                "device": str(getattr(self.engine.llm, "device", "")),
                "load_seconds": round(self.load_seconds, 2),
                "package": os.path.dirname(rs_vqa_plugin.__file__)}

    def answer(self, unit: WorkUnit) -> Outcome:
        try:
            answer = self.engine.ask(unit.raster, unit.question, self.options)
        except Cancelled:
            raise
        except RsVqaError as exc:
            return Outcome(unit, error=str(exc), worker=self.name)
        except Exception as exc:   # a model/runtime failure on this raster: recorded, the run goes on
            last = traceback.extract_tb(exc.__traceback__)[-1:]
            where = f" ({last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
            return Outcome(unit, error=f"{type(exc).__name__}: {exc}{where}", worker=self.name)
        if not self.keep_heat_cells:
            answer.heat_cells = []
        return Outcome(unit, answer=answer, worker=self.name)


class LocalPool:
    """Units answered in this process by one worker, in order (the single-process run)."""

    def __init__(self, worker: AnswerWorker):
        self.worker = worker
        self.workers = [worker.describe()]

    def run(self, groups):
        for group in groups:
            for unit in group:
                yield self.worker.answer(unit)

    def stop(self) -> None:
        pass
