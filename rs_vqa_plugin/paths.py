"""Where shipped files live, both in a source checkout and in an installed plugin zip."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return candidates[0]


def resources_dir() -> Path:
    # Source checkout: <repo>/resources; plugin zip: <plugin>/resources.
    return _first_existing(PACKAGE_DIR.parent / "resources", PACKAGE_DIR / "resources")


def models_dir() -> Path:
    return _first_existing(PACKAGE_DIR.parent / "models", PACKAGE_DIR / "models")


def default_model_dir() -> Path:
    return models_dir() / "default"


def repo_root() -> Path:
    return PACKAGE_DIR.parent
