"""rs_vqa:build_pyramid — GDAL overviews for a raster, beside it or in a cache folder, cancellable."""

from __future__ import annotations

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingOutputNumber,
                       QgsProcessingOutputString, QgsProcessingParameterBoolean,
                       QgsProcessingParameterFile, QgsProcessingParameterRasterLayer)

from .common import non_raster_message, raster_path
from .feedback_bridge import FeedbackBridge


class BuildPyramidAlgorithm(QgsProcessingAlgorithm):
    def name(self):
        return "build_pyramid"

    def displayName(self):  # noqa: N802 (QGIS API name)
        return "Build image pyramid (overviews)"

    def group(self):
        return "Preparation"

    def groupId(self):  # noqa: N802 (QGIS API name)
        return "preparation"

    def tags(self):
        return ["overviews", "pyramid", "gdaladdo", "cache"]

    def shortHelpString(self):  # noqa: N802 (QGIS API name)
        return (
            "Builds the average-resampled GDAL overviews that RS-VQA reads its coarse-to-fine image "
            "pyramid from, so that the first question about a large raster does not wait for them.\n\n"
            "The raster itself is never rewritten: overviews go beside it as <file>.ovr when its "
            "folder is writable, otherwise (or when 'Always use the cache folder' is ticked) into "
            "the cache folder (empty: $RS_VQA_CACHE/overviews or ~/.cache/rs-vqa/overviews). "
            "Existing complete overviews are reused; images under 1024 px need none. Cancel leaves "
            "no partial file. Needs only GDAL (no model)."
        )

    def createInstance(self):  # noqa: N802 (QGIS API name)
        return BuildPyramidAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster layer"))
        self.addParameter(QgsProcessingParameterFile(
            "CACHE_DIR", "Cache folder (empty: the default cache)",
            behavior=QgsProcessingParameterFile.Folder, optional=True))
        self.addParameter(QgsProcessingParameterBoolean(
            "USE_CACHE", "Always use the cache folder (never write beside the raster)", defaultValue=False))
        self.addOutput(QgsProcessingOutputString("LOCATION", "Where the overviews are "
                                                 "(internal, external, cache or none)"))
        self.addOutput(QgsProcessingOutputString("OVERVIEW_FILE", "Overview file"))
        self.addOutput(QgsProcessingOutputString("READ_PATH", "Dataset to read through the overviews"))
        self.addOutput(QgsProcessingOutputNumber("LEVELS", "Number of overview levels"))

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS API name)
        message = non_raster_message("INPUT", parameters.get("INPUT"), context)
        if message:
            return False, message
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API name)
        from ..engine import Cancelled, RsVqaError, build_overviews

        path = raster_path(self.parameterAsRasterLayer(parameters, "INPUT", context))
        cache_dir = self.parameterAsFile(parameters, "CACHE_DIR", context) or None
        use_cache = self.parameterAsBoolean(parameters, "USE_CACHE", context)
        bridge = FeedbackBridge(feedback, staged=False)
        try:
            state = build_overviews(path, cache_dir=cache_dir, use_cache=use_cache, events=bridge,
                                    cancel=bridge.token)
        except Cancelled:
            feedback.reportError("Cancelled: no overview file was written.")
            return {}
        except RsVqaError as exc:
            raise QgsProcessingException(str(exc)) from exc
        finally:
            bridge.close()
        verb = "built" if state.built else "found"
        feedback.pushInfo(f"Overviews {verb}: {state.location}, factors {state.factors}"
                          + (f" ({state.note})" if state.note else ""))
        return {"LOCATION": state.location, "OVERVIEW_FILE": str(state.ovr_path or ""),
                "READ_PATH": str(state.read_path), "LEVELS": len(state.factors)}
