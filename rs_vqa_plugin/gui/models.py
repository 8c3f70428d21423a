"""Model bundles the dock can offer: found in models/ and user folders, checked cheaply (no torch)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional

from ..paths import models_dir

REQUIRED_FILES = ("vision.onnx", "rfm.onnx", "llm")
# provenance.source of the bundled default model: trained by `train-default` on synthetic scenes
# only, a demonstration of the method, not a model for real imagery.
DEMO_SOURCES = ("train-default",)


@dataclass
class BundleInfo:
    path: Path
    name: str
    problem: Optional[str] = None   # None: looks usable; the worker validates fully on load

    @property
    def label(self) -> str:
        return self.name if self.problem is None else f"{self.name} (unusable)"


def selection_problem(text: str) -> Optional[str]:
    """A plain-language problem with a selection setting ('' = the model's), or None."""
    from ..engine import InputError, Selection

    if not str(text or "").strip():
        return None
    try:
        Selection.parse(text, "Selection")
    except InputError as exc:
        return str(exc)
    return None


def check_bundle(path) -> Optional[str]:
    """A plain-language problem with the bundle folder, or None. Reads only manifest.json and
    checks that the parts exist; weights are validated by the worker when it loads them."""
    folder = Path(path)
    if not str(path):
        return "No model folder is chosen: pick a model bundle in the dock or the settings."
    if not folder.is_dir():
        return f"The model folder {folder} does not exist: choose another bundle in the settings."
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return (f"{folder} has no manifest.json, so it is not a model bundle: choose a folder made "
                "by `python -m rs_vqa_plugin tiny-model` or `convert`.")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return f"{manifest} cannot be read ({exc}): rebuild or re-copy the bundle."
    missing = [name for name in REQUIRED_FILES if not (folder / name).exists()]
    if missing:
        return f"The bundle {folder} lacks {', '.join(missing)}: rebuild or re-copy it."
    return None


def is_demo_model(path) -> bool:
    """Is the bundle at `path` a demonstration model (trained on synthetic scenes only)?"""
    if not str(path or ""):
        return False
    try:
        data = json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    provenance = data.get("provenance") if isinstance(data, dict) else None
    return isinstance(provenance, dict) and provenance.get("source") in DEMO_SOURCES


def _candidates(folder: Path) -> Iterable[Path]:
    if (folder / "manifest.json").exists():
        yield folder
    elif folder.is_dir():
        for child in sorted(folder.iterdir()):
            if (child / "manifest.json").exists():
                yield child


def find_bundles(extra_folders: Iterable[str] = (), chosen: str = "") -> List[BundleInfo]:
    seen, found = set(), []
    folders = [models_dir()] + [Path(f) for f in extra_folders if f]
    paths = [p for folder in folders for p in _candidates(folder)]
    if chosen:
        paths.insert(0, Path(chosen))
    for path in paths:
        key = str(path.resolve()) if path.exists() else str(path)
        if key in seen:
            continue
        seen.add(key)
        found.append(BundleInfo(path=path, name=path.name or str(path), problem=check_bundle(path)))
    return found
