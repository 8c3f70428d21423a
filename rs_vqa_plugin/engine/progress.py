"""Progress events and cancellation shared by every long engine operation."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional

from .errors import Cancelled

Event = Dict[str, Any]
EventSink = Callable[[Event], None]


class CancelToken:
    """Thread-safe flag; long loops call raise_if_cancelled() between units of work, and a call
    that cannot poll (an ONNX Runtime run) registers a callback that interrupts it from the
    cancelling thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: List[Callable[[], None]] = []

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()

    @contextmanager
    def on_cancel(self, callback: Callable[[], None]) -> Iterator[None]:
        """Within the block, cancel() also calls callback (at once if already cancelled)."""
        with self._lock:
            already = self._event.is_set()
            if not already:
                self._callbacks.append(callback)
        if already:
            callback()
        try:
            yield
        finally:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()


# The stages of one ask, in the order it goes through them (read to select repeat per pyramid
# level; load and overviews happen once per model and per raster). Defined here only: the
# pipeline's trace times TIMED_STAGES, the dock and Processing show progress and labels by them.
ASK_STAGES = ("load", "overviews", "read", "encode", "score", "select", "generate")
TIMED_STAGES = ("read", "encode", "score", "select", "generate")
STAGE_LABELS = {"load": "Loading the model", "overviews": "Building overviews (once for this raster)",
                "read": "Reading pixels", "encode": "Encoding tiles", "score": "Scoring tokens",
                "select": "Selecting tiles", "generate": "Writing the answer"}


def stage_position(stage: str, fraction: float) -> float:
    """Where an ask roughly is (0..1) at `fraction` of `stage`, for a bar that only moves forward
    (an unknown stage counts as the first)."""
    index = ASK_STAGES.index(stage) if stage in ASK_STAGES else 0
    return (index + max(0.0, min(1.0, float(fraction)))) / len(ASK_STAGES)


def no_events(_event: Event) -> None:
    pass


def progress_event(stage: str, fraction: float, message: str = "") -> Event:
    """{"type": "progress", "stage": one of ASK_STAGES (or a tool's own), "fraction": 0..1}."""
    return {"type": "progress", "stage": stage, "fraction": max(0.0, min(1.0, float(fraction))),
            "message": message}


def token_event(text: str) -> Event:
    return {"type": "token", "text": text}


class TrimmedTokens:
    """Passes streamed answer text on without its leading and trailing white space, as the
    answer's text is stripped: the token events a client concatenates then equal the answer.
    White space inside the answer waits until more text follows it."""

    def __init__(self, sink: Callable[[str], None]):
        self._sink = sink
        self._started = False
        self._held = ""

    def __call__(self, text: str) -> None:
        if not self._started:
            text = text.lstrip()
            if not text:
                return
            self._started = True
        body = text.rstrip()
        if not body:
            self._held += text
            return
        self._sink(self._held + body)
        self._held = text[len(body):]


def emit(sink: Optional[EventSink], event: Event) -> None:
    if sink is not None:
        sink(event)
