"""One headless QgsApplication per pytest process, Processing set-up, and a small real QGIS interface.

Every QGIS test module shares the application through these fixtures (two QgsApplication objects
in one process crash QGIS). In a test module:

    from tests.qgis_support import qgis_app, qgis_processing, recording_iface  # noqa: F401 (fixtures)

    def test_something(qgis_app):          # the QgsApplication (offscreen, GUI-capable)
    def test_alg(qgis_processing):         # the same, with processing.Processing initialised
    def test_dock(recording_iface):        # a fresh RecordingIface (main window, menus, toolbars)

Outside pytest (subprocess scripts) call start_qgis() / init_processing() directly.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

PROCESSING_PLUGINS = "/usr/share/qgis/python/plugins"
_APP = None


def start_qgis():
    """The process's QgsApplication, created once (offscreen, with widgets) and initialised."""
    global _APP
    from qgis.core import QgsApplication

    existing = QgsApplication.instance()
    if existing is not None:
        return existing
    _APP = QgsApplication([], True)
    _APP.initQgis()
    return _APP


def init_processing():
    """processing.Processing initialised once (native + Python providers); returns the registry."""
    from qgis.core import QgsApplication

    start_qgis()
    if PROCESSING_PLUGINS not in sys.path:
        sys.path.append(PROCESSING_PLUGINS)
    from processing.core.Processing import Processing

    Processing.initialize()  # idempotent: returns at once on later calls
    return QgsApplication.processingRegistry()


def flush_deletes():
    """Run pending deleteLater() calls, so tests can see what unload() really removed."""
    from qgis.PyQt.QtCore import QCoreApplication, QEvent

    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    QCoreApplication.processEvents()


def stage_plugin(plugins_dir) -> "Path":
    """A QGIS plugin folder as the zip lays it out (package + metadata.txt + resources), as symlinks.

    QGIS only lists a plugin whose folder holds metadata.txt; ours lives at the repository root,
    so a bare symlink to the package would not be found by `qgis_process plugins`.
    """
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    target = Path(plugins_dir) / "rs_vqa_plugin"
    target.mkdir(parents=True, exist_ok=True)
    entries = [p for p in (repo / "rs_vqa_plugin").iterdir() if p.name != "__pycache__"]
    entries += [repo / "metadata.txt", repo / "resources", repo / "LICENSE"]
    for entry in entries:
        link = target / entry.name
        if not link.exists():
            link.symlink_to(entry)
    return target


def _recording_iface_class():
    # Built lazily: qgis.gui needs the QgsApplication to exist first.
    from qgis.core import QgsProject
    from qgis.gui import QgisInterface, QgsLayerTreeView, QgsMapCanvas, QgsMessageBar
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QMainWindow, QMenu, QToolBar

    class RecordingIface(QgisInterface):
        """The parts of QgisInterface a plugin uses, backed by real Qt widgets.

        Menus, toolbars and docks are real children of a QMainWindow (so tests count what a plugin
        left behind); custom layer actions are recorded in `layer_actions` as QGIS would hold them.
        """

        def __init__(self):
            super().__init__()
            self._window = QMainWindow()
            self._window.setObjectName("RecordingIfaceMainWindow")
            self._canvas = QgsMapCanvas(self._window)
            self._window.setCentralWidget(self._canvas)
            self._bar = QgsMessageBar(self._window)
            self._menus = {}
            for title in ("Plugins", "Raster", "Vector", "Web", "Database"):
                self._menus[title] = self._window.menuBar().addMenu(title)
            self._plugin_toolbar = self._window.addToolBar("Plugins")
            self._plugin_toolbar.setObjectName("mPluginToolBar")
            self._active_layer = None
            self._tree_view = QgsLayerTreeView(self._window)
            self.layer_actions = []  # [(action, menu, layer_type, all_layers)]

        # windows and widgets
        def mainWindow(self):  # noqa: N802
            return self._window

        def mapCanvas(self):  # noqa: N802
            return self._canvas

        def messageBar(self):  # noqa: N802
            return self._bar

        def layerTreeView(self):  # noqa: N802
            return self._tree_view

        def activeLayer(self):  # noqa: N802
            return self._active_layer

        def setActiveLayer(self, layer):  # noqa: N802
            self._active_layer = layer
            return True

        def pluginToolBar(self):  # noqa: N802
            return self._plugin_toolbar

        # plugin menus: QGIS puts each plugin's actions in a submenu named after the plugin
        def _add_to_menu(self, top, name, action):
            menu = self._menus[top]
            sub = next((m for m in menu.findChildren(QMenu) if m.title() == name), None)
            if sub is None:
                sub = menu.addMenu(name)
            sub.addAction(action)

        def _remove_from_menu(self, top, name, action):
            menu = self._menus[top]
            for sub in menu.findChildren(QMenu):
                if sub.title() == name:
                    sub.removeAction(action)
                    if not sub.actions():
                        menu.removeAction(sub.menuAction())
                        sub.setParent(None)
                        sub.deleteLater()

        def addPluginToMenu(self, name, action):  # noqa: N802
            self._add_to_menu("Plugins", name, action)

        def removePluginMenu(self, name, action):  # noqa: N802
            self._remove_from_menu("Plugins", name, action)

        def addPluginToRasterMenu(self, name, action):  # noqa: N802
            self._add_to_menu("Raster", name, action)

        def removePluginRasterMenu(self, name, action):  # noqa: N802
            self._remove_from_menu("Raster", name, action)

        def plugin_submenus(self, top, name):
            return [m for m in self._menus[top].findChildren(QMenu) if m.title() == name]

        # toolbars
        def addToolBarIcon(self, action):  # noqa: N802
            self._plugin_toolbar.addAction(action)
            return len(self._plugin_toolbar.actions()) - 1

        def removeToolBarIcon(self, action):  # noqa: N802
            self._plugin_toolbar.removeAction(action)

        def addToolBar(self, name):  # noqa: N802
            if isinstance(name, QToolBar):
                self._window.addToolBar(name)
                return name
            return self._window.addToolBar(name)

        # docks
        def addDockWidget(self, area, dock):  # noqa: N802
            self._window.addDockWidget(area or Qt.RightDockWidgetArea, dock)

        def removeDockWidget(self, dock):  # noqa: N802
            self._window.removeDockWidget(dock)

        # layer tree context menu actions
        def addCustomActionForLayerType(self, action, menu, layer_type, all_layers):  # noqa: N802
            self.layer_actions.append((action, menu, layer_type, all_layers))

        def removeCustomActionForLayerType(self, action):  # noqa: N802
            before = len(self.layer_actions)
            self.layer_actions = [entry for entry in self.layer_actions if entry[0] is not action]
            return len(self.layer_actions) < before

        def addCustomActionForLayer(self, action, layer):  # noqa: N802
            pass

        def project(self):
            return QgsProject.instance()

    return RecordingIface


def make_recording_iface():
    start_qgis()
    return _recording_iface_class()()


@pytest.fixture(scope="session")
def qgis_app():
    return start_qgis()


@pytest.fixture(scope="session")
def qgis_processing(qgis_app):
    init_processing()
    return qgis_app


@pytest.fixture
def recording_iface(qgis_app):
    iface = make_recording_iface()
    yield iface
    iface.mainWindow().close()
    iface.mainWindow().deleteLater()
    flush_deletes()
