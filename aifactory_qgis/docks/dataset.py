"""Dataset dock: pick rasters and annotation layers of the project, class field and hierarchy level,
context filters and split strategy; see live counts per class and split (``dataset preview --json`` run
in the background after each change), then build the dataset as a job."""

from __future__ import annotations

import json
from pathlib import Path

from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.gui import QgsFieldComboBox, QgsFileWidget
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
)

from .. import configs, worker
from ..files import source_layer_name, source_path
from ..jobs.runners import WorkerCall
from ..jobs.spec import JobSpec
from ..ui import crs_mismatch, layer_file, project_layers, tr
from ..widgets.charts import BalanceChart
from .base import BaseDock
from .jobs import output_folder

PREVIEW_DELAY_MS = 600


class DatasetDock(BaseDock):
    def __init__(self, iface, manager) -> None:
        super().__init__(iface, manager, tr("AI Factory — Dataset"), "AIFactoryDatasetDock")
        self.preview_call: WorkerCall | None = None
        self.counts: dict[str, dict[str, int]] = {}
        self._filters_followed: set[str] = set()  # vector layers whose filter changes re-preview
        self.timer = QTimer(self, singleShot=True, interval=PREVIEW_DELAY_MS)
        self.timer.timeout.connect(self.preview)

        sources = QGroupBox(tr("Sources"), self)
        form = QFormLayout(sources)
        self.mode = QComboBox(sources)
        self.mode.addItem(tr("Layers of this project"), "layers")
        self.mode.addItem(tr("Catalog (with context filters)"), "catalog")
        self.mode.currentIndexChanged.connect(self._mode_changed)
        self.catalog = QgsFileWidget(sources)
        self.catalog.setFilter(tr("Catalog (*.gpkg)"))
        self.catalog.fileChanged.connect(self.changed)
        self.rasters = QListWidget(sources)
        self.annotations = QListWidget(sources)
        for widget in (self.rasters, self.annotations):
            widget.setMaximumHeight(110)
            widget.itemChanged.connect(self.changed)
        self.class_field = QgsFieldComboBox(sources)
        self.class_field.fieldChanged.connect(self.changed)
        self.level = QSpinBox(sources, minimum=1, maximum=4, value=1)
        self.level.setToolTip(tr("Level of the class hierarchy (vegetation/tree: 1 = vegetation, 2 = tree)"))
        self.level.valueChanged.connect(self.changed)
        form.addRow(tr("Source"), self.mode)
        form.addRow(tr("Catalog"), self.catalog)
        form.addRow(tr("Rasters"), self.rasters)
        form.addRow(tr("Annotations"), self.annotations)
        form.addRow(tr("Class field"), self.class_field)
        self.source_form = form
        form.addRow(tr("Hierarchy level"), self.level)
        self.body.addWidget(sources)

        filters = self.filters = QGroupBox(tr("Context filters (% of the image or tile)"), self)
        grid = QGridLayout(filters)
        self.context: dict[str, tuple[QCheckBox, QDoubleSpinBox, QDoubleSpinBox]] = {}
        for row, name in enumerate(configs.CONTEXT_FIELDS):
            check = QCheckBox(name, filters)
            low = QDoubleSpinBox(filters, minimum=0, maximum=100, value=0, decimals=0, suffix=" %")
            high = QDoubleSpinBox(filters, minimum=0, maximum=100, value=100, decimals=0, suffix=" %")
            for widget in (check, low, high):
                (widget.toggled if widget is check else widget.valueChanged).connect(self.changed)
            grid.addWidget(check, row, 0)
            grid.addWidget(low, row, 1)
            grid.addWidget(high, row, 2)
            self.context[name] = (check, low, high)
        self.body.addWidget(filters)

        split = QGroupBox(tr("Split and chips"), self)
        form = QFormLayout(split)
        self.strategy = QComboBox(split)
        for key, label in zip(configs.SPLIT_METHODS, (tr("spatial blocks"), tr("whole images")), strict=True):
            self.strategy.addItem(label, key)
        self.val = QDoubleSpinBox(split, minimum=0, maximum=0.9, value=0.15, singleStep=0.05)
        self.test = QDoubleSpinBox(split, minimum=0, maximum=0.9, value=0.15, singleStep=0.05)
        self.tile = QSpinBox(split, minimum=32, maximum=4096, value=256, singleStep=32)
        self.seed = QSpinBox(split, minimum=0, maximum=2**31 - 1, value=0)
        for widget in (self.val, self.test, self.tile, self.seed):
            widget.valueChanged.connect(self.changed)
        self.strategy.currentIndexChanged.connect(self.changed)
        form.addRow(tr("Strategy"), self.strategy)
        form.addRow(tr("Validation share"), self.val)
        form.addRow(tr("Test share"), self.test)
        form.addRow(tr("Chip size (px)"), self.tile)
        form.addRow(tr("Seed"), self.seed)
        self.body.addWidget(split)

        balance = QGroupBox(tr("Objects per class and split"), self)
        form = QFormLayout(balance)
        self.chart = BalanceChart(balance)
        self.status = QLabel("", balance)
        self.status.setWordWrap(True)
        self.output = QgsFileWidget(balance)
        self.output.setStorageMode(QgsFileWidget.GetDirectory)
        build = QPushButton(tr("Build dataset"), balance)
        build.clicked.connect(lambda: self.build())
        form.addRow(self.chart)
        form.addRow(self.status)
        form.addRow(tr("Output folder"), self.output)
        form.addRow(build)
        self.body.addWidget(balance)

        project = QgsProject.instance()
        project.layersAdded.connect(self.refresh_layers)
        project.layersRemoved.connect(self.refresh_layers)
        self.refresh_layers()
        self._mode_changed()

    def _mode_changed(self, *_args) -> None:
        catalog = self.mode.currentData() == "catalog"
        for widget in (self.catalog,):
            widget.setVisible(catalog)
            self.source_form.labelForField(widget).setVisible(catalog)
        for widget in (self.rasters, self.annotations, self.class_field):
            widget.setVisible(not catalog)
            self.source_form.labelForField(widget).setVisible(not catalog)
        self.filters.setEnabled(catalog)
        self.changed()

    def disconnect_project(self) -> None:
        project = QgsProject.instance()
        project.layersAdded.disconnect(self.refresh_layers)
        project.layersRemoved.disconnect(self.refresh_layers)
        if self.preview_call is not None:
            self.preview_call.abort()

    # -- layer pickers -----------------------------------------------------------------------------
    def refresh_layers(self, *_args) -> None:
        """Fill the pickers with the project's file-based rasters and vectors, keeping the ticks."""
        for widget, kind in ((self.rasters, QgsRasterLayer), (self.annotations, QgsVectorLayer)):
            ticked = set(self._checked_ids(widget))
            widget.blockSignals(True)
            widget.clear()
            for layer in project_layers(kind):
                if layer_file(layer):
                    if kind is QgsVectorLayer and layer.id() not in self._filters_followed:
                        self._filters_followed.add(layer.id())
                        layer.subsetStringChanged.connect(self.changed)  # its filter is the source's ``where``
                    item = QListWidgetItem(layer.name(), widget)
                    item.setData(Qt.ItemDataRole.UserRole, layer.id())
                    item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                    item.setCheckState(Qt.CheckState.Checked if layer.id() in ticked else Qt.CheckState.Unchecked)
            widget.blockSignals(False)
        self.changed()

    @staticmethod
    def _checked_ids(widget: QListWidget) -> list[str]:
        return [widget.item(i).data(Qt.ItemDataRole.UserRole) for i in range(widget.count())
                if widget.item(i).checkState() == Qt.CheckState.Checked]

    def checked(self, widget: QListWidget) -> list:
        project = QgsProject.instance()
        return [layer for layer in map(project.mapLayer, self._checked_ids(widget)) if layer is not None]

    def set_checked(self, widget: QListWidget, layers: list) -> None:
        ids = {layer.id() for layer in layers}
        for i in range(widget.count()):
            item = widget.item(i)
            checked = item.data(Qt.ItemDataRole.UserRole) in ids
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    # -- config and preview ------------------------------------------------------------------------
    def changed(self, *_args) -> None:
        annotations = self.checked(self.annotations)
        if annotations and self.class_field.layer() is not annotations[0]:
            self.class_field.blockSignals(True)
            self.class_field.setLayer(annotations[0])
            if annotations[0].fields().indexOf("class") >= 0:  # the contract's name wins over the first field
                self.class_field.setField("class")
            self.class_field.blockSignals(False)
        self.timer.start()

    def problems(self) -> list[str]:
        if self.mode.currentData() == "catalog":
            return [] if Path(self.catalog.filePath()).is_file() else [tr("Choose the catalog GeoPackage.")]
        rasters, annotations = self.checked(self.rasters), self.checked(self.annotations)
        problems = []
        if not rasters:
            problems.append(tr("Tick at least one raster."))
        if not annotations:
            problems.append(tr("Tick at least one annotation layer."))
        elif not self.class_field.currentField():
            problems.append(tr("Choose the class field."))
        for layer in annotations:
            for raster in rasters:
                problem = crs_mismatch(layer, raster)
                if problem:
                    problems.append(problem)
        if rasters and annotations and not problems and not self.sources():
            problems.append(tr("No annotation layer overlaps the ticked rasters."))
        return problems

    def sources(self) -> list[dict[str, str]]:
        """One source per (raster, annotation layer) pair whose extents overlap."""
        sources = []
        for raster in self.checked(self.rasters):
            for layer in self.checked(self.annotations):
                if not layer.extent().intersects(raster.extent()):
                    continue
                source = {"raster": layer_file(raster), "labels": source_path(layer.source()),
                          "class_field": self.class_field.currentField()}
                name = source_layer_name(layer.source())
                if name:
                    source["layer"] = name
                if layer.subsetString():  # the layer's filter (OGR SQL), so the dataset is what the map shows
                    source["where"] = layer.subsetString()
                sources.append(source)
        return sources

    def config(self) -> dict:
        catalog = None
        if self.mode.currentData() == "catalog":
            context = {name: [low.value(), high.value()] for name, (check, low, high) in self.context.items()
                       if check.isChecked()}
            catalog = {"path": self.catalog.filePath(), "select": {"context": context}}
        return configs.dataset_config(self.sources() if catalog is None else [], catalog, self.level.value(),
                                      self.tile.value(), self.strategy.currentData(), self.val.value(),
                                      self.test.value(), self.seed.value())

    def write_config(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "dataset.yaml"
        path.write_text(configs.dump(self.config()), encoding="utf-8")
        return path

    def preview(self) -> None:
        """Start ``dataset preview`` for the current choices (replacing a preview still running)."""
        if self.preview_call is not None:  # its answer is for choices that no longer hold
            self.preview_call.abort()
            self.preview_call = None
        problems = self.problems()
        if problems:
            self.status.setText(" ".join(problems))
            self.counts = {}
            self.chart.set_counts({}, tr("Nothing to preview"))
            return
        path = self.write_config(self.manager.settings.work_dir() / "preview")
        self.status.setText(tr("counting…"))
        self.preview_call = WorkerCall(self.manager.settings.worker_python(), worker.dataset_preview(str(path)),
                                       parent=self)
        self.preview_call.answered.connect(self._previewed)
        self.preview_call.start()

    def _previewed(self, ok: bool, out: str, error: str) -> None:
        self.preview_call = None
        if not ok:  # the counts shown were for other choices: they go
            self.counts = {}
            self.chart.set_counts({}, tr("Nothing to preview"))
            self.status.setText(tr("Preview failed: {0}").format(error.removeprefix("aifactory: error: ")))
            return
        try:
            self.counts, chips = configs.preview_counts(json.loads(out))
        except (ValueError, KeyError, TypeError) as exc:
            self.counts = {}
            self.chart.set_counts({}, tr("Nothing to preview"))
            self.status.setText(tr("Preview answer not understood: {0}").format(exc))
            return
        total = sum(sum(row.values()) for row in self.counts.values())
        self.status.setText(tr("{0} objects in {1} classes · chips: {2}").format(
            total, len(self.counts), ", ".join(f"{split} {n}" for split, n in chips.items()) or "0"))
        self.chart.set_counts(self.counts)

    def build(self):
        problems = self.problems()
        if problems:
            self.error(problems[0])
            return None
        out = Path(self.output.filePath() or output_folder(self.manager.settings.work_dir(), "dataset"))
        config = self.write_config(out.with_name(out.name + "-config"))
        return self.manager.submit(JobSpec(kind="dataset", title=tr("dataset {0}").format(out.name),
                                           args=worker.dataset_build(str(config), str(out)), cwd=str(out.parent)))
