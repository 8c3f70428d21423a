"""Parameter pieces shared by the RS-VQA algorithms: model folder, mode, raster inputs, cheap checks."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from qgis.core import (QgsProcessingException, QgsProcessingParameterEnum,
                       QgsProcessingParameterFile, QgsProcessingParameterNumber,
                       QgsProcessingParameterString, QgsProcessingUtils,
                       QgsRasterLayer, QgsVectorLayer)

from ..paths import default_model_dir

GROUP_ID = "questions"
GROUP_NAME = "Questions about rasters"
MODES = ("dip", "prune-only", "grid", "thumbnail", "full")
MODE_HELP = ("dip: coarse-to-fine pyramid with token pruning (the method); prune-only: one fixed "
             "level, pruned; grid: one fixed level, all tiles; thumbnail: the overview image only; "
             "full: every finest tile (slow, for comparisons)")
DEVICES = ("auto", "cpu", "cuda")


def model_parameter(name: str = "MODEL"):
    # Optional with no default value: QGIS 3.22 refuses a missing non-optional file parameter
    # even when it has a default, and the default model is looked up at run time (see below).
    return QgsProcessingParameterFile(
        name, "Model folder (a bundle with manifest.json; empty: the model chosen in RS-VQA's "
              "settings, else the bundled default model)",
        behavior=QgsProcessingParameterFile.Folder, optional=True)


def default_model_folder() -> str:
    """The model used when MODEL is left empty: the one chosen in RS-VQA's settings (the chat
    dock's model), else the model bundled with the plugin."""
    from ..settings import load_settings

    return load_settings().model_dir or str(default_model_dir())


def model_folder(algorithm, parameters, context, name: str = "MODEL") -> str:
    return algorithm.parameterAsFile(parameters, name, context) or default_model_folder()


def mode_parameter(name: str = "MODE"):
    # Static strings: MODE=dip on the command line and in saved models, not an index that shifts.
    return QgsProcessingParameterEnum(name, "Mode", options=list(MODES), defaultValue=MODES[0],
                                      usesStaticStrings=True)


def advanced(parameter):
    parameter.setFlags(parameter.flags() | parameter.FlagAdvanced)
    return parameter


def alpha_parameter():
    return advanced(QgsProcessingParameterNumber(
        "ALPHA", "Share of tokens kept per level (alpha; empty: the model's default)",
        type=QgsProcessingParameterNumber.Double, minValue=0.0, maxValue=1.0, optional=True))


def n_max_parameter():
    return advanced(QgsProcessingParameterNumber(
        "N_MAX", "Largest number of vision tokens given to the LLM (N_max; empty: the model's default)",
        type=QgsProcessingParameterNumber.Integer, minValue=1, optional=True))


def selection_parameter():
    return advanced(QgsProcessingParameterString(
        "SELECTION", "How dip zooms: paper, focus[:tile_budget=32,max_jump=2,min_tokens=4] or "
        "mass[:mass_share=0.6,tile_budget=12,max_jump=2] "
        "(empty: the model's default)", optional=True))


def selection_value(algorithm, parameters, context) -> Optional[str]:
    """The SELECTION parameter checked up front (a clear message, not a failure mid-batch)."""
    from qgis.core import QgsProcessingException

    from ..engine import InputError, Selection

    text = (algorithm.parameterAsString(parameters, "SELECTION", context) or "").strip()
    if not text:
        return None
    try:
        Selection.parse(text, "SELECTION")
    except InputError as exc:
        raise QgsProcessingException(str(exc)) from None
    return text


def max_tokens_parameter():
    return advanced(QgsProcessingParameterNumber(
        "MAX_TOKENS", "Longest answer, in tokens", type=QgsProcessingParameterNumber.Integer,
        minValue=1, maxValue=4096, defaultValue=32))


def device_parameter():
    return advanced(QgsProcessingParameterEnum("DEVICE", "Device", options=list(DEVICES),
                                               defaultValue=DEVICES[0], usesStaticStrings=True))


