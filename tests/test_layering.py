"""Package layering: Processing (also run by qgis_process, which has no GUI) imports nothing from
the chat dock's package, neither at import time nor later inside a function."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "rs_vqa_plugin"


def imported_modules(path: Path, package: str):
    """Absolute names of every module a file imports (relative imports resolved), wherever they are."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def test_processing_sources_never_import_the_gui_package():
    offenders = []
    for path in sorted((PACKAGE / "processing").rglob("*.py")):
        for module in imported_modules(path, "rs_vqa_plugin.processing"):
            if module == "rs_vqa_plugin.gui" or module.startswith("rs_vqa_plugin.gui."):
                offenders.append(f"{path.relative_to(REPO)}: {module}")
    assert not offenders, offenders


def test_the_scan_sees_relative_gui_imports(tmp_path):
    # The check above must be able to fail: the import that was in processing/runtime.py.
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from ..gui.settings import load_settings\n")
    assert "rs_vqa_plugin.gui.settings" in set(imported_modules(probe, "rs_vqa_plugin.processing"))


def test_processing_at_work_loads_no_gui_module(tmp_path):
    # Every Processing module imported, the provider built and the runtime/model defaults looked
    # up (the lazy imports run), in a fresh interpreter: no rs_vqa_plugin.gui module is loaded.
    script = tmp_path / "probe.py"
    script.write_text(
        "import importlib, pkgutil, sys\n"
        "from tests.qgis_support import start_qgis\n"
        "start_qgis()\n"
        "import rs_vqa_plugin.processing as processing\n"
        "for m in pkgutil.iter_modules(processing.__path__):\n"
        "    importlib.import_module('rs_vqa_plugin.processing.' + m.name)\n"
        "from rs_vqa_plugin.processing.provider import RsVqaProvider\n"
        "from rs_vqa_plugin.processing.runtime import worker_python\n"
        "from rs_vqa_plugin.processing.common import default_model_folder\n"
        "provider = RsVqaProvider()\n"
        "provider.loadAlgorithms()\n"
        "worker_python(); default_model_folder()\n"
        "print(sorted(n for n in sys.modules if n.startswith('rs_vqa_plugin.gui')))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile"))
    env.pop("RS_VQA_RUNTIME_PYTHON", None)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            cwd=str(REPO), env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
