"""Package layering: Processing (also run by qgis_process, which has no GUI) imports nothing from
the chat dock's package, neither at import time nor later inside a function."""

from __future__ import annotations

import pytest

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


@pytest.mark.qgis
@pytest.mark.subprocess
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


# The QGIS side: both packages and the QGIS-side modules they share.
QGIS_SIDE = ("gui", "processing", "heat_layer.py", "ask_inputs.py", "worker_client.py",
             "worker_launch.py", "settings.py", "plugin.py")


def engine_reaches(path: Path, package: str):
    """The engine modules a file reaches past the package's public API (engine/__init__.py)."""
    from rs_vqa_plugin import engine

    for module in imported_modules(path, package):
        if not module.startswith("rs_vqa_plugin.engine."):
            continue
        name = module[len("rs_vqa_plugin.engine."):]
        if name not in engine.__all__:
            yield module


def test_the_qgis_side_uses_only_the_engine_packages_public_api():
    offenders = []
    for entry in QGIS_SIDE:
        target = PACKAGE / entry
        paths = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        package = f"rs_vqa_plugin.{entry}" if target.is_dir() else "rs_vqa_plugin"
        for path in paths:
            offenders += [f"{path.relative_to(REPO)}: {m}" for m in engine_reaches(path, package)]
    assert not offenders, offenders


def test_the_api_scan_sees_a_submodule_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from ..engine import InputError\n"
                     "def f():\n    from ..engine.pipeline import AskOptions\n")
    assert list(engine_reaches(probe, "rs_vqa_plugin.processing")) == [
        "rs_vqa_plugin.engine.pipeline", "rs_vqa_plugin.engine.pipeline.AskOptions"]


@pytest.mark.subprocess
def test_the_engine_api_names_resolve_and_the_package_import_costs_nothing():
    script = ("import sys\n"
              "import rs_vqa_plugin.engine as engine\n"
              "loaded = sorted(n for n in sys.modules if n.startswith('rs_vqa_plugin.engine.'))\n"
              "print(loaded, [n for n in ('numpy', 'osgeo') if n in sys.modules])\n"
              "missing = [n for n in engine.__all__ if getattr(engine, n, None) is None]\n"
              "print(missing)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    first, second = result.stdout.strip().splitlines()[-2:]
    assert first == "[] []" and second == "[]"
