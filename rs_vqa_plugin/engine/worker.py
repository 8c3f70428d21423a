"""The engine worker: line-delimited JSON requests on stdin, events on stdout (see the worker protocol).

Runs in the runtime's Python, never inside QGIS. The model is loaded once and kept warm; a stdin
reader thread honours cancel while an ask runs; an error is reported as an event, never fatal.
Every event carries the id of the request it belongs to ("" for ready, heartbeats and lines that
name no request). Any bytes on stdin get an answer: a line that is not UTF-8 JSON, or longer than
MAX_REQUEST_BYTES, gets a ProtocolError event and the worker reads on.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, IO, Iterator, Optional, Tuple

from .errors import BundleError, Cancelled, InputError, RsVqaError, RuntimeSetupError
from .progress import CancelToken
from .question_text import check_question_text

Request = Dict[str, Any]
EngineFactory = Callable[[str, str, Callable], Any]

HEARTBEAT_SECONDS = 1.0
# One request line at most; a longer one is skipped unread (a question that fits any model's
# context is far shorter, see question_text.py).
MAX_REQUEST_BYTES = 16 * 1024 * 1024


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _pairs(value) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, list) and len(t) == 2 and all(isinstance(x, str) for x in t) for t in value)


# AskOptions fields a request may set, with the JSON they take; anything else is refused.
ASK_OPTION_CHECKS = {
    "mode": (lambda v: isinstance(v, str), "a mode name"),
    "alpha": (lambda v: v is None or _number(v), "a number"),
    "n_max": (lambda v: v is None or _whole(v), "a whole number"),
    "level": (_whole, "a whole number"),
    "scope": (lambda v: v is None or isinstance(v, str) or (
        isinstance(v, list) and len(v) == 4 and all(map(_number, v))),
        "[xmin, ymin, xmax, ymax] or polygon WKT"),
    "history": (lambda v: v is None or _pairs(v), "a list of [question, answer] pairs"),
    "bands": (lambda v: v is None or (isinstance(v, list) and all(map(_whole, v))),
              "a list of band numbers"),
    "max_new_tokens": (_whole, "a whole number"),
    "full_token_limit": (_whole, "a whole number"),
    "overview_cache_dir": (lambda v: v is None or isinstance(v, str), "a folder path"),
    "overviews_in_cache": (lambda v: isinstance(v, bool), "true or false"),
    "selection": (lambda v: v is None or isinstance(v, str), "a selection such as 'paper'"),
    "memory_limit_mb": (lambda v: v is None or _number(v), "a number of MB"),
}
ASK_OPTION_FIELDS = tuple(ASK_OPTION_CHECKS)
LLM_DTYPES = ("auto", "float32", "bfloat16", "float16")   # engine.llm.DTYPES and auto (no torch here)


def default_engine_factory(model: str, device: str, events: Callable, dtype: str = "auto") -> Any:
    # Imported here: torch/onnxruntime load only when a model is really loaded.
    try:
        from .pipeline import Engine

        return Engine(model, device=device, events=events, dtype=dtype)
    except ImportError as exc:   # a runtime without the ML stack: say which Python and what to do
        from ..setup_advice import runtime_setup_advice
        raise RuntimeSetupError(f"This runtime ({sys.executable}) cannot load the engine "
                                f"({exc}): {runtime_setup_advice()}.") from exc


def make_ask_options(options: Dict[str, Any]) -> Any:
    from .pipeline import AskOptions

    if not isinstance(options, dict):
        raise InputError(f"The ask's options must be a JSON object, not {type(options).__name__}.")
    unknown = sorted(set(options) - set(ASK_OPTION_FIELDS))
    if unknown:
        raise InputError(f"Unknown ask option(s) {', '.join(unknown)}: "
                         f"use only {', '.join(ASK_OPTION_FIELDS)}.")
    for name, value in options.items():
        valid, wanted = ASK_OPTION_CHECKS[name]
        if not valid(value):
            raise InputError(f"Ask option {name} must be {wanted}, not {value!r:.80}.")
    values = dict(options)
    if isinstance(values.get("scope"), list):
        values["scope"] = tuple(values["scope"])
    if values.get("history") is not None:
        values["history"] = tuple((str(q), str(a)) for q, a in values["history"])
    return AskOptions(**values)


def answer_as_dict(answer: Any) -> Dict[str, Any]:
    from .answer import answer_to_dict

    return answer_to_dict(answer)


class EventWriter:
    """Writes one JSON object per line to the protocol stream; safe from several threads."""

    def __init__(self, stream: IO[str]):
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, request_id: str, event: str, **fields: Any) -> None:
        line = json.dumps({"id": request_id, "event": event, **fields}, default=_jsonable)
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # the client went away; the main loop ends on stdin EOF


def _jsonable(value: Any) -> Any:
    # numpy scalars/arrays and tuples inside traces.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


class Worker:
    """Serves requests one at a time; cancel and shutdown are handled as soon as they are read."""

    def __init__(self, out: IO[str], engine_factory: EngineFactory = default_engine_factory,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS):
        self.events = EventWriter(out)
        self.engine_factory = engine_factory
        self.heartbeat_seconds = heartbeat_seconds
        self.engine = None
        self.model_key: Optional[tuple] = None
        self.load_info: Dict[str, Any] = {}
        self._requests: "queue.Queue[Optional[Request]]" = queue.Queue()
        self._lock = threading.Lock()
        self._running_id: Optional[str] = None
        self._running_cancel: Optional[CancelToken] = None
        self._queued_ids: set = set()
        self._cancelled_ids: set = set()   # queued requests cancelled before they were reached
        self._stop = threading.Event()

    # ---- threads -------------------------------------------------------------------------
    def serve(self, stdin: IO[bytes]) -> int:
        reader = threading.Thread(target=self._read_requests, args=(stdin,), daemon=True,
                                  name="rs-vqa-stdin")
        beat = threading.Thread(target=self._heartbeat, daemon=True, name="rs-vqa-heartbeat")
        reader.start()
        beat.start()
        self.events.send("", "ready", pid=os.getpid())
        while True:
            request = self._requests.get()
            if request is None:
                break
            self._handle(request)
        self._stop.set()
        return 0

    def _read_requests(self, stdin: IO[bytes]) -> None:
        try:
            for line in request_lines(stdin, MAX_REQUEST_BYTES):
                if not self._take(line):
                    return
        except Exception:   # never leave a worker that beats but no longer reads its requests
            traceback.print_exc(file=sys.stderr)
        finally:
            # stdin closed (the client is gone) or unreadable: stop after what is running.
            self._cancel_running()
            self._requests.put(None)

    def _take(self, line: Optional[bytes]) -> bool:
        """Act on one line at once (cancel, shutdown) or queue it; False after shutdown."""
        request, request_id, problem = parse_request(line)
        if request is None:
            self.events.send(request_id, "error", kind="ProtocolError", message=problem)
            return True
        cmd = request.get("cmd")
        if cmd == "cancel":
            self._cancel(str(request.get("target", "")), request_id)
        elif cmd == "shutdown":
            self._cancel_running()
            self._requests.put(request)
            return False
        else:
            with self._lock:
                self._queued_ids.add(request_id)
            self._requests.put(request)
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            with self._lock:
                busy = self._running_id
            self.events.send("", "heartbeat", time=time.time(), busy=busy,
                             loaded=self.model_key is not None)

    def _cancel(self, target: str, request_id: str) -> None:
        with self._lock:
            if target and target == self._running_id and self._running_cancel is not None:
                self._running_cancel.cancel()
                return
            if target in self._queued_ids:
                self._cancelled_ids.add(target)   # dropped when it is reached
                return
        self.events.send(request_id, "error", kind="InputError",
                         message=f"Nothing to cancel: no request {target!r} is queued or running "
                                 "(it may have finished already).")

    def _cancel_running(self) -> None:
        with self._lock:
            if self._running_cancel is not None:
                self._running_cancel.cancel()

    # ---- requests ------------------------------------------------------------------------
    def _handle(self, request: Request) -> None:
        request_id = str(request.get("id", ""))
        cmd = request.get("cmd")
        cancel = CancelToken()
        with self._lock:
            # Queued -> running in one step, so that a cancel always finds the request.
            self._queued_ids.discard(request_id)
            if request_id in self._cancelled_ids:
                self._cancelled_ids.discard(request_id)
                cancel.cancel()
            self._running_id, self._running_cancel = request_id, cancel
        try:
            cancel.raise_if_cancelled()
            if cmd == "load":
                self._load(request_id, request)
            elif cmd == "ask":
                self._ask(request_id, request, cancel)
            elif cmd == "shutdown":
                self.events.send(request_id, "shutdown")
            elif cmd == "ping":
                self.events.send(request_id, "pong")
            else:
                raise InputError(f"Unknown command {cmd!r}: use load, ask, cancel or shutdown.")
        except Cancelled as exc:
            self.events.send(request_id, "cancelled", message=str(exc))
        except RsVqaError as exc:
            self.events.send(request_id, "error", kind=type(exc).__name__, message=str(exc))
        except MemoryError:
            self.events.send(request_id, "error", kind="MemoryError",
                             message="The runtime ran out of memory: lower N_max or the maximum "
                                     "answer tokens, or choose a smaller scope.")
        except Exception as exc:  # an unexpected bug must not end the worker
            traceback.print_exc(file=sys.stderr)
            self.events.send(request_id, "error", kind=type(exc).__name__,
                             message=f"Internal error ({type(exc).__name__}: {exc}). "
                                     "Copy the diagnostics from the settings and report it.")
        finally:
            with self._lock:
                self._running_id = None
                self._running_cancel = None

    def _load(self, request_id: str, request: Request) -> None:
        model = request.get("model")
        if not model:
            raise InputError("The load request names no model folder: choose a model bundle.")
        device = str(request.get("device") or "auto")
        dtype = str(request.get("dtype") or "auto")
        if dtype not in LLM_DTYPES:
            raise InputError(f"dtype {dtype!r} is not one of {', '.join(LLM_DTYPES)}: the LLM's dtype "
                             "(auto: the bundle's where the device runs it well).")
        if not os.path.isdir(str(model)):
            raise BundleError(f"The model folder {model} does not exist: choose a model bundle "
                              "folder (one with a manifest.json) in the settings.")
        key = (os.path.abspath(str(model)), device, dtype)
        if self.engine is None or self.model_key != key:
            self.engine = None
            self.model_key = None
            started = time.perf_counter()
            self.events.send(request_id, "progress", stage="load", fraction=0.0,
                             message=f"Loading the model from {model}")
            # No engine-wide sink: each ask passes its own request's sink, so an event is sent
            # once, under the ask it belongs to (a sink bound here doubled every event).
            # dtype only when chosen: engine factories (tests, embedders) may take three arguments
            engine = self.engine_factory(str(model), device, None,
                                         **({} if dtype == "auto" else {"dtype": dtype}))
            self.engine, self.model_key = engine, key
            self.load_info = {"model": str(model), "device": _engine_device(engine, device),
                              "providers": _engine_providers(engine),
                              "seconds": round(time.perf_counter() - started, 3)}
            self.events.send(request_id, "progress", stage="load", fraction=1.0, message="Model loaded")
        self._size_tile_cache(request)
        self.events.send(request_id, "loaded", **self.load_info)

    def _size_tile_cache(self, request: Request) -> None:
        """A load (or ask) may bound the warm engine's tile cache (MB, 0: off); the model stays."""
        if request.get("tile_cache_mb") is None:
            return
        from .tile_cache import check_megabytes

        value = request["tile_cache_mb"]
        if not _number(value):
            raise InputError(f"tile_cache_mb must be a number of MB (0 turns the cache off), "
                             f"not {value!r:.60}.")
        self.engine.set_tile_cache_mb(check_megabytes(value, "tile_cache_mb"))

    def _ask(self, request_id: str, request: Request, cancel: CancelToken) -> None:
        if request.get("model"):
            # Convenience: an ask may name its model; it is loaded (once) before answering.
            self._load(request_id, request)
        if self.engine is None:
            raise InputError("No model is loaded: send a load request (or name a model in the ask).")
        if not request.get("model"):
            self._size_tile_cache(request)
        raster, question = request.get("raster"), request.get("question")
        if not raster or not question:
            raise InputError("An ask needs a raster path and a question.")
        if not isinstance(raster, str) or not isinstance(question, str):
            raise InputError("An ask's raster path and question must be text.")
        options = make_ask_options(request.get("options") or {})
        # Before anything tokenises it: a question far beyond the context is refused cheaply.
        check_question_text(question, options.history,
                            int(getattr(getattr(self.engine, "llm", None), "max_context", 0) or 0))
        cancel.raise_if_cancelled()
        answer = self.engine.ask(raster, question, options, events=self._sink(request_id),
                                 cancel=cancel)
        cancel.raise_if_cancelled()
        self.events.send(request_id, "answer", answer=answer_as_dict(answer))

    def _sink(self, request_id: str) -> Callable[[Dict[str, Any]], None]:
        def sink(event: Dict[str, Any]) -> None:
            fields = dict(event)
            kind = fields.pop("type", "progress")
            self.events.send(request_id, kind, **fields)
        return sink


