"""Where Processing runs the model, and what to do when it cannot run anywhere.

In the QGIS desktop (its toolbox, batch dialog and Python console) always in the runtime's worker
process, as the chat dock does: a model that crashes or runs out of memory must not take QGIS
down. Headless (qgis_process, or processing.run in a plain Python script) in this Python when it
has the ML stack (one process, no start-up), else in the worker too."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import List, Optional

from qgis.core import QgsProcessingException

from ..setup_advice import is_source_checkout, runtime_setup_advice

# What the engine imports to run a question (the vision/RFM parts through ONNX Runtime, the LLM
# through PyTorch + transformers).
ML_PACKAGES = ("onnxruntime", "torch", "transformers")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_ml_packages() -> List[str]:
    return [name for name in ML_PACKAGES if not _importable(name)]


def worker_python() -> str:
    """A runtime Python that can run the models in a worker process, or '' when there is none:
    RS_VQA_RUNTIME_PYTHON when set (empty: none), else the plugin settings' runtime Python
    (by default the runtime a set-up made, see settings.default_runtime_python)."""
    candidate = os.environ.get("RS_VQA_RUNTIME_PYTHON")
    if candidate is None:
        from ..settings import load_settings

        candidate = load_settings().python
    candidate = str(candidate or "")
    return candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else ""


def in_desktop() -> bool:
    """True inside the QGIS desktop application (qgis.utils.iface is set there, and only there:
    qgis_process and a script's own QgsApplication leave it None)."""
    import qgis.utils

    return getattr(qgis.utils, "iface", None) is not None


def runs_in_worker() -> bool:
    """True when the models run in a runtime worker: always in the desktop, elsewhere when this
    Python cannot run them itself (and a runtime Python exists)."""
    return bool(worker_python()) and (in_desktop() or bool(missing_ml_packages()))


def desktop_help() -> str:
    return ("RS-VQA runs its models in a separate runtime Python inside the QGIS desktop (so that "
            "a model crash cannot take QGIS down), and none is set up. Click \"Set up runtime\" "
            "in RS-VQA's settings (Raster › RS-VQA › Settings…), or choose a Python that has "
            f"torch, transformers and onnxruntime as its Runtime Python: {runtime_setup_advice()}; "
            "or set RS_VQA_RUNTIME_PYTHON.")


def runtime_help(missing: List[str]) -> str:
    advice = (
        f"RS-VQA's Processing algorithms run the model inside this Python ({sys.executable}), which "
        f"cannot import {', '.join(missing)}, and no runtime Python was found for a worker process. "
        f"Set up a runtime once: {runtime_setup_advice()}. Processing then uses the Runtime Python "
        "of RS-VQA's settings; or set RS_VQA_RUNTIME_PYTHON to a Python that has the rs-vqa stack.")
    if not is_source_checkout():
        return advice
    return advice + (
        " Or run the algorithm with that runtime's packages on the path, e.g.\n"
        "  PYTHONPATH=<rs-vqa>/.venv/lib/python3.X/site-packages QT_QPA_PLATFORM=offscreen "
        "qgis_process.bin run rs_vqa:ask -- INPUT=image.tif QUESTIONS='How many ships?' OUTPUT=answers.csv")


def ml_runtime_problem() -> Optional[str]:
    """What stops the models from running, in this Python or in a worker; None when nothing."""
    if in_desktop():
        return None if worker_python() else desktop_help()
    missing = missing_ml_packages()
    return runtime_help(missing) if missing and not worker_python() else None


def require_ml_runtime() -> None:
    """Raise a QgsProcessingException naming the missing packages, before any heavy work starts."""
    problem = ml_runtime_problem()
    if problem:
        raise QgsProcessingException(problem)


def model_and_runtime_problem(model_dir: str) -> Optional[str]:
    """What stops a model-running algorithm before any heavy work: the bundle folder, then the
    ML packages of the Python that runs Processing. None when both are fine."""
    from .common import check_model_folder

    message = check_model_folder(model_dir)
    return message or ml_runtime_problem()