def tile_cache_parameter():
    from ..engine import DEFAULT_TILE_CACHE_MB

    return advanced(QgsProcessingParameterNumber(
        "TILE_CACHE_MB", "Tile encodings kept between questions and runs, in MB (0: off)",
        type=QgsProcessingParameterNumber.Double, minValue=0.0, defaultValue=DEFAULT_TILE_CACHE_MB))


def memory_limit_parameter():
    return advanced(QgsProcessingParameterNumber(
        "MEMORY_LIMIT_MB", "Memory limit, in MB (0: 80% of the memory available); a question "
        "estimated above it is refused before it starts",
        type=QgsProcessingParameterNumber.Double, minValue=0.0, defaultValue=0.0))


def memory_limit_value(algorithm, parameters, context) -> Optional[float]:
    """MEMORY_LIMIT_MB as the engine's memory_limit_mb: None (its default) for 0 or empty."""
    return optional_number(algorithm, parameters, "MEMORY_LIMIT_MB", context) or None


def overview_options() -> dict:
    """Where missing overviews go, as the chat dock puts them: RS-VQA's settings (Overviews:
    beside the raster or in the cache folder, and that folder)."""
    from ..settings import load_settings

    options = load_settings().ask_options()
    return {name: options[name] for name in ("overviews_in_cache", "overview_cache_dir")
            if name in options}


def optional_number(algorithm, parameters, name, context, integer=False):
    """None when the optional parameter was left empty (then the model's manifest decides)."""
    if parameters.get(name) in (None, ""):
        return None
    if integer:
        return algorithm.parameterAsInt(parameters, name, context)
    return algorithm.parameterAsDouble(parameters, name, context)


def check_model_folder(path_text: str) -> Optional[str]:
    """A message for a model folder that cannot be used, or None. Cheap: reads the manifest only."""
    if not path_text:
        return "MODEL is empty: give the folder of a model bundle (e.g. models/default)."
    path = Path(path_text)
    if not path.is_dir():
        return (f"The model folder {path} does not exist. Give the folder of a model bundle "
                "(it holds manifest.json, vision.onnx, rfm.onnx and llm/); `python -m rs_vqa_plugin "
                "tiny-model` or `convert` makes one.")
    if not (path / "manifest.json").is_file():
        return (f"{path} is not a model bundle: it has no manifest.json. Give the folder made by "
                "`python -m rs_vqa_plugin convert` or `tiny-model`.")
    from ..engine import load_bundle  # reads JSON, ONNX graphs without weights; no torch
    from ..engine import RsVqaError, RuntimeSetupError

    try:
        load_bundle(path)
    except RuntimeSetupError:
        return None  # no onnx here: the runtime check names what to install, the bundle is unchecked
    except RsVqaError as exc:
        return str(exc)
    return None


def non_raster_message(name: str, value, context) -> Optional[str]:
    """A clear message when a raster parameter was given a vector layer (or nothing usable)."""
    layer = value if isinstance(value, (QgsVectorLayer, QgsRasterLayer)) else None
    if layer is None and isinstance(value, str) and value:
        layer = QgsProcessingUtils.mapLayerFromString(value, context)
    if isinstance(layer, QgsVectorLayer):
        return (f"{name} '{layer.name()}' is a vector layer; choose a raster layer "
                "(GeoTIFF, COG, VRT, ...).")
    return None


def raster_path(layer: QgsRasterLayer, name: str = "INPUT") -> str:
    """The GDAL dataset name behind a raster layer (the engine reads it with GDAL itself), checked
    as the dock checks it: local files and GDAL virtual paths alike."""
    from ..ask_inputs import raster_source_problem

    if layer is None:
        raise QgsProcessingException(f"{name}: no raster layer was given or it could not be opened.")
    problem = raster_source_problem(layer)
    if problem:
        raise QgsProcessingException(f"{name}: {problem}")
    return layer.source()
