"""The chat dock's polish (issue 15): widths, readable stats, a quiet message bar, legends people
read, one visible heat layer, overview and demonstration-model notices. Headless QGIS, real dock."""

from __future__ import annotations

import pytest

from tests.qgis_support import flush_deletes, qgis_app  # noqa: F401 (fixture)


@pytest.fixture
def dock_window(qgis_app):
    """A ChatDock docked in a real main window (offscreen), as QGIS shows it."""
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QMainWindow

    from rs_vqa_plugin.gui.dock import ChatDock

    window = QMainWindow()
    window.setCentralWidget(QMainWindow())
    dock = ChatDock(window)
    window.addDockWidget(Qt.RightDockWidgetArea, dock)
    window.resize(1400, 900)
    window.show()
    yield window, dock
    window.close()
    window.deleteLater()
    flush_deletes()


def dock_width(window, dock, width: int) -> int:
    from qgis.PyQt.QtCore import QCoreApplication, Qt

    window.resizeDocks([dock], [width], Qt.Horizontal)
    for _ in range(3):
        QCoreApplication.processEvents()
    return dock.widget().width()


def placeholder_fits(edit) -> bool:
    margins = edit.textMargins()
    room = edit.contentsRect().width() - margins.left() - margins.right()
    return edit.fontMetrics().horizontalAdvance(edit.placeholderText()) <= room


def test_the_question_box_takes_the_dock_width_and_shows_its_whole_placeholder(dock_window):
    window, dock = dock_window
    edit = dock.question_edit
    for wanted in (450, 600):
        body = dock_width(window, dock, wanted)
        assert body >= wanted - 40
        assert edit.width() >= 0.9 * body, (edit.width(), body)
        assert placeholder_fits(edit)
    # Squeezed as far as the window lets it: the dock stops where the placeholder still shows.
    dock_width(window, dock, 60)
    assert placeholder_fits(edit), (edit.width(), edit.placeholderText())


def test_the_stats_line_is_normal_size_and_its_links_stay_whole_on_one_line(dock_window):
    from rs_vqa_plugin.gui.history import Turn

    window, dock = dock_window
    dock_width(window, dock, 380)
    turn = Turn(question="How many ships are docked?", text="three", status="answered",
                heat_layer_id="heat-1",
                stats={"seconds": 5.2, "parts": {"load": 3.1, "overviews": 1.0, "answer": 1.1},
                       "tiles": 12, "llm_tokens": 412, "levels": [1, 2]})
    dock.render([turn], {"heat-1"})
    document = dock.conversation.document()

    def block_with(text):
        cursor = document.find(text)
        assert not cursor.isNull(), document.toPlainText()
        return cursor.block()

    question, stats = block_with("How many ships"), block_with("tiles read")
    # As tall a line as the question's: the same font size (it was <small>).
    assert stats.layout().lineAt(0).height() >= 0.95 * question.layout().lineAt(0).height()
    links = block_with("Zoom to it")
    assert links.blockNumber() != stats.blockNumber()       # not run on after the figures
    assert "Hide where it looked" in links.text().replace("\xa0", " ")
    assert links.layout().lineCount() == 1                  # both links whole, on one line
