"""Drive a pool of answer workers (in this process or on Ray) over work units: each answer is
written as it arrives, each failure logged with its raster and the run goes on, progress (done /
total, rate, ETA) after every question, and Ctrl-C ends the workers and keeps what was written.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, List, Optional

from .answer_worker import Outcome, WorkUnit
from .errors import Cancelled


def failures_path(answers_path) -> Path:
    answers_path = Path(answers_path)
    return answers_path.with_name(answers_path.name + ".failures.jsonl")


class FailureLog:
    """Failed questions, appended to <answers>.failures.jsonl (made at the first failure). They are
    not answers: a rerun asks them again."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.count = 0
        self.rasters = set()
        self._stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def add(self, outcome: Outcome, question_id: str) -> None:
        record = {"run": self._stamp, "raster": outcome.unit.raster, "question_id": question_id,
                  "question": outcome.unit.question, "error": outcome.error,
                  "worker": outcome.worker}
        with self.path.open("a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        self.count += 1
        self.rasters.add(outcome.unit.raster)


class RunProgress:
    """`[done/total] rate, ETA` where done counts earlier runs' answers too; the rate is this run's."""

    def __init__(self, total: int, already: int, clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.done = already
        self.new = 0
        self.failed = 0
        self.clock = clock
        self.started = clock()

    def start(self) -> None:
        """The clock starts when the workers are ready (model loading is not throughput)."""
        self.started = self.clock()

    def step(self, failed: bool) -> str:
        self.new += 1
        if failed:
            self.failed += 1
        else:
            self.done += 1
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.new / elapsed
        left = self.total - self.done - self.failed
        eta = _clock_text(left / rate) if rate > 0 else "?"
        failed_text = f", {self.failed} failed" if self.failed else ""
        return f"[{self.done}/{self.total}{failed_text}] {rate * 60:.1f} q/min, ETA {eta}"


def _clock_text(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class RunCounts:
    answered: int = 0
    failed: int = 0
    seconds: float = 0.0


def drive(pool, groups: List[List[WorkUnit]], write: Callable[[Outcome], None],
          failures: FailureLog, question_id: Callable[[WorkUnit], str], progress: RunProgress,
          report: Optional[Callable[[str, Outcome], None]], kept_in: str) -> RunCounts:
    """Run every group through the pool; write(outcome) for answers, failures.add for failures."""
    counts = RunCounts()
    started = time.perf_counter()
    progress.start()
    outcomes = pool.run(groups)
    try:
        for outcome in outcomes:
            if outcome.failed:
                failures.add(outcome, question_id(outcome.unit))
                counts.failed += 1
            else:
                write(outcome)
                counts.answered += 1
            line = progress.step(outcome.failed)
            if report is not None:
                report(line, outcome)
    except KeyboardInterrupt:
        outcomes.close()
        pool.stop()
        raise Cancelled(f"Interrupted after {counts.answered} new answers, kept in {kept_in}; "
                        "run the same command again to go on from there.") from None
    finally:
        counts.seconds = time.perf_counter() - started
    return counts
