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


def no_events(_event: Event) -> None:
    pass


def progress_event(stage: str, fraction: float, message: str = "") -> Event:
    """{"type": "progress", "stage": read|encode|score|select|generate|..., "fraction": 0..1}."""
    return {"type": "progress", "stage": stage, "fraction": max(0.0, min(1.0, float(fraction))),
            "message": message}


def token_event(text: str) -> Event:
    return {"type": "token", "text": text}


def emit(sink: Optional[EventSink], event: Event) -> None:
    if sink is not None:
        sink(event)
