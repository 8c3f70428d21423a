"""How a client starts the engine worker (engine/worker.py) in the runtime's Python: one command,
working folder and environment for the chat dock's QProcess and for Processing's subprocess."""

from __future__ import annotations

import os
from typing import Dict, List, Mapping

from .engine import OFFLINE_ENVIRONMENT
from .paths import PACKAGE_DIR

WORKER_ARGS: List[str] = ["-u", "-m", "rs_vqa_plugin", "worker"]


def worker_cwd() -> str:
    return str(PACKAGE_DIR.parent)


def worker_environment(base: Mapping[str, str]) -> Dict[str, str]:
    """`base` plus what the worker needs: this very package importable (the runtime needs no
    install of the plugin), unbuffered protocol output, no network for models."""
    env = dict(base)
    parent = worker_cwd()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (parent, env.get("PYTHONPATH")) if p)
    env.update(OFFLINE_ENVIRONMENT, PYTHONUNBUFFERED="1")
    env.pop("PYTHONHOME", None)     # QGIS may set it for its own embedded Python
    return env
