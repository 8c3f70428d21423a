"""Real imagery for tests, fetched from a registry package at test time (cached in tests/.data/).

The `deepforest` wheel on PyPI ships OSBS_029.tif: a 400 x 400 px, 0.1 m RGB aerial tile from NEON
(UTM 17N, EPSG:32617). We download the pinned wheel once with pip and extract only that file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / ".data"
DEEPFOREST_VERSION = "2.1.0"
OSBS_MEMBER = "deepforest/data/OSBS_029.tif"


class RealDataUnavailable(RuntimeError):
    """The registry could not be reached (or the wheel changed): tests needing it are skipped."""


def _wheel() -> Path:
    wheels = DATA_DIR / "wheels"
    found = sorted(wheels.glob(f"deepforest-{DEEPFOREST_VERSION}-*.whl"))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           f"deepforest=={DEEPFOREST_VERSION}", "-d", str(wheels)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RealDataUnavailable(f"pip download deepforest=={DEEPFOREST_VERSION} failed: {exc}") from None
    found = sorted(wheels.glob(f"deepforest-{DEEPFOREST_VERSION}-*.whl"))
    if result.returncode != 0 or not found:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RealDataUnavailable(f"pip download deepforest=={DEEPFOREST_VERSION} failed: {tail[0]}")
    return found[0]


def fetch_real_geotiff() -> Path:
    """Path of OSBS_029.tif, downloading and extracting it on first use; RealDataUnavailable if not."""
    target = DATA_DIR / "OSBS_029.tif"
    if target.is_file():
        return target
    wheel = _wheel()
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(OSBS_MEMBER)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise RealDataUnavailable(f"{wheel.name} does not hold {OSBS_MEMBER}: {exc}") from None
    # Parallel test processes may race: write a private file, then rename atomically.
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target


def real_geotiff() -> Path:
    """For tests: the real GeoTIFF, or a pytest skip saying why it could not be fetched."""
    try:
        return fetch_real_geotiff()
    except RealDataUnavailable as exc:
        import pytest

        pytest.skip(f"real GeoTIFF unavailable ({exc})")
