"""Progress events and cancellation shared by every long engine operation."""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Optional

from .errors import Cancelled

Event = Dict[str, Any]
EventSink = Callable[[Event], None]


class CancelToken:
    """Thread-safe flag; long loops call raise_if_cancelled() between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

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
