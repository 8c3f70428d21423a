"""rs_vqa:ask — a batch of questions about one raster: an answers table, a heatmap layer, a count."""

from __future__ import annotations

from qgis.core import (QgsCoordinateReferenceSystem, QgsField, QgsFields, QgsProcessing,
                       QgsProcessingAlgorithm, QgsProcessingLayerPostProcessorInterface,
                       QgsProcessingException, QgsProcessingOutputNumber,
                       QgsProcessingParameterExtent, QgsProcessingParameterFeatureSink,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString, QgsWkbTypes)
from qgis.PyQt.QtCore import QVariant

from ..engine import tiles_used
from ..heat_layer import (heat_crs, heat_fields, heat_rows, raster_file_name,
                          show_in_raster_group, style_heat_layer)
from .answer_sink import AnswerSink
from .common import (GROUP_ID, GROUP_NAME, MODE_HELP, alpha_parameter,
                     device_parameter, max_tokens_parameter, memory_limit_parameter,
                     memory_limit_value, mode_parameter, model_folder, model_parameter,
                     n_max_parameter, non_raster_message, optional_number, overview_options,
                     raster_path, selection_parameter, selection_value, tile_cache_parameter)
from .feedback_bridge import FeedbackBridge
from .runtime import model_and_runtime_problem, require_ml_runtime
from .scope import scope_from_parameters


def answer_fields() -> QgsFields:
    fields = QgsFields()
    for name, kind in (("question_id", QVariant.String), ("question", QVariant.String),
                       ("answer", QVariant.String), ("seconds", QVariant.Double),
                       ("tiles_read", QVariant.Int), ("llm_vision_tokens", QVariant.Int),
                       ("levels", QVariant.String), ("mode", QVariant.String),
                       ("stop_reason", QVariant.String)):
        fields.append(QgsField(name, kind))
    return fields


# Processing's heatmap holds every question of the run: each cell also says which one.
QUESTION_INDEX = (("question_index", "integer"),)


def _answer_values(question, answer) -> list:
    """One row of the answers table, in answer_fields() order."""
    trace = answer.trace or {}
    return [
        question.question_id, question.text, answer.text,
        float((trace.get("seconds") or {}).get("total", 0.0)),
        tiles_used(trace), int(trace.get("llm_vision_tokens", 0)),
        ",".join(str(level) for level in trace.get("levels", [])), answer.mode,
        str(trace.get("stop_reason", "")),
    ]


class HeatStyle(QgsProcessingLayerPostProcessorInterface):
    """The heatmap loaded at the end of a run gets the dock's style (classes labelled by share of
    the model's attention) and place (the raster's "RS-VQA: <name>" group, shown alone there)."""

    def __init__(self, raster_id: str, raster_source: str):
        super().__init__()
        self.raster_id, self.raster_source = raster_id, raster_source

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API name)
        from qgis.core import QgsProject

        style_heat_layer(layer)
        project = context.project() or QgsProject.instance()
        # A raster given as a file (not a project layer) gets a group named after the file.
        show_in_raster_group(project, self._raster_in(project), layer,
                             raster_file_name(self.raster_source))
        layer.triggerRepaint()

    def _raster_in(self, project):
        raster = project.mapLayer(self.raster_id)
        if raster is not None:
            return raster
        return next((candidate for candidate in project.mapLayers().values()
                     if candidate.type() == candidate.RasterLayer
                     and candidate.source() == self.raster_source), None)


# QGIS keeps only a pointer to a post-processor, used after the run's copy of the algorithm is
# gone: the last few runs' are kept alive here (a run is loaded long before 16 more end).
_HEAT_STYLES = []


def heat_style(raster_layer) -> HeatStyle:
    style = HeatStyle(raster_layer.id(), raster_layer.source())
    _HEAT_STYLES.append(style)
    del _HEAT_STYLES[:-16]
    return style


