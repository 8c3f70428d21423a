"""The client half of the worker protocol (engine/worker.py), free of Qt: one core for the chat
dock's QProcess client (gui/worker_client.py) and Processing's pipe client
(processing/worker_engine.py).

The transports differ (Qt signals on the GUI thread; blocking pipes in Processing's thread); what
they share lives here: request ids and lines, event lines split and parsed, which requests are
still owed an answer, the heartbeat watchdog's verdict, worker errors mapped to the engine's
error classes, and the one message that reports a worker's death.
"""

from __future__ import annotations

import collections
import itertools
import json
import time
from typing import Callable, Dict, List, Optional, Tuple

from .engine import BundleError, InputError, RsVqaError, RuntimeSetupError

# The worker beats every second (engine/worker.py); a worker silent this long is hung (a deadlock,
# a frozen process) and is ended, so neither the dock nor a Processing run waits for ever.
HEARTBEAT_TIMEOUT_S = 30.0
STDERR_LINES_KEPT = 40
QUIET_EVENTS = ("heartbeat", "ready", "pong")           # liveness only, never a request's news
FINAL_EVENTS = ("answer", "error", "cancelled", "shutdown")
ERROR_KINDS = {"InputError": InputError, "BundleError": BundleError,
               "RuntimeSetupError": RuntimeSetupError}

# How a worker ended: the reason words of death_message.
HUNG, CRASHED, EXITED = "hung", "crashed", "exited"


def _same(text: str) -> str:
    return text


class WorkerSession:
    """The protocol state of one worker process (reset() for the next one)."""

    def __init__(self, heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S):
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.pending: Dict[str, str] = {}        # request id -> command, until its final event
        self.stderr_tail: collections.deque = collections.deque(maxlen=STDERR_LINES_KEPT)
        self.last_event_time = time.monotonic()
        self.hung = False
        self._buffer = b""
        self._ids = itertools.count(1)

    def reset(self) -> None:
        """A fresh worker starts: nothing buffered, nothing heard yet, the clock restarts."""
        self._buffer = b""
        self.stderr_tail.clear()
        self.last_event_time = time.monotonic()
        self.hung = False

    # -- requests ------------------------------------------------------------------------------
    def next_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def request(self, cmd: str, **fields) -> Tuple[str, bytes]:
        """(request id, the line to write); the request is owed an answer from now on."""
        request_id = self.next_id(cmd)
        self.pending[request_id] = cmd
        return request_id, encode({"id": request_id, "cmd": cmd, **fields})

    def control(self, cmd: str, **fields) -> bytes:
        """A cancel or shutdown line: answered at once by the worker, never owed."""
        return encode({"id": self.next_id(cmd), "cmd": cmd, **fields})

    def take_pending(self) -> Dict[str, str]:
        """The requests still owed (the worker ended): forgotten here, reported by the caller."""
        pending, self.pending = self.pending, {}
        return pending

    # -- events --------------------------------------------------------------------------------
    def feed(self, data: bytes) -> List[dict]:
        """Bytes from the worker's stdout -> its complete events, in order."""
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        return [e for e in (self.parse(line) for line in lines) if e is not None]

    def parse(self, line) -> Optional[dict]:
        """One stdout line -> its event (None for a blank line, or a stray line kept as output).
        Any line is a sign of life."""
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        if not line.strip():
            return None
        self.last_event_time = time.monotonic()
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            self.stderr_tail.append(line.rstrip())
            return None
        return event

    def feed_stderr(self, text: str) -> None:
        self.stderr_tail.extend(line.rstrip() for line in text.splitlines() if line.strip())

    def settle(self, event: dict) -> None:
        """Forget the request an event ends (a `loaded` ends a load, not an ask that loads)."""
        request_id, kind = str(event.get("id", "")), event.get("event")
        if kind in FINAL_EVENTS or (kind == "loaded" and self.pending.get(request_id) == "load"):
            self.pending.pop(request_id, None)

    # -- liveness ------------------------------------------------------------------------------
    def overdue(self, timeout_s: Optional[float] = None, now: Optional[float] = None) -> bool:
        """True when the worker has been silent (not even a heartbeat) for longer than the
        timeout; the caller then ends it and reports death_message(HUNG)."""
        limit = self.heartbeat_timeout_s if timeout_s is None else timeout_s
        silent = (time.monotonic() if now is None else now) - self.last_event_time
        return silent > limit

    def mark_hung(self) -> None:
        self.hung = True
        self.stderr_tail.append("rs-vqa: no heartbeat from the worker; ended it.")

    def reason(self, crashed: bool) -> str:
        return HUNG if self.hung else CRASHED if crashed else EXITED

    def death_message(self, reason: str, exit_code: Optional[int] = None, lines: int = 1,
                      tr: Callable[[str], str] = _same) -> str:
        """What a person reads when the worker ended under a request: why, that QGIS is fine,
        and the worker's last words (`lines` of them)."""
        if reason == HUNG:
            why = tr("stopped responding and was ended")
        elif reason == CRASHED:
            why = tr("crashed or was killed (for example by the system when memory ran out)")
        else:
            why = tr("exited with code {code}").format(code=exit_code)
        message = tr("The RS-VQA runtime {reason}. QGIS is fine; the next question starts a "
                     "fresh runtime.").format(reason=why)
        last = [line[-300:] for line in list(self.stderr_tail)[-lines:]]
        if last:
            message += " " + tr("Last runtime message: {line}").format(line="\n".join(last))
        return message


def encode(request: dict) -> bytes:
    return (json.dumps(request) + "\n").encode("utf-8")


def error_for(event: dict) -> RsVqaError:
    """A worker's error event as the engine's own error class (its message kept)."""
    kind = ERROR_KINDS.get(str(event.get("kind", "")), RsVqaError)
    return kind(str(event.get("message") or "The runtime worker reported an error."))
