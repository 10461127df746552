"""Jobs dock: launch training, prediction or a pipeline (locally or on a Ray cluster), follow it, cancel
it, browse the history. Any dock's job (dataset build, RPS, next AL round) shows up here too, and the dock
comes forward when a job starts. The monitor shows the latest job; selecting a running job in the history
shows that one instead, and Cancel stops the job shown. "Run again" starts the selected job's command once
more (same folder, machine and resources) as a new job."""

from __future__ import annotations

import time
from pathlib import Path

from qgis.core import QgsMapLayerProxyModel
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
)

from .. import worker
from ..jobs.runners import Job
from ..jobs.spec import LOCAL, JobSpec
from ..layers import add_outputs
from ..ui import layer_file, tr
from .base import BaseDock

KINDS = (("train", "Train a model"), ("predict", "Predict a raster"), ("pipeline", "Run a pipeline"))


def output_folder(base: Path, kind: str) -> Path:
    """A fresh folder name for a job's outputs: ``BASE/KIND-YYYYmmdd-HHMMSS``."""
    return base / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


class JobsDock(BaseDock):
    def __init__(self, iface, manager) -> None:
        super().__init__(iface, manager, tr("AI Factory — Jobs"), "AIFactoryJobsDock")
        self.job: Job | None = None
        self._build_launch()
        self._build_monitor()
        manager.jobStarted.connect(self.follow)
        manager.jobFinished.connect(lambda _job: self.refresh_history())
        self.refresh_history()
        self.refresh_runners()
        self._kind_changed()

    # -- launching ---------------------------------------------------------------------------------
    def _build_launch(self) -> None:
        box = QGroupBox(tr("Launch"), self)
        form = QFormLayout(box)
        self.kind = QComboBox(box)
        for key, label in KINDS:
            self.kind.addItem(tr(label), key)
        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.config = QgsFileWidget(box)
        self.config.setFilter(tr("YAML config (*.yaml *.yml)"))
        self.model = QgsFileWidget(box)
        self.model.setStorageMode(QgsFileWidget.GetDirectory)
        self.raster = QgsMapLayerComboBox(box)
        self.raster.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.geofence = QgsFileWidget(box)
        self.geofence.setFilter(tr("GeoPackage (*.gpkg)"))
        self.exclude = QgsFileWidget(box)
        self.exclude.setFilter(tr("GeoPackage (*.gpkg)"))
        self.output = QgsFileWidget(box)
        self.output.setStorageMode(QgsFileWidget.GetDirectory)
        self.output.lineEdit().setPlaceholderText(tr("a new folder under {0}").format(self.manager.settings.work_dir()))
        self.runner = QComboBox(box)
        self.cpus = QDoubleSpinBox(box, minimum=0, maximum=512, value=1, decimals=0, prefix=tr("CPU "))
        self.gpus = QDoubleSpinBox(box, minimum=0, maximum=64, value=0, decimals=1, prefix=tr("GPU "))
        self.memory = QDoubleSpinBox(box, minimum=0, maximum=4096, value=0, decimals=0, suffix=" GB")
        self.memory.setSpecialValueText(tr("any"))
        self.code_ref = QLineEdit(box)
        self.code_ref.setPlaceholderText(tr("git commit, tag or branch (remote runs)"))
        resources = QHBoxLayout()
        for widget in (self.cpus, self.gpus):
            resources.addWidget(widget)
        self.run_button = QPushButton(tr("Run"), box)
        self.run_button.clicked.connect(self.launch)
        self.rows = {}
        for key, label, widget in (
            ("kind", tr("Job"), self.kind), ("config", tr("Config"), self.config),
            ("model", tr("Model run"), self.model), ("raster", tr("Raster"), self.raster),
            ("geofence", tr("Predict inside"), self.geofence), ("exclude", tr("Never inside"), self.exclude),
            ("output", tr("Output folder"), self.output),
            ("runner", tr("Machine"), self.runner), ("resources", tr("Resources"), resources),
            ("memory", tr("Memory"), self.memory),
            ("code_ref", tr("Code ref"), self.code_ref),
        ):
            form.addRow(label, widget)
            self.rows[key] = (form.labelForField(widget), widget)
        form.addRow(self.run_button)
        self.body.addWidget(box)

    def _kind_changed(self) -> None:
        kind = self.kind.currentData()
        visible = {"config": kind in ("train", "pipeline"), "model": kind == "predict",
                   "raster": kind == "predict", "geofence": kind == "predict", "exclude": kind == "predict",
                   "output": kind != "pipeline"}
        for key, shown in visible.items():
            label, widget = self.rows[key]
            label.setVisible(shown)
            widget.setVisible(shown)

    def refresh_runners(self) -> None:
        current = self.runner.currentData()
        self.runner.clear()
        self.runner.addItem(tr("This computer"), LOCAL)
        for cluster in self.manager.settings.clusters():
            self.runner.addItem(tr("Ray: {0}").format(cluster.name), cluster.name)
        index = self.runner.findData(current)
        self.runner.setCurrentIndex(max(0, index))

    def set_geofences(self, include: str, exclude: str) -> None:
        self.geofence.setFilePath(include)
        self.exclude.setFilePath(exclude)

    def build_spec(self) -> JobSpec | None:
        """The job the form describes, or None after telling the user what is missing."""
        kind = self.kind.currentData()
        out = Path(self.output.filePath() or output_folder(self.manager.settings.work_dir(), kind))
        config = self.config.filePath()
        if kind in ("train", "pipeline") and not Path(config).is_file():
            self.error(tr("Choose the {0} config file (YAML) first.").format(kind))
            return None
        outputs: list[str] = []
        cwd = out.parent  # not OUT itself: the worker replaces OUT as a whole when it is done
        if kind == "train":
            args = worker.train(config, str(out), self.code_ref.text().strip() or None,
                                self.manager.settings.mlflow_uri() or None)
            title = tr("train {0}").format(Path(config).stem)
        elif kind == "pipeline":
            args, title = worker.pipeline(config), tr("pipeline {0}").format(Path(config).stem)
            cwd = Path(config).parent
        else:
            model, raster = self.model.filePath(), layer_file(self.raster.currentLayer())
            if not (Path(model) / "model.json").is_file():
                self.error(tr("Choose a trained run folder (with model.json) as the model."))
                return None
            if not raster:
                self.error(tr("Choose a file-based raster layer to predict."))
                return None
            args = worker.predict(model, raster, str(out), self.geofence.filePath() or None,
                                  self.exclude.filePath() or None)
            title = tr("predict {0}").format(self.raster.currentLayer().name())
            outputs = [str(out / "detections.gpkg"), str(out / "scores.tif")]
        return JobSpec(kind=kind, title=title, args=args, runner=self.runner.currentData() or LOCAL,
                       cpus=self.cpus.value(), gpus=self.gpus.value(), memory_gb=self.memory.value(),
                       code_ref=self.code_ref.text().strip(), cwd=str(cwd), outputs=outputs)

    def launch(self) -> Job | None:
        spec = self.build_spec()
        return self.manager.submit(spec) if spec else None

    # -- monitoring ---------------------------------------------------------------------------------
    def _build_monitor(self) -> None:
        box = QGroupBox(tr("Current job"), self)
        form = QFormLayout(box)
        self.title = QLabel(tr("none"), box)
        self.progress = QProgressBar(box)
        self.progress.setRange(0, 100)
        self.step = QLabel("", box)
        self.step.setWordWrap(True)
        self.cancel_button = QPushButton(tr("Cancel"), box)
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip(tr("Stop the job shown here. To stop another running job, select it in the "
                                         "History below first."))
        self.cancel_button.clicked.connect(self.cancel)
        self.metrics = QTableWidget(0, 3, box)
        self.metrics.setHorizontalHeaderLabels([tr("metric"), tr("value"), tr("step")])
        self.metrics.horizontalHeader().setStretchLastSection(True)
        self.metrics.setMaximumHeight(120)
        self.log = QPlainTextEdit(box)
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setMinimumHeight(100)
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.cancel_button)
        form.addRow(top)
        form.addRow(self.progress)
        form.addRow(self.step)
        form.addRow(self.metrics)
        form.addRow(self.log)
        self.body.addWidget(box)
        history = QGroupBox(tr("History"), self)
        layout = QFormLayout(history)
        self.history = QListWidget(history)
        self.history.setMaximumHeight(140)
        self.history.currentItemChanged.connect(self._show_record)
        self.load_button = QPushButton(tr("Load outputs"), history)
        self.load_button.clicked.connect(self._load_record)
        self.rerun_button = QPushButton(tr("Run again"), history)
        self.rerun_button.setToolTip(tr("Start the selected job's command again, as a new job"))
        self.rerun_button.clicked.connect(lambda: self.rerun())
        layout.addRow(self.history)
        buttons = QHBoxLayout()
        buttons.addWidget(self.load_button)
        buttons.addWidget(self.rerun_button)
        layout.addRow(buttons)
        self.body.addWidget(history)

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def follow(self, job: Job) -> None:
        """A job started (here or from another dock): bring the dock forward and show the job's progress."""
        job.reported.connect(lambda event, job=job: self._on_event(job, event))
        job.finished.connect(lambda status, job=job: self._on_finished(job, status))
        self.show()
        self.raise_()
        self.display(job)
        self.refresh_history()

    def display(self, job: Job) -> None:
        """Show ``job`` in the monitor from what it reported so far; Cancel then acts on it."""
        self.job = job
        self.title.setText(job.spec.title)
        self.progress.setValue(job.state.percent)
        self.step.setText(" — ".join(t for t in (job.state.task, job.state.message) if t) or tr("starting…"))
        self._show_metrics(job)
        self.log.setPlainText("\n".join(job.log))
        self.cancel_button.setEnabled(not job.done)

    def _on_event(self, job: Job, event: dict) -> None:
        if job is not self.job:
            return
        kind = event["event"]
        if kind == "progress":
            self.progress.setValue(job.state.percent)
            self.step.setText(" — ".join(t for t in (job.state.task, job.state.message) if t))
        elif kind == "metric":
            self._show_metrics(job)
        elif kind in ("log", "error"):
            self.log.appendPlainText(str(event.get("message", "")))
        elif kind == "artifact":
            self.log.appendPlainText(tr("artifact {0}: {1}").format(event.get("kind"), event.get("path")))

    def _show_metrics(self, job: Job) -> None:
        self.metrics.setRowCount(len(job.state.metrics))
        for row, (name, (value, step)) in enumerate(sorted(job.state.metrics.items())):
            for col, text in enumerate((name, f"{value:.4g}", "" if step is None else str(step))):
                self.metrics.setItem(row, col, QTableWidgetItem(text))

    def _on_finished(self, job: Job, status: str) -> None:
        if job is not self.job:
            return
        self.cancel_button.setEnabled(False)
        self.progress.setValue(job.state.percent)
        self.step.setText(tr("{0}: {1}").format(status, job.message) if job.message else status)
        if job.message:
            self.log.appendPlainText(job.message)

    def refresh_history(self) -> None:
        shown = self.job.spec.id if self.job is not None else None
        self.history.blockSignals(True)  # rebuilding the list is not the user choosing another job
        self.history.clear()
        for record in self.manager.history.records:
            item = QListWidgetItem(record.label(), self.history)
            item.setData(Qt.ItemDataRole.UserRole, record.id)
            item.setToolTip(" ".join(record.args) + (f"\n{record.message}" if record.message else ""))
            if record.id == shown:
                self.history.setCurrentItem(item)
        self.history.blockSignals(False)

    def _record(self):
        item = self.history.currentItem()
        return self.manager.history.get(item.data(Qt.ItemDataRole.UserRole)) if item else None

    def _show_record(self, *_args) -> None:
        record = self._record()
        running = next((job for job in self.manager.jobs if record is not None and job.spec.id == record.id), None)
        if running is not None:
            if running is not self.job:
                self.display(running)
        elif record is not None and (self.job is None or self.job.done):
            self.title.setText(record.title)
            self.step.setText(f"{record.status}: {record.message}" if record.message else record.status)

    def rerun(self) -> Job | None:
        """Submit the selected history record's command again; a job still running is not started twice."""
        record = self._record()
        if record is None:
            self.error(tr("Select a job in the history first."))
            return None
        if any(job.spec.id == record.id for job in self.manager.jobs):
            self.error(tr("“{0}” is still running: cancel it first, or wait for it to end.").format(record.title))
            return None
        return self.manager.submit(record.to_spec())

    def _load_record(self) -> None:
        record = self._record()
        if record is None:
            return
        added = add_outputs(record.outputs)
        if not added:
            self.error(tr("No output of “{0}” can be loaded from this computer.").format(record.title))
