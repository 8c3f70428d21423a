"""rs_vqa:evaluate — answers an LRS-VQA question file and scores them (per-category accuracy, OA, AA)."""

from __future__ import annotations

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingParameterFile,
                       QgsProcessingParameterFileDestination)

from .common import (DEVICES, MODE_HELP, MODES, alpha_parameter, check_model_folder, device_parameter,
                     mode_parameter, model_parameter, n_max_parameter)


class EvaluateAlgorithm(QgsProcessingAlgorithm):
    def name(self):
        return "evaluate"

    def displayName(self):  # noqa: N802 (QGIS API name)
        return "Evaluate on an LRS-VQA question file"

    def group(self):
        return "Evaluation"

    def groupId(self):  # noqa: N802 (QGIS API name)
        return "evaluation"

    def shortHelpString(self):  # noqa: N802 (QGIS API name)
        return ("Not available yet.")

    def createInstance(self):  # noqa: N802 (QGIS API name)
        return EvaluateAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterFile("QUESTIONS", "LRS-VQA question file (.jsonl)",
                                                     extension="jsonl"))
        self.addParameter(QgsProcessingParameterFile("IMAGES", "Image folder",
                                                     behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(model_parameter())
        self.addParameter(mode_parameter())

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API name)
        raise QgsProcessingException("Evaluation is not available yet.")
