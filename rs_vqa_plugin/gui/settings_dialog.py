"""The settings dialog: runtime Python (check / set up), model folder, device, alpha, N_max, tokens."""

from __future__ import annotations

import platform
from dataclasses import replace

from qgis.core import Qgis
from qgis.PyQt.QtWidgets import (QApplication, QComboBox, QDialog, QDialogButtonBox,
                                 QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                                 QLineEdit, QPlainTextEdit, QProgressBar, QPushButton, QSpinBox,
                                 QVBoxLayout)

from .. import __version__
from ..engine import DEFAULT_TILE_CACHE_MB, default_overview_cache_dir
from ..settings import (DEVICES, OVERVIEW_PLACES, PluginSettings, default_runtime_python,
                        megabytes_setting)
from .models import check_bundle, selection_problem
from .runtime_setup import (RuntimeJob, doctor_job, parse_doctor, redact_home, set_up_python,
                            setup_command, summarise_doctor)


class SettingsDialog(QDialog):
    def __init__(self, settings: PluginSettings, parent=None):
        super().__init__(parent)
        self.setWindowTitle(self.tr("RS-VQA settings"))
        self.settings = settings
        self.job = None
        self.last_report = None
        layout = QVBoxLayout(self)
        form = QFormLayout()

        self.python_edit = QLineEdit(settings.python)
        self.python_edit.setPlaceholderText(default_runtime_python() or self.tr("path to python"))
        browse_python = QPushButton(self.tr("Browse…"))
        browse_python.clicked.connect(self._browse_python)
        form.addRow(self.tr("Runtime Python"), _row(self.python_edit, browse_python))
        self.check_button = QPushButton(self.tr("Check runtime"))
        self.check_button.clicked.connect(self.check_runtime)
        self.setup_button = QPushButton(self.tr("Set up runtime"))
        self.setup_button.clicked.connect(self.setup_runtime)
        self.copy_button = QPushButton(self.tr("Copy diagnostics"))
        self.copy_button.clicked.connect(self.copy_diagnostics)
        form.addRow("", _row(self.check_button, self.setup_button, self.copy_button))

        self.model_edit = QLineEdit(settings.model_dir)
        browse_model = QPushButton(self.tr("Browse…"))
        browse_model.clicked.connect(self._browse_model)
        form.addRow(self.tr("Model folder"), _row(self.model_edit, browse_model))
        self.folders_edit = QLineEdit(";".join(settings.model_folders))
        self.folders_edit.setPlaceholderText(self.tr("more folders holding bundles, separated by ;"))
        form.addRow(self.tr("Model search folders"), self.folders_edit)
        self.device_combo = QComboBox()
        for device, label in zip(DEVICES, (self.tr("Auto"), self.tr("CPU"), self.tr("GPU (CUDA)"))):
            self.device_combo.addItem(label, device)
        self.device_combo.setCurrentIndex(max(0, self.device_combo.findData(settings.device)))
        form.addRow(self.tr("Device"), self.device_combo)
        self.alpha_spin = QDoubleSpinBox()
        self.alpha_spin.setRange(0.0, 1.0)
        self.alpha_spin.setSingleStep(0.05)
        self.alpha_spin.setSpecialValueText(self.tr("model default"))
        self.alpha_spin.setValue(settings.alpha or 0.0)
        form.addRow(self.tr("Alpha (share of tokens kept)"), self.alpha_spin)
        self.nmax_spin = QSpinBox()
        self.nmax_spin.setRange(0, 1_000_000)
        self.nmax_spin.setSpecialValueText(self.tr("model default"))
        self.nmax_spin.setValue(settings.n_max or 0)
        form.addRow(self.tr("N_max (vision token budget)"), self.nmax_spin)
        self.selection_edit = QLineEdit(settings.selection)
        self.selection_edit.setPlaceholderText(self.tr("model default (paper, focus[:tile_budget=32,...] or mass[:...])"))
        self.selection_edit.setToolTip(self.tr(
            "How dip zooms: 'paper' (the paper's Algorithm 1), 'focus' (keeps the best-scored "
            "places that fit a tile budget and goes down to full resolution) or 'mass' (narrows "
            "to the tiles holding most of the attention). Empty: the model's."))
        form.addRow(self.tr("Selection (advanced)"), self.selection_edit)
        self.tokens_spin = QSpinBox()
        self.tokens_spin.setRange(1, 4096)
        self.tokens_spin.setValue(settings.max_new_tokens)
        form.addRow(self.tr("Max answer tokens"), self.tokens_spin)
        self.overviews_combo = QComboBox()
        for place, label in zip(OVERVIEW_PLACES, (self.tr("Beside the raster (<file>.ovr)"),
                                                  self.tr("In the cache folder"))):
            self.overviews_combo.addItem(label, place)
        self.overviews_combo.setCurrentIndex(max(0, self.overviews_combo.findData(settings.overviews)))
        self.overviews_combo.setToolTip(self.tr(
            "A raster without overviews gets them on its first question (tens of MB for a large "
            "image, built once). Beside the raster, QGIS draws faster with them too; the cache "
            "folder leaves the raster's folder untouched."))
        form.addRow(self.tr("Overviews"), self.overviews_combo)
        self.cache_edit = QLineEdit(settings.overview_cache_dir)
        self.cache_edit.setPlaceholderText(str(default_overview_cache_dir()))
        browse_cache = QPushButton(self.tr("Browse…"))
        browse_cache.clicked.connect(self._browse_cache)
        form.addRow(self.tr("Overview cache folder"), _row(self.cache_edit, browse_cache))
        self.memory_label = self.tr("Memory limit (MB, 0 = 80% of available)")
        self.memory_edit = QLineEdit(_megabytes_text(settings.memory_limit_mb or None))
        self.memory_edit.setPlaceholderText("0")
        self.memory_edit.setToolTip(self.tr(
            "A question whose estimated memory is above this is refused before it starts, with "
            "the figure and a way out (a scope, a smaller N_max or mode). 0 or empty: 80% of the "
            "memory available when asking."))
        form.addRow(self.memory_label, self.memory_edit)
        self.tile_cache_label = self.tr("Tile cache (MB, 0 = off)")
        self.tile_cache_edit = QLineEdit(_megabytes_text(settings.tile_cache_mb))
        self.tile_cache_edit.setPlaceholderText(self.tr("{mb} (default)").format(
            mb=_megabytes_text(DEFAULT_TILE_CACHE_MB)))
        self.tile_cache_edit.setToolTip(self.tr(
            "Tile encodings the runtime keeps between questions, so a follow-up question about "
            "the same raster does not encode its tiles again. Empty: the default."))
        form.addRow(self.tile_cache_label, self.tile_cache_edit)
        layout.addLayout(form)

        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setVisible(False)
        layout.addWidget(self.progress)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setPlaceholderText(self.tr("Runtime checks and set-up output appear here."))
        layout.addWidget(self.log, 1)
        self.warning_label = QLabel()
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet("color: #b00020;")
        self.warning_label.setVisible(False)
        layout.addWidget(self.warning_label)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.resize(640, 520)

    def result_settings(self) -> PluginSettings:
        return replace(self.settings, python=self.python_edit.text().strip(),
                       model_dir=self.model_edit.text().strip(),
                       model_folders=[f.strip() for f in self.folders_edit.text().split(";")
                                      if f.strip()],
                       device=self.device_combo.currentData(),
                       alpha=self.alpha_spin.value() or None, n_max=self.nmax_spin.value() or None,
                       selection=self.selection_edit.text().strip(),
                       max_new_tokens=self.tokens_spin.value(),
                       overviews=self.overviews_combo.currentData(),
                       overview_cache_dir=self.cache_edit.text().strip(),
                       memory_limit_mb=megabytes_setting(self.memory_edit.text(),
                                                         self.memory_label) or 0.0,
                       tile_cache_mb=megabytes_setting(self.tile_cache_edit.text(),
                                                       self.tile_cache_label))

    def megabytes_problem(self):
        """The first megabytes field that is not a number >= 0, said with its label; its edit."""
        for edit, label in ((self.memory_edit, self.memory_label),
                            (self.tile_cache_edit, self.tile_cache_label)):
            try:
                megabytes_setting(edit.text(), label)
            except ValueError as exc:
                return str(exc), edit
        return None, None

    def accept(self) -> None:
        # Stay open on a folder that is not a bundle: closing would hide the warning unread.
        problem, edit = self.megabytes_problem()
        if problem:
            self.warning_label.setText(self.tr("{problem} Or Cancel.").format(problem=problem))
            self.warning_label.setVisible(True)
            edit.setFocus()
            return
        problem = check_bundle(self.model_edit.text().strip()) if self.model_edit.text() else None
        problem = problem or selection_problem(self.selection_edit.text())
        if problem:
            self.warning_label.setText(self.tr("{problem} Choose another model folder, or Cancel."
                                               ).format(problem=problem))
            self.warning_label.setVisible(True)
            self.model_edit.setFocus()
            return
        self._stop_job()
        super().accept()

    def reject(self) -> None:
        self._stop_job()
        super().reject()

    # ---- runtime jobs --------------------------------------------------------------------
    def _start_job(self, job: RuntimeJob, on_done) -> None:
        self._stop_job()
        self.job = job
        job.output.connect(lambda text: self.log.insertPlainText(redact_home(text)))
        job.finished.connect(on_done)
        self.progress.setVisible(True)
        self.check_button.setEnabled(False)
        self.setup_button.setEnabled(False)
        job.start()

    def _job_ended(self) -> None:
        self.progress.setVisible(False)
        self.check_button.setEnabled(True)
        self.setup_button.setEnabled(True)

    def _stop_job(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.job = None

    def check_runtime(self) -> None:
        python = self.python_edit.text().strip()
        if not python:
            self.log.appendPlainText(self.tr("No runtime Python is set: use \"Set up runtime\" "
                                             "or Browse to one."))
            return
        self.log.clear()
        self._start_job(doctor_job(python, self), self._checked)

    def _checked(self, ok: bool, output: str) -> None:
        self._job_ended()
        report = parse_doctor(output)
        self.log.clear()
        if report is None:
            self.log.appendPlainText(self.tr("This Python cannot run the rs-vqa engine. Output:"))
            self.log.appendPlainText(redact_home(output))
            return
        self.last_report = report
        self.log.appendPlainText(summarise_doctor(report))
        self.log.appendPlainText(self.tr("Runtime OK.") if ok else
                                 self.tr("Problems found: see above, or use \"Set up runtime\"."))

    def setup_runtime(self) -> None:
        self.log.clear()
        self._start_job(RuntimeJob(setup_command(), self), self._set_up)

    def _set_up(self, ok: bool, _output: str) -> None:
        self._job_ended()
        if ok:
            self.python_edit.setText(set_up_python())
        self.log.appendPlainText(self.tr("Set-up finished: press OK to use this runtime.") if ok
                                 else self.tr("Set-up failed: see the log above."))

    def diagnostics_text(self) -> str:
        try:
            settings = self.result_settings()
        except ValueError:   # a megabytes field being typed: its text is quoted below as it is
            settings = self.settings
        lines = [f"rs-vqa {__version__}", f"QGIS {Qgis.QGIS_VERSION}",
                 f"OS {platform.platform()}", f"QGIS Python {platform.python_version()}",
                 f"runtime python: {settings.python or '(unset)'}",
                 f"model folder: {settings.model_dir or '(unset)'}",
                 f"device setting: {settings.device}", f"alpha: {settings.alpha or 'default'}",
                 f"N_max: {settings.n_max or 'default'}",
                 f"max answer tokens: {settings.max_new_tokens}"]
        memory, cache = self.memory_edit.text().strip(), self.tile_cache_edit.text().strip()
        lines += [f"memory limit MB: {memory or '0 (80% of available)'}",
                  f"tile cache MB: {cache or 'default'}"]
        if self.last_report:
            lines.append(summarise_doctor(self.last_report))
        return redact_home("\n".join(lines))

    def copy_diagnostics(self) -> None:
        QApplication.clipboard().setText(self.diagnostics_text())
        self.log.appendPlainText(self.tr("Diagnostics copied to the clipboard (home folder "
                                         "redacted)."))

    def _browse_python(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, self.tr("Runtime Python"))
        if path:
            self.python_edit.setText(path)

    def _browse_cache(self) -> None:
        path = QFileDialog.getExistingDirectory(self, self.tr("Overview cache folder"))
        if path:
            self.cache_edit.setText(path)

    def _browse_model(self) -> None:
        path = QFileDialog.getExistingDirectory(self, self.tr("Model bundle folder"))
        if path:
            self.model_edit.setText(path)


def _megabytes_text(value) -> str:
    """A megabytes figure as typed: '' for unset, '512' rather than '512.0'."""
    if value is None:
        return ""
    return f"{value:g}"


def _row(*widgets):
    from qgis.PyQt.QtWidgets import QWidget

    holder = QWidget()
    row = QHBoxLayout(holder)
    row.setContentsMargins(0, 0, 0, 0)
    for index, widget in enumerate(widgets):
        row.addWidget(widget, 1 if index == 0 and isinstance(widget, QLineEdit) else 0)
    return holder
