"""The plugin's persisted settings (QgsSettings): runtime Python, model, device and engine knobs.

Shared by the chat dock and Processing (which must not import the GUI package)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

from qgis.core import QgsSettings

from .paths import default_model_dir, repo_root

PREFIX = "rs_vqa/"
DEVICES = ("auto", "cpu", "cuda")
OVERVIEW_PLACES = ("beside", "cache")   # missing overviews: <raster>.ovr, or the cache folder


def default_runtime_python() -> str:
    """The runtime a set-up made, when there is one: the venv `./build.sh setup` makes next to the
    sources, else the one "Set up runtime" makes in the QGIS profile (plugin installed from a zip)."""
    for candidate in (repo_root() / ".venv" / "bin" / "python",
                      setup_venv_dir() / "bin" / "python"):
        if candidate.exists():
            return str(candidate)
    return ""


@dataclass
class PluginSettings:
    python: str = ""
    model_dir: str = ""
    model_folders: List[str] = field(default_factory=list)   # extra folders searched for bundles
    device: str = "auto"
    alpha: Optional[float] = None      # None: the bundle's manifest value
    n_max: Optional[int] = None
    selection: str = ""                # "": the bundle's; else 'paper' or 'mass[:k=v,...]'
    max_new_tokens: int = 32
    overviews: str = "beside"          # one of OVERVIEW_PLACES
    overview_cache_dir: str = ""       # "": the engine's ($RS_VQA_CACHE/overviews, ~/.cache/rs-vqa)
    memory_limit_mb: float = 0.0       # 0: the engine's (80% of the memory available when asking)
    tile_cache_mb: Optional[float] = None   # None: the engine's default; 0: off

    def ask_options(self) -> dict:
        options = {"max_new_tokens": int(self.max_new_tokens)}
        if self.memory_limit_mb:
            options["memory_limit_mb"] = float(self.memory_limit_mb)
        if self.overviews == "cache":
            options["overviews_in_cache"] = True
        if self.overview_cache_dir:   # also where they go when the raster's folder is read-only
            options["overview_cache_dir"] = str(self.overview_cache_dir)
        if self.alpha:
            options["alpha"] = float(self.alpha)
        if self.n_max:
            options["n_max"] = int(self.n_max)
        if self.selection:
            options["selection"] = str(self.selection)
        return options

    def request_fields(self) -> dict:
        """Fields of the worker's load/ask request beside its options: the tile cache's bound,
        always sent, so that clearing the setting gives a warm worker the default back."""
        from .engine import DEFAULT_TILE_CACHE_MB

        size = DEFAULT_TILE_CACHE_MB if self.tile_cache_mb is None else self.tile_cache_mb
        return {"tile_cache_mb": float(size)}


def megabytes_setting(text: str, label: str) -> Optional[float]:
    """A megabytes field as typed: None when empty, else a number >= 0. A ValueError names the
    field and what it takes."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{label}: '{text}' is not a number of MB. Type 0 or a positive number "
                         "of megabytes, or leave it empty.")
    return value


def load_settings(store: Optional[QgsSettings] = None) -> PluginSettings:
    store = store or QgsSettings()
    python = store.value(PREFIX + "python", None)
    model = store.value(PREFIX + "model_dir", None)
    folders = store.value(PREFIX + "model_folders", []) or []
    if isinstance(folders, str):
        folders = [folders]
    alpha = float(store.value(PREFIX + "alpha", 0.0) or 0.0)
    n_max = int(store.value(PREFIX + "n_max", 0) or 0)
    default_model = default_model_dir()
    overviews = str(store.value(PREFIX + "overviews", "beside") or "beside")
    return PluginSettings(
        # None (never set) falls back to the repo's venv; "" (cleared by the user) stays unset.
        python=default_runtime_python() if python is None else str(python),
        model_dir=(str(default_model) if (default_model / "manifest.json").exists() else "")
        if model is None else str(model),
        model_folders=[str(f) for f in folders if f],
        device=str(store.value(PREFIX + "device", "auto") or "auto"),
        alpha=alpha or None, n_max=n_max or None,
        selection=str(store.value(PREFIX + "selection", "") or ""),
        max_new_tokens=int(store.value(PREFIX + "max_new_tokens", 32) or 32),
        overviews=overviews if overviews in OVERVIEW_PLACES else "beside",
        overview_cache_dir=str(store.value(PREFIX + "overview_cache_dir", "") or ""),
        memory_limit_mb=_stored_megabytes(store, "memory_limit_mb") or 0.0,
        tile_cache_mb=_stored_megabytes(store, "tile_cache_mb"))


def _stored_megabytes(store: QgsSettings, key: str) -> Optional[float]:
    # A hand-edited or damaged value counts as unset: the engine's default then applies.
    try:
        value = store.value(PREFIX + key, "")
        return megabytes_setting("" if value is None else str(value), key)
    except ValueError:
        return None


def save_settings(settings: PluginSettings, store: Optional[QgsSettings] = None) -> None:
    store = store or QgsSettings()
    values = asdict(settings)
    values["alpha"] = values["alpha"] or 0.0
    values["n_max"] = values["n_max"] or 0
    values["tile_cache_mb"] = "" if values["tile_cache_mb"] is None else values["tile_cache_mb"]
    for key, value in values.items():
        store.setValue(PREFIX + key, value)


def plugin_data_dir() -> Path:
    """Where files of unsaved projects go (heatmaps); inside the QGIS profile, not the plugin folder
    (QGIS deletes the plugin folder on upgrade)."""
    from qgis.core import QgsApplication

    folder = Path(QgsApplication.qgisSettingsDirPath()) / "rs_vqa"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def setup_venv_dir() -> Path:
    """Where "Set up runtime" puts a venv outside a source checkout: the QGIS profile (QGIS deletes
    the plugin folder on upgrade, so never inside it)."""
    return plugin_data_dir() / "runtime-venv"
