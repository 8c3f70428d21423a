"""The QGIS entry point: menu, toolbar, layer action and Processing provider, all undone by unload().

Only Qt/QGIS are imported here: the plugin must load in a QGIS without torch, transformers or
onnxruntime (the models run in a separate runtime), so the dock and the provider are imported lazily.
"""

from __future__ import annotations

import traceback

from qgis.core import Qgis, QgsApplication, QgsMapLayerType, QgsMessageLog, QgsRasterLayer
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .paths import resources_dir

MENU_NAME = "&RS-VQA"
LOG_TAG = "RS-VQA"


def tr(text: str) -> str:
    return QCoreApplication.translate("RsVqaPlugin", text)


def log(message: str, level=Qgis.Info) -> None:
    QgsMessageLog.logMessage(message, LOG_TAG, level)


class RsVqaPlugin:
    """Owns every object the plugin adds to the QGIS interface, so unload() can take all of it back."""

    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.controller = None
        self.controller_error = ""
        self.actions: list[QAction] = []
        self.ask_action = None
        self.settings_action = None
        self.layer_action = None

    # -- Processing ---------------------------------------------------------------------------
    def initProcessing(self):  # noqa: N802 (QGIS API name)
        """Called by QGIS (also by qgis_process, which never calls initGui) and by initGui."""
        if self.provider is not None:
            return
        from .processing.provider import RsVqaProvider

        provider = RsVqaProvider()
        if QgsApplication.processingRegistry().addProvider(provider):
            self.provider = provider
        else:
            log(tr("The RS-VQA Processing provider could not be registered (is another copy of "
                   "the plugin loaded?)."), Qgis.Warning)

    # -- GUI ----------------------------------------------------------------------------------
    def initGui(self):  # noqa: N802 (QGIS API name)
        self.initProcessing()
        icon = QIcon(str(resources_dir() / "icon.svg"))
        main_window = self.iface.mainWindow()

        self.ask_action = QAction(icon, tr("Ask…"), main_window)
        self.ask_action.setObjectName("rsVqaAsk")
        self.ask_action.setToolTip(tr("RS-VQA: ask a question about a raster layer"))
        self.ask_action.triggered.connect(self.show_dock)

        self.settings_action = QAction(tr("Settings…"), main_window)
        self.settings_action.setObjectName("rsVqaSettings")
        self.settings_action.triggered.connect(self.show_settings)

        for action in (self.ask_action, self.settings_action):
            self.iface.addPluginToRasterMenu(MENU_NAME, action)
            self.actions.append(action)
        self.iface.addToolBarIcon(self.ask_action)

        self.layer_action = QAction(icon, tr("Ask about this layer…"), main_window)
        self.layer_action.setObjectName("rsVqaAskLayer")
        self.layer_action.triggered.connect(self.ask_about_active_layer)
        self.iface.addCustomActionForLayerType(self.layer_action, "", QgsMapLayerType.RasterLayer, True)

        self._create_controller()

    def _create_controller(self):
        # The dock may be absent or broken; the menu, the layer action and Processing
        # must still work, so a failure here is logged and the actions explain it when used.
        try:
            from .gui.dock_controller import DockController

            self.controller = DockController(self.iface)
        except Exception as exc:  # noqa: BLE001 (any failure of the optional dock must not stop QGIS)
            self.controller = None
            self.controller_error = f"{type(exc).__name__}: {exc}"
            log("The RS-VQA dock is not available: " + self.controller_error + "\n"
                + traceback.format_exc(), Qgis.Warning)

    def unload(self):
        if self.controller is not None:
            try:
                self.controller.unload()
            finally:
                self.controller = None
        if self.layer_action is not None:
            self.iface.removeCustomActionForLayerType(self.layer_action)
            self.layer_action.triggered.disconnect()
            self.layer_action.deleteLater()
            self.layer_action = None
        if self.ask_action is not None:
            self.iface.removeToolBarIcon(self.ask_action)
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU_NAME, action)
            action.triggered.disconnect()
            action.deleteLater()
        self.actions = []
        self.ask_action = None
        self.settings_action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    # -- Actions ------------------------------------------------------------------------------
    def _dock_unavailable(self) -> bool:
        if self.controller is not None:
            return False
        self.iface.messageBar().pushMessage(
            LOG_TAG, tr("The chat dock could not be loaded ({error}). The Processing algorithms "
                        "under RS-VQA still work; see the RS-VQA log for details.").format(
                error=self.controller_error),
            Qgis.Warning)
        return True

    def show_dock(self, _checked=False, layer=None):
        if not self._dock_unavailable():
            self.controller.show(layer=layer)

    def show_settings(self, _checked=False):
        if self._dock_unavailable():
            return
        # The settings dialog belongs to the dock; an older dock without one opens itself instead.
        show_settings = getattr(self.controller, "show_settings", None)
        if show_settings is not None:
            show_settings()
        else:
            self.controller.show()

    def ask_about_active_layer(self, _checked=False):
        layer = self.iface.activeLayer()
        self.show_dock(layer=layer if isinstance(layer, QgsRasterLayer) else None)
