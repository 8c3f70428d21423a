"""Talks to the engine worker process (runtime Python) from the GUI thread through a QProcess.

The protocol, the heartbeat verdict, the error kinds and the death report are the Qt-free core's
(rs_vqa_plugin/worker_client.py), shared with Processing; this class is its Qt transport. Events
arrive as Qt signals on the GUI thread. A worker that dies (crash, out of memory, killed) or stops
sending heartbeats is reported plainly; the next question starts a fresh one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from qgis.PyQt.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, pyqtSignal

from ..worker_client import HEARTBEAT_TIMEOUT_S, QUIET_EVENTS, WorkerSession
from ..worker_launch import WORKER_ARGS, worker_cwd, worker_environment


class WorkerClient(QObject):
    loaded = pyqtSignal(str, dict)                # request id, {model, device, providers, seconds}
    progress = pyqtSignal(str, str, float, str)   # request id, stage, fraction, message
    token = pyqtSignal(str, str)                  # request id, text
    answered = pyqtSignal(str, dict)              # request id, answer_to_dict(...)
    failed = pyqtSignal(str, str)                 # request id, plain-language message
    cancelled = pyqtSignal(str)                   # request id
    died = pyqtSignal(str)                        # message; every pending request also failed
    runtime_unusable = pyqtSignal(str)            # the runtime Python lacks what the engine needs

    def __init__(self, python: str = "", parent: Optional[QObject] = None,
                 heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S):
        super().__init__(parent)
        self.python = python
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.process: Optional[QProcess] = None
        self.session = WorkerSession(heartbeat_timeout_s)
        self._closing = False
        self._starting = False
        self._ended_for_stop = False
        self._watchdog = QTimer(self)
        self._watchdog.setInterval(2000)
        self._watchdog.timeout.connect(self._check_heartbeat)

    # ---- life cycle ----------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.NotRunning

    def runtime_problem(self) -> Optional[str]:
        # Worded for every install (a plugin zip too): the buttons the dock and settings show.
        if not self.python:
            return self.tr("No runtime Python is set up, so RS-VQA cannot answer yet. Click \"Set "
                           "up runtime\" (it installs PyTorch, transformers and ONNX Runtime for "
                           "RS-VQA, once, in a few minutes), or choose a Python that has them as "
                           "Runtime Python in the RS-VQA settings (⚙).")
        if not Path(self.python).is_file():
            return self.tr("The runtime Python {path} does not exist (moved or deleted?). Click "
                           "\"Set up runtime\", or choose another Runtime Python in the RS-VQA "
                           "settings (⚙).").format(path=self.python)
        return None

    def start(self) -> Optional[str]:
        """Start the worker if needed; returns a problem message or None."""
        if self.is_running():
            return None
        problem = self.runtime_problem()
        if problem:
            return problem
        process = QProcess(self)
        env = QProcessEnvironment()
        for name, value in worker_environment(os.environ).items():
            env.insert(name, value)
        process.setProcessEnvironment(env)
        process.setWorkingDirectory(worker_cwd())
        process.readyReadStandardOutput.connect(self._read_stdout)
        process.readyReadStandardError.connect(self._read_stderr)
        process.finished.connect(self._on_finished)
        process.errorOccurred.connect(self._on_error)
        self.process = process
        self._closing = False
        self.session.reset()
        self._starting = True   # a failed start is returned here, not reported as a death
        process.start(self.python, WORKER_ARGS)
        started = process.waitForStarted(10000)
        self._starting = False
        if not started:
            self.process = None
            process.deleteLater()
            return self.tr("The runtime Python {path} could not be started ({error}). Check it in "
                           "the RS-VQA settings.").format(path=self.python,
                                                          error=process.errorString())
        self._watchdog.start()
        return None

    def shutdown(self, wait_ms: int = 3000) -> None:
        """Ask the worker to stop, and end it if it does not (frees the model and GPU memory)."""
        process = self.process
        if process is None:
            return
        self._closing = True
        self._watchdog.stop()
        if process.state() != QProcess.NotRunning:
            process.write(self.session.control("shutdown"))
            process.closeWriteChannel()
            if not process.waitForFinished(wait_ms):
                process.kill()
                process.waitForFinished(1000)
        self.session.take_pending()
        process.deleteLater()
        self.process = None

    def kill(self) -> None:
        """Hard stop (as the OOM killer would); reported through `died` like any crash."""
        if self.is_running():
            self.process.kill()

    def end_for_stop(self) -> None:
        """End a worker that could not stop in time (e.g. still loading the model), because the
        person pressed Stop: its requests are reported `cancelled`, and no crash is reported."""
        if self.is_running():
            self._ended_for_stop = True
            self.process.kill()

    # ---- requests ------------------------------------------------------------------------
    @property
    def pending(self) -> dict:
        return self.session.pending

    @property
    def stderr_tail(self):
        return self.session.stderr_tail

    def request(self, cmd: str, **fields) -> tuple:
        """(request id, problem). Starts the worker when needed."""
        problem = self.start()
        if problem:
            return "", problem
        request_id, line = self.session.request(cmd, **fields)
        self.process.write(line)
        return request_id, None

    def load(self, model: str, device: str = "auto") -> tuple:
        return self.request("load", model=model, device=device)

    def ask(self, raster: str, question: str, options: dict, model: str = "",
            device: str = "auto", tile_cache_mb=None) -> tuple:
        # The model rides along: the worker loads it once and keeps it warm for the next asks,
        # with its tile cache bounded to tile_cache_mb (None: left as it is).
        fields = {} if tile_cache_mb is None else {"tile_cache_mb": float(tile_cache_mb)}
        return self.request("ask", raster=raster, question=question, options=options,
                            model=model, device=device, **fields)

    def cancel(self, request_id: str) -> None:
        if self.is_running() and request_id in self.pending:
            self.process.write(self.session.control("cancel", target=request_id))

    # ---- events --------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        if self.process is None:
            return
        for event in self.session.feed(bytes(self.process.readAllStandardOutput())):
            self._dispatch(event)

    def _read_stderr(self) -> None:
        if self.process is None:
            return
        self.session.feed_stderr(bytes(self.process.readAllStandardError()).decode("utf-8", "replace"))

    def _dispatch(self, event: dict) -> None:
        request_id, kind = str(event.get("id", "")), event.get("event")
        if kind in QUIET_EVENTS:
            return
        self.session.settle(event)
        if kind == "progress":
            self.progress.emit(request_id, str(event.get("stage", "")),
                               float(event.get("fraction", 0.0)), str(event.get("message", "")))
        elif kind == "token":
            self.token.emit(request_id, str(event.get("text", "")))
        elif kind == "loaded":
            self.loaded.emit(request_id, {k: v for k, v in event.items() if k not in ("id", "event")})
        elif kind == "answer":
            self.answered.emit(request_id, event.get("answer") or {})
        elif kind == "error":
            self.failed.emit(request_id, str(event.get("message", "")))
            if event.get("kind") == "RuntimeSetupError":
                self.runtime_unusable.emit(str(event.get("message", "")))
        elif kind == "cancelled":
            self.cancelled.emit(request_id)

    def _check_heartbeat(self) -> None:
        if self.is_running() and self.session.overdue(self.heartbeat_timeout_s):
            self.session.mark_hung()
            self.process.kill()

    def _on_error(self, error) -> None:
        if error == QProcess.FailedToStart and not (self._closing or self._starting):
            self._report_death(self.tr("The runtime Python {path} could not be started. Check it "
                                       "in the RS-VQA settings.").format(path=self.python))

    def _on_finished(self, exit_code: int, exit_status) -> None:
        if self.process is not None:
            self._read_stdout()
            self._read_stderr()
        if self._closing or self._starting:
            return
        if self._ended_for_stop:
            self._report_stopped()
            return
        reason = self.session.reason(crashed=exit_status == QProcess.CrashExit)
        self._report_death(self.session.death_message(reason, exit_code, tr=self.tr))

    def _forget_process(self) -> dict:
        """The requests the ended worker still owed; the next request starts a fresh worker."""
        self._watchdog.stop()
        self.session.hung = False
        self._ended_for_stop = False
        pending = self.session.take_pending()
        if self.process is not None:
            self.process.deleteLater()
        self.process = None
        return pending

    def _report_death(self, message: str) -> None:
        for request_id in self._forget_process():
            self.failed.emit(request_id, message)
        self.died.emit(message)

    def _report_stopped(self) -> None:
        for request_id in self._forget_process():
            self.cancelled.emit(request_id)
