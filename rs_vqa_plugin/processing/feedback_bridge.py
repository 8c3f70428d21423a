"""Engine events -> Processing feedback (progress, messages) and feedback cancel -> engine CancelToken."""

from __future__ import annotations

from ..engine import CancelToken, stage_position


class FeedbackBridge:
    """Callable event sink for the engine; one unit of work (a question, an image) at a time."""

    def __init__(self, feedback, total_units: int = 1, staged: bool = True):
        """`staged`: a question goes through the engine's ask stages; else (overviews) one
        stage's fraction is the unit's."""
        self.feedback = feedback
        self.staged = staged
        self.token = CancelToken()
        self.total_units = max(1, int(total_units))
        self.unit = 0
        self._within = 0.0
        # Cancel reaches the engine even while it is inside a stage that emits no event for a while.
        feedback.canceled.connect(self.token.cancel)
        if feedback.isCanceled():
            self.token.cancel()

    def start_unit(self, index: int) -> None:
        self.unit = index
        self._within = 0.0
        self._publish()

    def finish_unit(self, index: int) -> None:
        self.unit = index + 1
        self._within = 0.0
        self._publish()

    @property
    def cancelled(self) -> bool:
        if self.feedback.isCanceled():
            self.token.cancel()
        return self.token.cancelled

    def __call__(self, event: dict) -> None:
        if event.get("type") == "progress":
            stage = event.get("stage", "")
            fraction = float(event.get("fraction", 0.0))
            position = stage_position(stage, fraction) if self.staged else fraction
            self._within = max(self._within, min(1.0, position))
            self._publish()
            message = event.get("message")
            if message:
                self.feedback.pushDebugInfo(f"{stage}: {message}")
        if self.feedback.isCanceled():
            self.token.cancel()

    def _publish(self) -> None:
        overall = (min(self.unit, self.total_units) + self._within) / self.total_units
        self.feedback.setProgress(100.0 * min(1.0, overall))

    def close(self) -> None:
        try:
            self.feedback.canceled.disconnect(self.token.cancel)
        except TypeError:
            pass
