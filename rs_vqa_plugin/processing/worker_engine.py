"""The engine in the runtime's worker process, for Processing: always in the QGIS desktop (a model
crash must not take QGIS down), and in a Python without the ML stack (qgis_process without
PYTHONPATH).

Same `ask` as the engine's Engine, spoken over the worker protocol with plain subprocess pipes,
since Processing runs in a worker thread and needs no Qt event loop. The protocol, the heartbeat
verdict, the error kinds and the death report are the core's (rs_vqa_plugin/worker_client.py),
shared with the chat dock. Progress and streamed tokens come back as engine events; a cancel token
is polled while waiting and sends the worker a cancel; a worker that dies, or stops beating (hung),
is ended and reported with the end of its stderr, and `alive` turns false so that the next run
starts a fresh one."""

from __future__ import annotations

import dataclasses
import os
import queue
import subprocess
import threading
from typing import Optional

from ..engine import ASK_OPTION_FIELDS, Cancelled, RuntimeSetupError, answer_from_dict
from ..setup_advice import runtime_setup_advice
from ..worker_client import (CRASHED, HEARTBEAT_TIMEOUT_S, HUNG, QUIET_EVENTS, WorkerSession,
                             error_for)
from ..worker_launch import WORKER_ARGS, worker_cwd, worker_environment

START_SECONDS = 120.0       # a cold start imports torch and transformers
POLL_SECONDS = 0.1
DEATH_LINES = 12            # of the worker's stderr in the message: enough for a traceback's end


class WorkerEngine:
    def __init__(self, python: str, model_dir, device: str = "auto",
                 heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S):
        self.python, self.model_dir, self.device = str(python), str(model_dir), str(device)
        self.session = WorkerSession(heartbeat_timeout_s)
        self._lines: "queue.Queue[Optional[dict]]" = queue.Queue()
        try:
            self._process = subprocess.Popen(
                [self.python, *WORKER_ARGS], cwd=worker_cwd(), env=worker_environment(os.environ),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, encoding="utf-8", errors="replace", bufsize=1)
        except OSError as exc:
            raise RuntimeSetupError(
                f"The runtime Python {self.python} could not be started ({exc}): "
                f"{runtime_setup_advice()}; or set RS_VQA_RUNTIME_PYTHON to a Python that has "
                "the rs-vqa stack.") from exc
        threading.Thread(target=self._read_stdout, daemon=True, name="rs-vqa-worker-out").start()
        threading.Thread(target=self._read_stderr, daemon=True, name="rs-vqa-worker-err").start()
        try:
            self._wait("", (), start=True)
            loaded = self._request("load", None, None, model=self.model_dir, device=self.device)
        except BaseException:
            self.close()
            raise
        self.load_info = {k: v for k, v in loaded.items() if k not in ("id", "event")}

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    @property
    def stderr_tail(self):
        return self.session.stderr_tail

    # -- the Engine API ------------------------------------------------------------------------
    def ask(self, raster_path, question, options=None, events=None, cancel=None):
        values = dataclasses.asdict(options) if options is not None else {}
        sent = {k: v for k, v in values.items() if k in ASK_OPTION_FIELDS and v is not None}
        reply = self._request("ask", events, cancel, raster=str(raster_path),
                              question=str(question), options=sent)
        return answer_from_dict(reply["answer"])

    def set_tile_cache_mb(self, megabytes: float) -> None:
        # A load of the model already loaded: the worker only resizes its engine's tile cache.
        self._request("load", None, None, model=self.model_dir, device=self.device,
                      tile_cache_mb=float(megabytes))

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                self._write(self.session.control("shutdown"))
                self._process.wait(timeout=5)
            except (OSError, RuntimeSetupError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()

    # -- protocol ------------------------------------------------------------------------------
    def _write(self, line: bytes) -> None:
        try:
            self._process.stdin.write(line.decode("utf-8"))
            self._process.stdin.flush()
        except (OSError, ValueError):
            raise self._death() from None

    def _request(self, cmd: str, events, cancel, **fields) -> dict:
        request_id, line = self.session.request(cmd, **fields)
        self._write(line)
        return self._wait(request_id, ("loaded", "answer"), events=events, cancel=cancel)

    def _wait(self, request_id: str, done: tuple, events=None, cancel=None,
              start: bool = False) -> dict:
        cancel_sent = False
        while True:
            if cancel is not None and cancel.cancelled and not cancel_sent and request_id:
                self._write(self.session.control("cancel", target=request_id))
                cancel_sent = True
            try:
                message = self._lines.get(timeout=POLL_SECONDS)
            except queue.Empty:
                self._check_alive(start)
                continue
            if message is None:
                raise self._death()
            event = message.get("event")
            if start and event == "ready":
                return message
            if message.get("id") != request_id or event in QUIET_EVENTS:
                continue
            self.session.settle(message)
            if event in done:
                return message
            if event == "cancelled":
                raise Cancelled(message.get("message") or "Cancelled.")
            if event == "error":
                raise error_for(message)
            if events is not None:
                fields = {k: v for k, v in message.items() if k not in ("id", "event")}
                events({"type": event, **fields})

    def _check_alive(self, start: bool) -> None:
        """End a worker that went silent: no `ready` within START_SECONDS, or no heartbeat for the
        heartbeat timeout once it runs (a hung worker must not hold the run for ever)."""
        if not self.session.overdue(START_SECONDS if start else None):
            return
        self.session.mark_hung()
        self._process.kill()
        self._process.wait()
        if start:
            raise RuntimeSetupError(f"The runtime worker ({self.python}) did not start within "
                                    f"{START_SECONDS:.0f} s. {self._last_words()}")
        raise self._death()

    def _last_words(self) -> str:
        return "Its last output:\n" + ("\n".join(list(self.stderr_tail)[-DEATH_LINES:])
                                       or "(none)")

    def _death(self) -> RuntimeSetupError:
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        reason = self.session.reason(crashed=code is not None and code < 0)
        if code is None and reason != HUNG:
            reason = CRASHED
        return RuntimeSetupError(self.session.death_message(reason, code, lines=DEATH_LINES))

    def _read_stdout(self) -> None:
        for line in self._process.stdout:
            event = self.session.parse(line)
            if event is not None:
                self._lines.put(event)
        self._lines.put(None)

    def _read_stderr(self) -> None:
        for line in self._process.stderr:
            self.session.feed_stderr(line)
