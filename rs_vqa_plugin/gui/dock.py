"""The chat dock's widgets: layer, scope and model pickers, the conversation, question box, Stop.

A view only: it emits what the person asked for; DockController decides and talks to the worker.
"""

from __future__ import annotations

import html
from typing import List

from qgis.core import QgsMapLayerProxyModel
from qgis.gui import QgsDockWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (QComboBox, QFormLayout, QFrame, QHBoxLayout, QLabel, QLineEdit,
                                 QMenu, QProgressBar, QPushButton, QTextBrowser, QToolButton,
                                 QVBoxLayout, QWidget)

from .history import Turn, waited_text
from .scope import EXTENT, POLYGON, WHOLE


def placeholder_width(edit: QLineEdit) -> int:
    """The width at which a line edit shows its whole placeholder: the text, the edit's own text
    margins and the frame (about one character on each side)."""
    metrics = edit.fontMetrics()
    margins = edit.textMargins()
    return (metrics.horizontalAdvance(edit.placeholderText()) + margins.left() + margins.right()
            + 2 * metrics.horizontalAdvance("M"))


class ChatDock(QgsDockWidget):
    askRequested = pyqtSignal(str)        # question
    stopRequested = pyqtSignal()
    settingsRequested = pyqtSignal()
    exportRequested = pyqtSignal(str)     # "markdown" | "csv"
    clearRequested = pyqtSignal()
    setupRuntimeRequested = pyqtSignal()
    turnAction = pyqtSignal(str, int)     # "toggle" | "zoom", turn index

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle(self.tr("RS-VQA: ask this raster"))
        self.setObjectName("RsVqaChatDock")
        body = QWidget(self)
        layout = QVBoxLayout(body)
        form = QFormLayout()
        self.layer_combo = QgsMapLayerComboBox(body)
        self.layer_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.layer_combo.setAllowEmptyLayer(True)
        form.addRow(self.tr("Raster"), self.layer_combo)

        scope_row = QHBoxLayout()
        self.scope_combo = QComboBox(body)
        self.scope_combo.addItem(self.tr("Whole layer"), WHOLE)
        self.scope_combo.addItem(self.tr("Visible map extent"), EXTENT)
        self.scope_combo.addItem(self.tr("Selected polygon of"), POLYGON)
        self.polygon_combo = QgsMapLayerComboBox(body)
        self.polygon_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.polygon_combo.setAllowEmptyLayer(True)
        self.polygon_combo.setLayer(None)
        self.polygon_combo.setEnabled(False)
        self.scope_combo.currentIndexChanged.connect(
            lambda _i: self.polygon_combo.setEnabled(self.scope() == POLYGON))
        scope_row.addWidget(self.scope_combo)
        scope_row.addWidget(self.polygon_combo, 1)
        form.addRow(self.tr("Scope"), scope_row)

        model_row = QHBoxLayout()
        self.model_combo = QComboBox(body)
        self.settings_button = QToolButton(body)
        self.settings_button.setText("⚙")
        self.settings_button.setToolTip(self.tr("Runtime and model settings"))
        self.settings_button.clicked.connect(self.settingsRequested)
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.settings_button)
        form.addRow(self.tr("Model"), model_row)
        layout.addLayout(form)

        # Shown while no usable runtime is known, with the one action that makes one.
        self.runtime_box = QFrame(body)
        self.runtime_box.setFrameShape(QFrame.StyledPanel)
        runtime_row = QHBoxLayout(self.runtime_box)
        self.runtime_label = QLabel(self.runtime_box)
        self.runtime_label.setWordWrap(True)
        self.runtime_label.setStyleSheet("color: #b00020;")
        self.setup_runtime_button = QPushButton(self.tr("Set up runtime…"), self.runtime_box)
        self.setup_runtime_button.clicked.connect(self.setupRuntimeRequested)
        runtime_row.addWidget(self.runtime_label, 1)
        runtime_row.addWidget(self.setup_runtime_button)
        self.runtime_box.setVisible(False)
        layout.addWidget(self.runtime_box)

        self.conversation = QTextBrowser(body)
        self.conversation.setOpenLinks(False)
        self.conversation.anchorClicked.connect(self._on_anchor)
        layout.addWidget(self.conversation, 1)

        self.status_label = QLabel(body)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.status_label)
        self.progress_bar = QProgressBar(body)
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setVisible(False)
        layout.addWidget(self.progress_bar)

        # The question box has a row of its own, the dock's full width, never narrower than its
        # placeholder (beside the buttons it was squeezed to ~100 px and the hint was cut off).
        self.question_edit = QLineEdit(body)
        self.question_edit.setPlaceholderText(self.tr("Ask about this raster… (Enter sends)"))
        self.question_edit.setMinimumWidth(placeholder_width(self.question_edit))
        self.question_edit.returnPressed.connect(self._send)
        layout.addWidget(self.question_edit)

        buttons_row = QHBoxLayout()
        self.send_button = QPushButton(self.tr("Ask"), body)
        self.send_button.clicked.connect(self._send)
        self.stop_button = QPushButton(self.tr("Stop"), body)
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stopRequested)
        self.clear_button = QPushButton(self.tr("Clear conversation"), body)
        self.clear_button.clicked.connect(self.clearRequested)
        self.export_button = QPushButton(self.tr("Export…"), body)
        menu = QMenu(self.export_button)
        menu.addAction(self.tr("Markdown…"), lambda: self.exportRequested.emit("markdown"))
        menu.addAction(self.tr("CSV…"), lambda: self.exportRequested.emit("csv"))
        self.export_button.setMenu(menu)
        buttons_row.addWidget(self.send_button)
        buttons_row.addWidget(self.stop_button)
        buttons_row.addStretch(1)
        buttons_row.addWidget(self.clear_button)
        buttons_row.addWidget(self.export_button)
        layout.addLayout(buttons_row)
        self.setWidget(body)

    # ---- what the person chose -----------------------------------------------------------
    def scope(self) -> str:
        return self.scope_combo.currentData()

    def _send(self) -> None:
        # An empty question goes too: the controller answers it with a hint.
        if self.send_button.isEnabled():
            self.askRequested.emit(self.question_edit.text().strip())

    def _on_anchor(self, url) -> None:
        action, _, index = url.toString().partition(":")
        if action in ("toggle", "zoom") and index.isdigit():
            self.turnAction.emit(action, int(index))

    # ---- what the controller shows -------------------------------------------------------
    def set_busy(self, busy: bool) -> None:
        self.send_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)
        self.progress_bar.setVisible(busy)
        if busy:
            self.progress_bar.setValue(0)
            self.progress_bar.setFormat(self.tr("Starting…"))

    def show_progress(self, stage_label: str, fraction: float) -> None:
        self.progress_bar.setValue(int(round(100 * fraction)))
        self.progress_bar.setFormat(f"{stage_label}: %p%")

    def show_runtime_problem(self, text: str) -> None:
        """Why no question can be answered yet, beside the "Set up runtime…" button; '' hides it."""
        self.runtime_label.setText(text)
        self.runtime_box.setVisible(bool(text))

    def show_status(self, text: str, error: bool = False) -> None:
        self.status_label.setStyleSheet("color: #b00020;" if error else "")
        self.status_label.setText(text)

    def render(self, turns: List[Turn], visible_heat: set) -> None:
        parts = []
        for index, turn in enumerate(turns):
            parts.append(f"<p><b>{self.tr('Q')}:</b> {html.escape(turn.question)}</p>")
            # Streamed text shows while it arrives; a stopped or failed turn has no answer.
            if turn.status == "answered" or (turn.status == "asking" and turn.text):
                cursor = " ▌" if turn.status == "asking" else ""
                parts.append(f"<p><b>{self.tr('A')}:</b> {html.escape(turn.text)}{cursor}</p>")
            if turn.status == "asking" and not turn.text:
                parts.append(f"<p><i>{html.escape(turn.message or self.tr('Thinking…'))}</i></p>")
            if turn.status in ("stopped", "failed"):
                colour = "#b00020" if turn.status == "failed" else "#666666"
                parts.append(f"<p style='color:{colour}'><i>{html.escape(turn.message)}</i></p>")
            if turn.status == "answered":
                parts.append(self._stats_html(index, turn, turn.heat_layer_id in visible_heat))
            for note in filter(None, turn.note.split("\n")):
                parts.append(f"<p style='color:#8a5a00'><i>{html.escape(note)}</i></p>")
            parts.append("<hr/>")
        self.conversation.setHtml("".join(parts))
        bar = self.conversation.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _stats_html(self, index: int, turn: Turn, visible: bool) -> str:
        stats = turn.stats or {}
        levels = ", ".join(str(v) for v in stats.get("levels", []) or []) or "–"
        line = self.tr("{waited} · {tiles} tiles read · {tokens} LLM tokens · levels {levels}").format(
            waited=waited_text(stats), tiles=stats.get("tiles", "?"),
            tokens=stats.get("llm_tokens", "?"), levels=levels)
        # Normal size (a <small> line was unreadable in QGIS's small dock font); the links on a
        # line of their own that never wraps (the dock is at least as wide as the question box).
        parts = [f"<p style='color:#555555'>{html.escape(line)}</p>"]
        if turn.heat_layer_id:
            toggle = self.tr("Hide where it looked") if visible else self.tr("Show where it looked")
            links = [_link(f"toggle:{index}", toggle), _link(f"zoom:{index}", self.tr("Zoom to it"))]
            parts.append(f"<p style='white-space:nowrap'>{' &nbsp;·&nbsp; '.join(links)}</p>")
        return "".join(parts)


def _link(href: str, text: str) -> str:
    return f"<a href='{href}'>{html.escape(text)}</a>"