def request_lines(stream: IO[bytes], limit: int) -> Iterator[Optional[bytes]]:
    """The non-blank lines of a binary stream; None in place of a line longer than `limit`
    bytes, which is skipped without being held in memory."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit:
            while line and not line.endswith(b"\n"):
                line = stream.readline(limit)
            yield None
        elif line.strip():
            yield line


def parse_request(line: Optional[bytes]) -> Tuple[Optional[Request], str, str]:
    """(request, its id, "") or (None, the id if one can be read, what is wrong)."""
    if line is None:
        return None, "", (f"A request line longer than {MAX_REQUEST_BYTES // 2 ** 20} MiB was "
                          "dropped: send one JSON object per line, with shorter text.")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Name the request when its id is readable, so that the client can fail just that one.
        guess = _request_id(line.decode("utf-8", "replace"))
        return None, guess, (f"A request line is not UTF-8 (byte 0x{line[exc.start]:02x} at "
                             f"offset {exc.start}): send UTF-8 JSON, one object per line.")
    try:
        request = json.loads(text)
    except ValueError as exc:
        return None, "", f"Unreadable request ({exc}): send one JSON object per line."
    if not isinstance(request, dict):
        return None, "", "Unreadable request (not a JSON object): send one JSON object per line."
    return request, str(request.get("id", "")), ""


def _request_id(text: str) -> str:
    try:
        request = json.loads(text)
    except ValueError:
        return ""
    return str(request.get("id", "")) if isinstance(request, dict) else ""


def _engine_device(engine: Any, requested: str) -> str:
    for attribute in ("device",):
        value = getattr(engine, attribute, None)
        if isinstance(value, str):
            return value
    llm = getattr(engine, "llm", None)
    return str(getattr(llm, "device", requested))


def _engine_providers(engine: Any) -> Dict[str, str]:
    providers = getattr(engine, "providers", None)
    if isinstance(providers, dict):
        return {str(k): str(v) for k, v in providers.items()}
    found = {}
    for name in ("vision", "rfm"):
        part = getattr(engine, name, None)
        if part is not None and getattr(part, "provider", None):
            found[name] = str(part.provider)
    return found


def protocol_streams() -> tuple:
    """Keep fd 1 for the protocol only: stray prints (ours, libraries', C code) go to stderr."""
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    protocol = os.fdopen(protocol_fd, "w", encoding="utf-8", buffering=1)
    # Bytes, decoded line by line: one bad line must not end the reader (worker protocol).
    stdin = open(sys.stdin.fileno(), "rb", closefd=False)
    return stdin, protocol


def main(heartbeat_seconds: float = HEARTBEAT_SECONDS) -> int:
    stdin, protocol = protocol_streams()
    return Worker(protocol, heartbeat_seconds=heartbeat_seconds).serve(stdin)
