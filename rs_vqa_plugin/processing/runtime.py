"""Checks that this Python can run the models in-process, and says how to get there when it cannot."""

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


def runs_in_worker() -> bool:
    """True when this Python cannot run the models but a runtime worker can."""
    return bool(missing_ml_packages()) and bool(worker_python())


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
        "qgis_process.bin run rs_vqa:ask -- INPUT=image.tif QUESTIONS='How many ships?' OUTPUT=answers.csv\n"
        "(or start QGIS itself with that PYTHONPATH).")


def ml_runtime_problem() -> Optional[str]:
    """What stops the models from running, in this Python or in a worker; None when nothing."""
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
