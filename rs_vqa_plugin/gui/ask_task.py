"""A QgsTask that mirrors one worker ask in QGIS's task manager: progress per stage, cancel -> Stop.

The work itself happens in the worker process; this task only waits, so QGIS's task list shows the
question and its cancel button stops the worker. Results are applied by the dock controller on the
GUI thread (worker events are delivered there), never from this task's thread.
"""

from __future__ import annotations

import threading

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from ..engine import stage_position

# QGIS announces every task that ran over 5 s when it ends ("Task complete: <description>"); 3.22
# has no way to opt out and, without desktop notifications, pushes it onto the message bar above
# the map, once per answer. QGIS 3.26+ has the Silent flag for that; older ones get the notice
# removed again (drop_completion_notice). The dock shows the answer; the bar is for what needs action.
TASK_FLAGS = QgsTask.CanCancel | getattr(QgsTask, "Silent", QgsTask.CanCancel)


def drop_completion_notice(message_bar, description: str) -> int:
    """Remove the task-ended bars QGIS pushed for the task described `description` (its own text:
    the title is translated); returns how many. Call from the task manager's statusChanged, which
    QGIS handles first (its slot is connected at start-up, before any plugin's)."""
    removed = 0
    for item in list(message_bar.items()):
        if item.text() == description:
            message_bar.popWidget(item)
            removed += 1
    return removed


def overall_percent(stage: str, fraction: float) -> float:
    """Rough share of the whole ask by the engine's stage order, so the task bar only moves forward."""
    return 100.0 * stage_position(stage, fraction)


class AskTask(QgsTask):
    stopRequested = pyqtSignal(str)   # request id; connected to the worker client's cancel

    def __init__(self, description: str, request_id: str):
        super().__init__(description, TASK_FLAGS)
        self.request_id = request_id
        self.outcome = ""              # answered | failed | stopped
        self._done = threading.Event()
        self._best = 0.0

    def relay_progress(self, stage: str, fraction: float) -> None:
        self._best = max(self._best, overall_percent(stage, fraction))
        self.setProgress(self._best)

    def finish(self, outcome: str) -> None:
        """Called on the GUI thread when the worker answered, failed or stopped."""
        self.outcome = outcome
        self._done.set()

    def run(self) -> bool:   # task-manager thread: just wait for the worker's verdict
        while not self._done.wait(0.1):
            if self.isCanceled():
                # cancel() already asked the worker to stop; wait briefly for its confirmation.
                self._done.wait(5.0)
                return False
        return self.outcome == "answered"

    def cancel(self) -> None:   # from the task manager's cancel button (GUI thread)
        if not self._done.is_set():
            self.stopRequested.emit(self.request_id)
        super().cancel()
