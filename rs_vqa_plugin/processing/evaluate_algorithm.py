"""rs_vqa:evaluate — answers an LRS-VQA question file and scores them (per-category accuracy, OA, AA)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsCoordinateReferenceSystem, QgsField, QgsFields, QgsProcessing,
                       QgsProcessingAlgorithm, QgsProcessingException,
                       QgsProcessingOutputNumber, QgsProcessingParameterFeatureSink,
                       QgsProcessingParameterFile, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterNumber, QgsWkbTypes)
from qgis.PyQt.QtCore import QVariant

from .answer_sink import AnswerSink
from .common import (MODE_HELP, advanced, alpha_parameter,
                     device_parameter, max_tokens_parameter, memory_limit_parameter,
                     memory_limit_value, mode_parameter, model_folder, model_parameter,
                     n_max_parameter, optional_number, overview_options, selection_parameter,
                     selection_value, tile_cache_parameter)
from .feedback_bridge import FeedbackBridge
from .runtime import model_and_runtime_problem, require_ml_runtime


def score_fields() -> QgsFields:
    fields = QgsFields()
    for name, kind in (("subset", QVariant.String), ("category", QVariant.String),
                       ("correct", QVariant.Int), ("total", QVariant.Int),
                       ("accuracy", QVariant.Double)):
        fields.append(QgsField(name, kind))
    return fields


def read_questions(path: Path, images: Path, limit=None):
    """LRS-VQA records, checked cheaply (keys, unique ids, images inside IMAGES and present)
    before any model loads."""
    from ..engine import InputError, load_questions, question_image

    records = load_questions(path, images)
    if limit:
        records = records[:limit]
    absent = sorted({r["image"] for r in records
                     if not question_image(images, r["image"]).is_file()})
    if absent:
        raise InputError(f"{len(absent)} image(s) named in {path.name} are not in {images}, e.g. "
                         f"{absent[0]}: give the folder that holds the benchmark's images.")
    return records


def check_destinations(questions: Path, images: Path, records, answers: Path, output) -> None:
    """InputError when ANSWERS or OUTPUT would write into an input or into each other, or ANSWERS
    is an existing file that holds no answers."""
    from ..engine import InputError, check_answers_path
    from .output_checks import destination_problem

    check_answers_path(answers, questions, images, records)
    inputs = [("the question file", questions), ("the answers file", answers)]
    inputs += [("an image of the questions", images / r["image"]) for r in records]
    message = destination_problem([("OUTPUT", output)], inputs)
    if message:
        raise InputError(message)


def score_rows(scores: dict):
    """(subset, category, correct, total, accuracy) rows: categories, then OA and AA per subset."""
    blocks = list(scores["subsets"].items()) + [("all", scores["overall"])]
    for subset, summary in blocks:
        if not summary["answered"]:
            continue
        for category, c in summary["categories"].items():
            yield subset, category, c["correct"], c["total"], c["accuracy"]
        yield subset, "OA", summary["correct"], summary["answered"], summary["OA"]
        yield subset, "AA", None, len(summary["categories"]), summary["AA"]


class EvaluateAlgorithm(QgsProcessingAlgorithm):
    def name(self):
        return "evaluate"

    def displayName(self):  # noqa: N802 (QGIS API name)
        return "Evaluate on an LRS-VQA question file"

    def group(self):
        return "Evaluation"

    def groupId(self):  # noqa: N802 (QGIS API name)
        return "evaluation"

    def tags(self):
        return ["benchmark", "lrs-vqa", "accuracy", "evaluation"]

    def shortHelpString(self):  # noqa: N802 (QGIS API name)
        return (
            "Answers every question of an LRS-VQA question file (jsonl: question_id, image, text, "
            "category, ground_truth) about the images in IMAGES, writes the answers (jsonl) and "
            "scores them: an answer is correct when it equals the ground truth (lower case) or "
            "WordNet finds the two words similar (path similarity > 0.8).\n\n"
            "The table has one row per subset (question_id prefix: FAIR, GLH-Bridge, STAR, ...) and "
            "category with its accuracy, plus OA (all questions) and AA (mean of the categories, "
            "the paper's headline figure) per subset and over all ('all').\n"
            f"MODE: {MODE_HELP}.\n\n"
            "Resumable: answers already in the answers file are kept and not asked again, so a "
            "cancelled or crashed run continues where it stopped when run again with the same "
            "answers file (a cancelled run ends as failed). An existing ANSWERS file that holds no "
            "answers, or is the question file, is refused; images must lie inside IMAGES. The "
            "model is loaded once and kept for the next run."
        )

    def createInstance(self):  # noqa: N802 (QGIS API name)
        return EvaluateAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterFile("QUESTIONS", "LRS-VQA question file (.jsonl)",
                                                     extension="jsonl"))
        self.addParameter(QgsProcessingParameterFile("IMAGES", "Image folder",
                                                     behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(model_parameter())
        self.addParameter(mode_parameter())
        self.addParameter(alpha_parameter())
        self.addParameter(n_max_parameter())
        self.addParameter(selection_parameter())
        self.addParameter(max_tokens_parameter())
        self.addParameter(device_parameter())
        self.addParameter(tile_cache_parameter())
        self.addParameter(memory_limit_parameter())
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "LIMIT", "Only the first N questions (empty: all)", type=QgsProcessingParameterNumber.Integer,
            minValue=1, optional=True)))
        self.addParameter(QgsProcessingParameterFileDestination(
            "ANSWERS", "Answers (jsonl; an existing file is resumed)", fileFilter="JSON lines (*.jsonl)"))
        self.addParameter(QgsProcessingParameterFeatureSink(
            "OUTPUT", "Accuracy per category", QgsProcessing.TypeVector))
        self.addOutput(QgsProcessingOutputNumber("ANSWERED", "Questions answered (including resumed)"))
        self.addOutput(QgsProcessingOutputNumber("OA", "Overall accuracy (all subsets)"))
        self.addOutput(QgsProcessingOutputNumber("AA", "Average accuracy over categories (all subsets)"))

    def _inputs(self, parameters, context):
        questions = Path(self.parameterAsFile(parameters, "QUESTIONS", context))
        images = Path(self.parameterAsFile(parameters, "IMAGES", context))
        limit = optional_number(self, parameters, "LIMIT", context, integer=True)
        return questions, images, limit

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS API name)
        from ..engine import RsVqaError

        questions, images, limit = self._inputs(parameters, context)
        if not images.is_dir():
            return False, f"The image folder {images} does not exist."
        try:
            records = read_questions(questions, images, limit)
            check_destinations(questions, images, records,
                               Path(self.parameterAsFileOutput(parameters, "ANSWERS", context)),
                               self.parameterAsOutputLayer(parameters, "OUTPUT", context))
        except RsVqaError as exc:
            return False, str(exc)
        message = model_and_runtime_problem(model_folder(self, parameters, context))
        if message:
            return False, message
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API name)
        from ..engine import RsVqaError, read_answers

        questions_path, images, limit = self._inputs(parameters, context)
        answers_path = Path(self.parameterAsFileOutput(parameters, "ANSWERS", context))
        model_dir = model_folder(self, parameters, context)
        mode = self.parameterAsEnumString(parameters, "MODE", context)
        device = self.parameterAsEnumString(parameters, "DEVICE", context)
        alpha = optional_number(self, parameters, "ALPHA", context)
        n_max = optional_number(self, parameters, "N_MAX", context, integer=True)
        selection = selection_value(self, parameters, context)
        max_tokens = self.parameterAsInt(parameters, "MAX_TOKENS", context)
        try:
            records = read_questions(questions_path, images, limit)
            check_destinations(questions_path, images, records, answers_path,
                               self.parameterAsOutputLayer(parameters, "OUTPUT", context))
            wanted = {str(r["question_id"]) for r in records}
            already = len(wanted & set(read_answers(answers_path)))
        except RsVqaError as exc:
            raise QgsProcessingException(str(exc)) from exc
        sink, sink_id = AnswerSink.create(self, parameters, "OUTPUT", context, score_fields(),
                                          QgsWkbTypes.NoGeometry, QgsCoordinateReferenceSystem())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, "OUTPUT"))
        todo = len(records) - already
        feedback.pushInfo(f"{len(records)} questions, {already} already answered in "
                          f"{answers_path.name}, {todo} to ask.")
        if todo:
            options = dict(mode=mode, alpha=alpha, n_max=n_max, max_new_tokens=max_tokens,
                           selection=selection,
                           memory_limit_mb=memory_limit_value(self, parameters, context),
                           **overview_options())
            tile_cache_mb = self.parameterAsDouble(parameters, "TILE_CACHE_MB", context)
            self._answer_all(records, todo, images, answers_path, model_dir, device, options,
                             feedback, tile_cache_mb)
        return self._score(records, read_answers(answers_path), sink, sink_id, answers_path, feedback)

    def _answer_all(self, records, todo, images, answers_path, model_dir, device, options,
                    feedback, tile_cache_mb=None):
        require_ml_runtime()
        from ..engine import AskOptions, Cancelled, RsVqaError, run_questions
        from .engine_cache import shared_engine

        bridge = FeedbackBridge(feedback, total_units=todo)

        def on_answer(number, total, record):
            feedback.pushInfo(f"[{number}/{total}] {record['question_id']}: {record['text']}")
            bridge.finish_unit(number - 1)

        answered = 0
        try:
            with shared_engine(model_dir, device, on_load=lambda: feedback.pushInfo(
                    f"Loading the model from {model_dir} ({device})…"),
                    tile_cache_mb=tile_cache_mb) as engine:
                # run_questions appends and flushes one answer at a time and skips those already
                # in the file: whatever was answered survives a cancel or a crash.
                answered = run_questions(engine, records, images, answers_path,
                                         AskOptions(**options), on_answer=on_answer, events=bridge,
                                         cancel=bridge.token)
        except Cancelled:
            raise QgsProcessingException(
                f"Cancelled; the answers so far are kept in {answers_path}: run again with the same "
                "answers file to continue.") from None
        except RsVqaError as exc:
            raise QgsProcessingException(str(exc)) from exc
        finally:
            bridge.close()
        return answered

    def _score(self, records, done, sink, sink_id, answers_path, feedback):
        from ..engine import format_scores, score_records

        # Only this run's questions count (the file may hold more, e.g. from a run without LIMIT).
        answered = [done[str(r["question_id"])] for r in records if str(r["question_id"]) in done]
        scores = score_records(records, answered)
        sink.add([(list(row), None) for row in score_rows(scores)])
        sink.close()
        feedback.pushInfo(format_scores(scores))
        overall = scores["overall"]
        return {"OUTPUT": sink_id, "ANSWERS": str(answers_path), "ANSWERED": len(answered),
                "OA": overall["OA"], "AA": overall["AA"]}
