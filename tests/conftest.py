"""Shared test fixtures: environment for headless QGIS and offline transformers, small GeoTIFFs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


# Test tiers (markers registered in pyproject.toml): qgis, subprocess, training. Modules and tests
# mark themselves; a test that reaches headless QGIS through the shared fixtures is marked qgis
# here as well, so that the quick tier (-m "not qgis and not subprocess and not training") never
# starts QGIS by accident.
QGIS_FIXTURES = {"qgis_app", "qgis_processing", "recording_iface"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if QGIS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.qgis)
