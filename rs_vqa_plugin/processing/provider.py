"""The Processing provider `rs_vqa`: a stable id that models, scripts and qgis_process calls rely on."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .. import __version__
from ..paths import resources_dir
from .ask_algorithm import AskAlgorithm
from .evaluate_algorithm import EvaluateAlgorithm
from .pyramid_algorithm import BuildPyramidAlgorithm

PROVIDER_ID = "rs_vqa"


class RsVqaProvider(QgsProcessingProvider):
    def id(self):
        return PROVIDER_ID

    def name(self):
        return "RS-VQA"

    def longName(self):  # noqa: N802 (QGIS API name)
        return f"RS-VQA {__version__}: questions about large rasters"

    def versionInfo(self):  # noqa: N802 (QGIS API name)
        return __version__

    def icon(self):
        return QIcon(str(resources_dir() / "icon.svg"))

    def loadAlgorithms(self):  # noqa: N802 (QGIS API name)
        for algorithm in (AskAlgorithm(), EvaluateAlgorithm(), BuildPyramidAlgorithm()):
            self.addAlgorithm(algorithm)

    def unload(self):
        # The plugin is going away (or reloading): free the model kept between runs.
        from .engine_cache import release

        release()
        super().unload()