class AskAlgorithm(QgsProcessingAlgorithm):
    def name(self):
        return "ask"

    def displayName(self):  # noqa: N802 (QGIS API name)
        return "Ask questions about a raster"

    def group(self):
        return GROUP_NAME

    def groupId(self):  # noqa: N802 (QGIS API name)
        return GROUP_ID

    def tags(self):
        return ["vqa", "question", "vision language model", "llm", "remote sensing", "heatmap", "batch"]

    def shortHelpString(self):  # noqa: N802 (QGIS API name)
        return (
            "Answers questions about a (large) raster with a vision-language model that reads it "
            "coarse to fine through GDAL overviews and keeps only the image tokens that matter "
            "for the question.\n\n"
            "QUESTIONS: one question per line, or the path of a .csv (a 'question' or 'text' "
            "column, else the first column), .jsonl (LRS-VQA: 'text' and 'question_id') or .txt "
            "file. SCOPE: optional extent or polygon layer to ask inside.\n"
            f"MODE: {MODE_HELP}.\n"
            "A raster without overviews gets them on its first question, where RS-VQA's settings "
            "say (Overviews: beside the raster, or in the overview cache folder), as in the chat "
            "dock.\n\n"
            "Outputs: a table with one row per question (answer, seconds, tiles read, LLM vision "
            "tokens, pyramid levels visited), a heatmap polygon layer in the raster's CRS with the "
            "cells the model looked at for every question (field 'question'), and the number of "
            "questions answered. The model is loaded once and kept for the next run, so a batch "
            "loads it once. GeoPackage, CSV and Shapefile outputs are written answer by answer: "
            "a cancelled or killed run keeps what it answered (a cancelled run ends as failed). "
            "No output may be the raster or the question file.\n\n"
            "In the QGIS desktop the model runs in the runtime's worker process, as in the chat "
            "dock (the Runtime Python of RS-VQA's settings, which its \"Set up runtime\" button "
            "makes, or RS_VQA_RUNTIME_PYTHON). Headless (qgis_process, a script) it runs in that "
            "Python when it has torch, transformers and onnxruntime, else in the worker too."
        )

    def createInstance(self):  # noqa: N802 (QGIS API name)
        return AskAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster layer"))
        self.addParameter(QgsProcessingParameterString(
            "QUESTIONS", "Questions (one per line) or a .csv / .jsonl / .txt file", multiLine=True))
        self.addParameter(QgsProcessingParameterExtent(
            "SCOPE", "Scope: extent or polygon layer (empty: the whole raster)", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "SCOPE_POLYGONS", "Scope polygons (optional)", [QgsProcessing.TypeVectorPolygon],
            optional=True))
        self.addParameter(model_parameter())
        self.addParameter(mode_parameter())
        self.addParameter(alpha_parameter())
        self.addParameter(n_max_parameter())
        self.addParameter(selection_parameter())
        self.addParameter(max_tokens_parameter())
        self.addParameter(device_parameter())
        self.addParameter(tile_cache_parameter())
        self.addParameter(memory_limit_parameter())
        self.addParameter(QgsProcessingParameterFeatureSink(
            "OUTPUT", "Answers", QgsProcessing.TypeVector))
        self.addParameter(QgsProcessingParameterFeatureSink(
            "HEATMAP", "Heatmap", QgsProcessing.TypeVectorPolygon, optional=True, createByDefault=True))
        self.addOutput(QgsProcessingOutputNumber("ANSWERED", "Questions answered"))

    # -- checks before any heavy work ---------------------------------------------------------
    def _questions(self, parameters, context):
        from ..engine import InputError, parse_questions

        try:
            return parse_questions(self.parameterAsString(parameters, "QUESTIONS", context))
        except InputError as exc:
            raise QgsProcessingException(str(exc)) from exc

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS API name)
        # Our own checks first: their messages say what to do, the generic ones only name the key.
        message = non_raster_message("INPUT", parameters.get("INPUT"), context)
        if message:
            return False, message
        try:
            if not self._questions(parameters, context):
                return False, ("No questions: type at least one question in QUESTIONS (one per line) "
                               "or give the path of a .csv / .jsonl / .txt file of questions.")
        except QgsProcessingException as exc:
            return False, str(exc)
        message = self._destination_problem(parameters, context)
        if message:
            return False, message
        message = model_and_runtime_problem(model_folder(self, parameters, context))
        if message:
            return False, message
        return super().checkParameterValues(parameters, context)

    def _destination_problem(self, parameters, context):
        from ..engine import looks_like_question_file, raster_files
        from .output_checks import destination_problem

        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        inputs = [("the input raster", f) for f in (raster_files(layer.source()) if layer else [])]
        questions = self.parameterAsString(parameters, "QUESTIONS", context)
        if looks_like_question_file(questions or ""):
            inputs.append(("the question file", questions.strip()))
        outputs = [(name, self.parameterAsOutputLayer(parameters, name, context))
                   for name in ("OUTPUT", "HEATMAP")]
        return destination_problem(outputs, inputs)

    # -- the run --------------------------------------------------------------------------------
    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API name)
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        path = raster_path(layer)
        questions = self._questions(parameters, context)
        if not questions:
            raise QgsProcessingException("No questions to answer.")
        model_dir = model_folder(self, parameters, context)
        scope = scope_from_parameters(self, parameters, context, layer)
        options_kwargs = dict(
            mode=self.parameterAsEnumString(parameters, "MODE", context),
            alpha=optional_number(self, parameters, "ALPHA", context),
            n_max=optional_number(self, parameters, "N_MAX", context, integer=True),
            selection=selection_value(self, parameters, context),
            scope=scope,
            max_new_tokens=self.parameterAsInt(parameters, "MAX_TOKENS", context),
            memory_limit_mb=memory_limit_value(self, parameters, context),
            **overview_options(),
        )
        device = self.parameterAsEnumString(parameters, "DEVICE", context)
        tile_cache_mb = self.parameterAsDouble(parameters, "TILE_CACHE_MB", context)
        require_ml_runtime()  # before any output file is created
        message = self._destination_problem(parameters, context)
        if message:
            raise QgsProcessingException(message)

        table, sink_id = AnswerSink.create(self, parameters, "OUTPUT", context, answer_fields(),
                                           QgsWkbTypes.NoGeometry, QgsCoordinateReferenceSystem())
        if table is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, "OUTPUT"))
        heat, heat_id = AnswerSink.create(self, parameters, "HEATMAP", context,
                                          heat_fields(QUESTION_INDEX), QgsWkbTypes.Polygon,
                                          heat_crs(layer))
        for name, sink in (("OUTPUT", table), ("HEATMAP", heat)):
            if sink is not None and sink.written_at_end:
                feedback.pushInfo(f"{name} ({sink.written_at_end}) is written when the run ends; "
                                  "a .gpkg, .csv or .shp output keeps every answer as it arrives.")
        from ..engine import AskOptions, Cancelled, RsVqaError
        from .engine_cache import shared_engine

        bridge = FeedbackBridge(feedback, total_units=len(questions))
        answered, cancelled = 0, False
        try:
            with shared_engine(model_dir, device, on_load=lambda: feedback.pushInfo(
                    f"Loading the model from {model_dir} ({device})…"),
                    tile_cache_mb=tile_cache_mb) as engine:
                options = AskOptions(**options_kwargs)
                for index, question in enumerate(questions):
                    if bridge.cancelled:
                        cancelled = True
                        break
                    bridge.start_unit(index)
                    feedback.pushInfo(f"[{index + 1}/{len(questions)}] {question.text}")
                    answer = engine.ask(path, question.text, options, events=bridge,
                                        cancel=bridge.token)
                    # Each answer is on disk before the next question starts.
                    table.add([(_answer_values(question, answer), None)])
                    if heat is not None:
                        heat.add(heat_rows(question.text, answer.heat_cells, leading=[index]))
                    answered += 1
                    feedback.pushInfo(f"    -> {answer.text}")
                    bridge.finish_unit(index)
        except Cancelled:
            cancelled = True
        except RsVqaError as exc:
            raise QgsProcessingException(str(exc)) from exc
        finally:
            bridge.close()
            for sink in (table, heat):
                if sink is not None:
                    sink.close()
        if cancelled:
            outputs = [(name, sink, dest) for name, sink, dest in (("OUTPUT", table, sink_id),
                                                                   ("HEATMAP", heat, heat_id))
                       if sink is not None]
            kept = [f"{name} {sink.file}" for name, sink, _dest in outputs if sink.file]
            lost = [name for name, sink, _dest in outputs if not sink.file]
            raise QgsProcessingException(
                f"Cancelled after {answered} of {len(questions)} questions"
                + (f"; the answers so far are kept in {' and '.join(kept)}" if kept else "")
                + (f"; {' and '.join(lost)}: temporary layers are dropped when a run fails (write "
                   "to .gpkg or .csv files to keep the answers of a cancelled run)"
                   if lost and answered else "") + ".")
        results = {"OUTPUT": sink_id, "ANSWERED": answered}
        if heat is not None:
            results["HEATMAP"] = heat_id
            if context.willLoadLayerOnCompletion(heat_id):
                context.layerToLoadOnCompletionDetails(heat_id).setPostProcessor(heat_style(layer))
        return results
