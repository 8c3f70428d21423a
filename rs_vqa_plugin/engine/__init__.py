"""The engine: pyramid, models, selection and answers. Knows nothing of Qt or QGIS.

This module is the engine's public API: the QGIS side (gui/, processing/ and the shared QGIS-side
modules) imports these names from `rs_vqa_plugin.engine` and nothing deeper
(tests/test_layering.py checks it). The CLI, the modeling tools and the tests may reach further.

Each name is imported from its module when it is used (PEP 562), so importing the package costs
nothing: the chat dock can use the errors or the stage names without loading numpy, GDAL, ONNX
Runtime or torch, which load only inside the modules that run them.
"""

from __future__ import annotations

# public name -> (module, its name there)
_API = {
    # errors a person can act on
    "RsVqaError": ("errors", "RsVqaError"),
    "InputError": ("errors", "InputError"),
    "BundleError": ("errors", "BundleError"),
    "RuntimeSetupError": ("errors", "RuntimeSetupError"),
    "Cancelled": ("errors", "Cancelled"),
    # asking
    "Engine": ("pipeline", "Engine"),
    "AskOptions": ("pipeline", "AskOptions"),
    "Answer": ("answer", "Answer"),
    "answer_from_dict": ("answer", "answer_from_dict"),
    "heat_cell_from_dict": ("answer", "heat_cell_from_dict"),
    "Selection": ("selection", "Selection"),
    "CancelToken": ("progress", "CancelToken"),
    "ASK_STAGES": ("progress", "ASK_STAGES"),
    "STAGE_LABELS": ("progress", "STAGE_LABELS"),
    "stage_position": ("progress", "stage_position"),
    "ASK_OPTION_FIELDS": ("worker", "ASK_OPTION_FIELDS"),
    "load_bundle": ("bundle", "load_bundle"),
    "DEFAULT_TILE_CACHE_MB": ("tile_cache", "DEFAULT_MB"),
    "tiles_used": ("tile_cache", "tiles_used"),
    # results
    "HEAT_FIELDS": ("heatmap", "HEAT_FIELDS"),
    "heat_values": ("heatmap", "heat_values"),
    "ogr_polygon": ("heatmap", "ogr_polygon"),
    "write_heatmap_layer": ("heatmap", "write_heatmap_layer"),
    "copy_heatmap_layer": ("heatmap", "copy_heatmap_layer"),
    "delete_heatmap_layer": ("heatmap", "delete_heatmap_layer"),
    # overviews
    "build_overviews": ("overviews", "build_overviews"),
    "default_overview_cache_dir": ("overviews", "default_cache_dir"),
    # the worker's environment
    "OFFLINE_ENVIRONMENT": ("offline", "OFFLINE_ENVIRONMENT"),
    # files
    "raster_files": ("output_paths", "raster_files"),
    "refuse_inputs": ("output_paths", "refuse_inputs"),
    "same_file": ("output_paths", "same_file"),
    "read_utf8_text": ("textfile", "read_utf8_text"),
    "spreadsheet_safe": ("csv_cells", "spreadsheet_safe"),
    "spreadsheet_safe_row": ("csv_cells", "spreadsheet_safe_row"),
    # questions typed, or read from a .txt / .csv / .jsonl file
    "parse_questions": ("question_files", "parse_questions"),
    "looks_like_question_file": ("question_files", "looks_like_question_file"),
    # evaluation
    "load_questions": ("evaluate", "load_questions"),
    "question_image": ("evaluate", "question_image"),
    "check_answers_path": ("evaluate", "check_answers_path"),
    "read_answers": ("evaluate", "read_answers"),
    "run_questions": ("evaluate", "run_questions"),
    "score_records": ("scoring", "score_records"),
    "format_scores": ("scoring", "format_scores"),
}

__all__ = sorted(_API)


def __getattr__(name: str):
    try:
        module, attribute = _API[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    # The import statement's machinery, not importlib: QGIS wraps it to learn a plugin's modules,
    # and unloads (on plugin reload) only the modules it learnt. Nothing is cached here, so a
    # reloaded plugin never gets a name from an unloaded module.
    return getattr(__import__(f"{__name__}.{module}", fromlist=[attribute]), attribute)


def __dir__():
    return sorted(set(globals()) | set(_API))
