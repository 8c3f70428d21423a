"""rs_vqa:evaluate — answers an LRS-VQA question file and scores them (per-category accuracy, OA, AA)."""

from __future__ import annotations

import json
from pathlib import Path

from qgis.core import (QgsCoordinateReferenceSystem, QgsFeature, QgsFeatureSink, QgsField, QgsFields,
                       QgsProcessing, QgsProcessingAlgorithm, QgsProcessingException,
                       QgsProcessingOutputNumber, QgsProcessingParameterFeatureSink,
                       QgsProcessingParameterFile, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterNumber, QgsWkbTypes)
from qgis.PyQt.QtCore import QVariant

from .common import (MODE_HELP, advanced, alpha_parameter, check_model_folder,
                     device_parameter, max_tokens_parameter, mode_parameter, model_parameter,
                     n_max_parameter, optional_number)
from .feedback_bridge import FeedbackBridge
from .runtime import missing_ml_packages, require_ml_runtime, runtime_help

REQUIRED_KEYS = ("question_id", "image", "text")


def score_fields() -> QgsFields:
    fields = QgsFields()
    for name, kind in (("subset", QVariant.String), ("category", QVariant.String),
                       ("correct", QVariant.Int), ("total", QVariant.Int),
                       ("accuracy", QVariant.Double)):
        fields.append(QgsField(name, kind))
    return fields


def read_questions(path: Path, images: Path, limit=None):
    """LRS-VQA records, checked cheaply (keys, images present) before any model is loaded."""
    from ..engine.errors import InputError
    from ..engine.scoring import read_jsonl

    records = read_jsonl(path)
    if limit:
        records = records[:limit]
    if not records:
        raise InputError(f"{path} holds no questions.")
    for number, record in enumerate(records, start=1):
        missing = [key for key in REQUIRED_KEYS if key not in record]
        if missing:
            raise InputError(f"{path}, question {number}: no {', '.join(missing)}. LRS-VQA lines hold "
                             "question_id, image, text, category and ground_truth.")
    absent = sorted({r["image"] for r in records if not (images / r["image"]).is_file()})
    if absent:
        raise InputError(f"{len(absent)} image(s) named in {path.name} are not in {images}, e.g. "
                         f"{absent[0]}: give the folder that holds the benchmark's images.")
    return records


def read_done(answers_path: Path) -> dict:
    """Answers already in the answers file, by question_id: a rerun resumes after them."""
    done = {}
    if answers_path.is_file():
        for line in answers_path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash; that question is asked again
            if isinstance(record, dict) and "question_id" in record:
                done[str(record["question_id"])] = record
    return done


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
            "answers file. The model is loaded once per run."
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
        self.addParameter(max_tokens_parameter())
        self.addParameter(device_parameter())
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
        from ..engine.errors import RsVqaError

        questions, images, limit = self._inputs(parameters, context)
        if not images.is_dir():
            return False, f"The image folder {images} does not exist."
        try:
            read_questions(questions, images, limit)
        except RsVqaError as exc:
            return False, str(exc)
        message = check_model_folder(self.parameterAsFile(parameters, "MODEL", context))
        if message:
            return False, message
        missing = missing_ml_packages()
        if missing:
            return False, runtime_help(missing)
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API name)
        from ..engine.errors import RsVqaError

        questions_path, images, limit = self._inputs(parameters, context)
        answers_path = Path(self.parameterAsFileOutput(parameters, "ANSWERS", context))
        model_dir = self.parameterAsFile(parameters, "MODEL", context)
        mode = self.parameterAsEnumString(parameters, "MODE", context)
        device = self.parameterAsEnumString(parameters, "DEVICE", context)
        alpha = optional_number(self, parameters, "ALPHA", context)
        n_max = optional_number(self, parameters, "N_MAX", context, integer=True)
        max_tokens = self.parameterAsInt(parameters, "MAX_TOKENS", context)
        sink, sink_id = self.parameterAsSink(parameters, "OUTPUT", context, score_fields(),
                                             QgsWkbTypes.NoGeometry, QgsCoordinateReferenceSystem())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, "OUTPUT"))
        try:
            records = read_questions(questions_path, images, limit)
        except RsVqaError as exc:
            raise QgsProcessingException(str(exc)) from exc
        done = read_done(answers_path)
        todo = [r for r in records if str(r["question_id"]) not in done]
        feedback.pushInfo(f"{len(records)} questions, {len(records) - len(todo)} already answered in "
                          f"{answers_path.name}, {len(todo)} to ask.")
        if todo:
            options = dict(mode=mode, alpha=alpha, n_max=n_max, max_new_tokens=max_tokens)
            self._answer_all(todo, images, answers_path, model_dir, device, options, done, feedback)
        return self._score(records, done, sink, sink_id, answers_path, feedback)

    def _answer_all(self, todo, images, answers_path, model_dir, device, options, done, feedback):
        require_ml_runtime()
        from ..engine.errors import Cancelled, RsVqaError
        from ..engine.pipeline import AskOptions, Engine

        bridge = FeedbackBridge(feedback, total_units=len(todo))
        answers_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            feedback.pushInfo(f"Loading the model from {model_dir} ({device})…")
            engine = Engine(model_dir, device=device)
            mode = options["mode"]
            options = AskOptions(**options)
            # Appended and flushed one answer at a time: whatever was answered survives a cancel.
            with answers_path.open("a", encoding="utf-8") as out:
                for index, record in enumerate(todo):
                    if bridge.cancelled:
                        raise Cancelled()
                    bridge.start_unit(index)
                    answer = engine.ask(images / record["image"], record["text"], options,
                                        events=bridge, cancel=bridge.token)
                    result = {"question_id": record["question_id"], "image": record["image"],
                              "category": record.get("category", ""),
                              "ground_truth": record.get("ground_truth", ""), "text": answer.text,
                              "mode": mode, "seconds": answer.trace.get("seconds", {}).get("total"),
                              "tiles_read": answer.trace.get("tiles_encoded"),
                              "llm_vision_tokens": answer.trace.get("llm_vision_tokens")}
                    out.write(json.dumps(result) + "\n")
                    out.flush()
                    done[str(record["question_id"])] = result
                    bridge.finish_unit(index)
        except Cancelled:
            feedback.reportError(f"Cancelled; {len(done)} answers are in {answers_path}: run again "
                                 "with the same answers file to continue.")
        except RsVqaError as exc:
            raise QgsProcessingException(str(exc)) from exc
        finally:
            bridge.close()

    def _score(self, records, done, sink, sink_id, answers_path, feedback):
        from ..engine.scoring import format_scores, score_records

        answered = [done[str(r["question_id"])] for r in records if str(r["question_id"]) in done]
        scores = score_records(records, answered)
        fields = score_fields()
        for row in score_rows(scores):
            feature = QgsFeature(fields)
            feature.setAttributes(list(row))
            sink.addFeature(feature, QgsFeatureSink.FastInsert)
        feedback.pushInfo(format_scores(scores))
        overall = scores["overall"]
        return {"OUTPUT": sink_id, "ANSWERS": str(answers_path), "ANSWERED": len(answered),
                "OA": overall["OA"], "AA": overall["AA"]}
