"""Checks that this Python can run the models in-process, and says how to get there when it cannot."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import List, Optional

from qgis.core import QgsProcessingException

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
    (by default the .venv that ./build.sh setup makes beside the sources)."""
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
    return (
        f"RS-VQA's Processing algorithms run the model inside this Python ({sys.executable}), which "
        f"cannot import {', '.join(missing)}, and no runtime Python was found for a worker process. "
        "Set up the runtime once with `./build.sh setup` in the rs-vqa source folder, then either "
        "point RS-VQA's settings (Runtime Python) or the RS_VQA_RUNTIME_PYTHON variable at the "
        "Python it creates, or run the algorithm with that runtime's packages on the path, e.g.\n"
        "  PYTHONPATH=<rs-vqa>/.venv/lib/python3.X/site-packages QT_QPA_PLATFORM=offscreen "
        "qgis_process.bin run rs_vqa:ask -- INPUT=image.tif QUESTIONS='How many ships?' OUTPUT=answers.csv\n"
        "(or start QGIS itself with that PYTHONPATH). The chat dock does not need this: it runs the "
        "model in a separate worker process."
    )


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
