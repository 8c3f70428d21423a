"""The engine in the runtime's worker process, for Processing runs in a Python without the ML
stack (the QGIS desktop's own Python, or qgis_process without PYTHONPATH).

Same `ask` as engine.pipeline.Engine, spoken over the worker protocol (engine/worker.py: JSON
lines on stdin/stdout) with plain subprocess pipes, since Processing runs in a worker thread and
needs no Qt event loop. Progress and streamed tokens come back as engine events; a cancel token
is polled while waiting and sends the worker a cancel; a worker that dies is reported with the
end of its stderr."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import queue
import subprocess
import threading
from collections import deque
from typing import Optional

from ..engine import errors
from ..setup_advice import runtime_setup_advice
from ..worker_launch import WORKER_ARGS, worker_cwd, worker_environment

START_SECONDS = 120.0       # a cold start imports torch and transformers
POLL_SECONDS = 0.1
_ERRORS = {"InputError": errors.InputError, "BundleError": errors.BundleError,
           "RuntimeSetupError": errors.RuntimeSetupError}


class WorkerEngine:
    def __init__(self, python: str, model_dir, device: str = "auto"):
        from ..engine.worker import ASK_OPTION_FIELDS

        self.python, self.model_dir, self.device = str(python), str(model_dir), str(device)
        self._fields = ASK_OPTION_FIELDS
        self._ids = itertools.count(1)
        self._lines: "queue.Queue[Optional[dict]]" = queue.Queue()
        self.stderr_tail: deque = deque(maxlen=40)
        try:
            self._process = subprocess.Popen(
                [self.python, *WORKER_ARGS], cwd=worker_cwd(), env=worker_environment(os.environ),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, encoding="utf-8", bufsize=1)
        except OSError as exc:
            raise errors.RuntimeSetupError(
                f"The runtime Python {self.python} could not be started ({exc}): "
                f"{runtime_setup_advice()}; or set RS_VQA_RUNTIME_PYTHON to a Python that has "
                "the rs-vqa stack.") from exc
        threading.Thread(target=self._read_stdout, daemon=True, name="rs-vqa-worker-out").start()
        threading.Thread(target=self._read_stderr, daemon=True, name="rs-vqa-worker-err").start()
        try:
            self._wait("", ("ready",), timeout=START_SECONDS)
            loaded = self._request("load", None, None, model=self.model_dir, device=self.device)
        except BaseException:
            self.close()
            raise
        self.load_info = {k: v for k, v in loaded.items() if k not in ("id", "event")}

    # -- the Engine API ------------------------------------------------------------------------
    def ask(self, raster_path, question, options=None, events=None, cancel=None):
        from ..engine.answer import answer_from_dict

        values = dataclasses.asdict(options) if options is not None else {}
        sent = {k: v for k, v in values.items() if k in self._fields and v is not None}
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
                self._send({"id": "bye", "cmd": "shutdown"})
                self._process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()

    # -- protocol ------------------------------------------------------------------------------
    def _send(self, request: dict) -> None:
        try:
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
        except (OSError, ValueError):
            raise self._death() from None

    def _request(self, cmd: str, events, cancel, **fields) -> dict:
        request_id = f"p{next(self._ids)}"
        self._send({"id": request_id, "cmd": cmd, **fields})
        return self._wait(request_id, ("loaded", "answer"), events=events, cancel=cancel)

    def _wait(self, request_id: str, done: tuple, events=None, cancel=None,
              timeout: Optional[float] = None) -> dict:
        cancel_sent, waited = False, 0.0
        while True:
            if cancel is not None and cancel.cancelled and not cancel_sent and request_id:
                self._send({"id": f"c{request_id}", "cmd": "cancel", "target": request_id})
                cancel_sent = True
            try:
                message = self._lines.get(timeout=POLL_SECONDS)
            except queue.Empty:
                waited += POLL_SECONDS
                if timeout is not None and waited > timeout:
                    self._process.kill()
                    raise errors.RuntimeSetupError(
                        f"The runtime worker ({self.python}) did not start within "
                        f"{timeout:.0f} s.") from None
                continue
            if message is None:
                raise self._death()
            if message.get("id") != request_id or message.get("event") == "heartbeat":
                continue
            event = message.get("event")
            if event in done:
                return message
            if event == "cancelled":
                raise errors.Cancelled(message.get("message") or "Cancelled.")
            if event == "error":
                kind = _ERRORS.get(message.get("kind"), errors.RsVqaError)
                raise kind(message.get("message") or "The runtime worker reported an error.")
            if events is not None:
                fields = {k: v for k, v in message.items() if k not in ("id", "event")}
                events({"type": event, **fields})

    def _death(self) -> errors.RuntimeSetupError:
        self._process.poll()
        tail = "\n".join(self.stderr_tail) or "(no output)"
        return errors.RuntimeSetupError(
            f"The runtime worker ({self.python}) stopped (exit code {self._process.returncode}). "
            f"Its last output:\n{tail}")

    def _read_stdout(self) -> None:
        for line in self._process.stdout:
            try:
                self._lines.put(json.loads(line))
            except ValueError:
                self.stderr_tail.append(line.rstrip())
        self._lines.put(None)

    def _read_stderr(self) -> None:
        for line in self._process.stderr:
            self.stderr_tail.append(line.rstrip())
