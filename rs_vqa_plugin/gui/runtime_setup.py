"""Background jobs on the runtime Python: "Check runtime" (doctor --json) and "Set up runtime"."""

from __future__ import annotations

import json
import os
import re
from typing import List, Optional

from qgis.PyQt.QtCore import QCoreApplication, QObject, QProcess, QProcessEnvironment, pyqtSignal

from ..paths import PACKAGE_DIR, repo_root
from ..settings import setup_venv_dir
from ..setup_advice import is_source_checkout


def redact_home(text: str) -> str:
    home = os.path.expanduser("~")
    return text.replace(home, "~") if home and home != "/" else text


def setup_command(target_python: str = "") -> List[List[str]]:
    """The steps of "Set up runtime": build.sh setup in a source checkout; elsewhere (plugin zip) a
    venv with the system site packages (to see QGIS and GDAL) and the pinned requirements."""
    if is_source_checkout():
        return [["bash", str(repo_root() / "build.sh"), "setup"]]
    python = str(setup_venv_dir() / "bin" / "python")
    requirements = [str(PACKAGE_DIR / name) for name in ("requirements.txt", "requirements-cpu.txt")
                    if (PACKAGE_DIR / name).is_file()]
    steps = [["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(setup_venv_dir())],
             [python, "-m", "pip", "install", "--upgrade", "pip"]]
    if requirements:
        steps.append([python, "-m", "pip", "install"] + [a for r in requirements for a in ("-r", r)])
    return steps


def set_up_python() -> str:
    """The runtime Python that setup_command() produces."""
    if is_source_checkout():
        return str(repo_root() / ".venv" / "bin" / "python")
    return str(setup_venv_dir() / "bin" / "python")


class RuntimeJob(QObject):
    """Runs a list of commands one after the other in a QProcess, streaming their output."""
    output = pyqtSignal(str)
    finished = pyqtSignal(bool, str)   # ok, all output

    def __init__(self, steps: List[List[str]], parent: Optional[QObject] = None):
        super().__init__(parent)
        self.steps = list(steps)
        self.log: List[str] = []
        self.process: Optional[QProcess] = None

    def start(self) -> None:
        self._next()

    def _next(self) -> None:
        if not self.steps:
            self.finished.emit(True, "".join(self.log))
            return
        program, *args = self.steps.pop(0)
        process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONPATH", os.pathsep.join(
            p for p in (str(PACKAGE_DIR.parent), env.value("PYTHONPATH")) if p))
        env.remove("PYTHONHOME")
        process.setProcessEnvironment(env)
        process.setProcessChannelMode(QProcess.MergedChannels)
        process.readyReadStandardOutput.connect(self._read)
        process.finished.connect(self._done)
        process.errorOccurred.connect(self._error)
        self.process = process
        self._emit(f"$ {redact_home(' '.join([program] + args))}\n")
        process.start(program, args)

    def _emit(self, text: str) -> None:
        self.log.append(text)
        self.output.emit(text)

    def _read(self) -> None:
        self._emit(bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace"))

    def _error(self, error) -> None:
        if error == QProcess.FailedToStart:
            self._emit(self.tr("Could not start: {error}\n").format(error=self.process.errorString()))
            self.steps.clear()
            self.finished.emit(False, "".join(self.log))

    def _done(self, code: int, _status) -> None:
        self._read()
        if code != 0:
            self.steps.clear()
            self.finished.emit(False, "".join(self.log))
        else:
            self._next()

    def cancel(self) -> None:
        self.steps.clear()
        if self.process is not None and self.process.state() != QProcess.NotRunning:
            self.process.kill()


def doctor_job(python: str, parent=None) -> RuntimeJob:
    return RuntimeJob([[python, "-m", "rs_vqa_plugin", "doctor", "--json", "--no-qgis"]], parent)


def parse_doctor(output: str) -> Optional[dict]:
    """The JSON object `doctor --json` printed (after the echoed command line)."""
    match = re.search(r"\{.*\}", output, re.S)
    if not match:
        return None
    try:
        return json.loads(match.group(0))
    except ValueError:
        return None


def tr(text: str) -> str:
    return QCoreApplication.translate("RuntimeSetup", text)


def summarise_doctor(report: dict) -> str:
    packages = report.get("packages", {})
    lines = [tr("Python {version} ({path})").format(version=report.get("python", "?"),
                                                    path=report.get("executable", "?"))]
    lines += [f"{name}: {version or tr('NOT AVAILABLE')}" for name, version in packages.items()]
    lines.append(tr("torch device: {device}").format(device=report.get("torch_device", "?")))
    lines.append(tr("ONNX Runtime provider: {provider} (available: {available})").format(
        provider=report.get("onnxruntime_provider_auto", "?"),
        available=", ".join(report.get("onnxruntime_providers", []) or [])))
    lines += [tr("PROBLEM: {problem}").format(problem=p) for p in report.get("problems", [])]
    return "\n".join(lines)
