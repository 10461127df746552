"""RPS dock: a score slider and a minimum-area slider re-filter the detections layer live (subset string);
with an RPS table from the worker, live precision/recall/F1 and a PR curve follow the slider.

Counting kept features is a ``SELECT COUNT`` in the provider (fast on GeoPackage); precision and recall
come from ``points.csv`` (see :mod:`aifactory_qgis.rps`), never from matching in the QGIS process.
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsFeatureRequest, QgsMapLayerProxyModel, QgsVectorLayer
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
)

from .. import worker
from ..files import source_layer_name
from ..jobs.spec import JobSpec
from ..rps import RpsTable, read_operating_point, save_operating_point, subset_string
from ..ui import crs_mismatch, layer_file, missing_fields, tr
from ..widgets.charts import PRCurve
from .base import BaseDock
from .jobs import output_folder

STEPS = 100  # score slider resolution: 0.01


class RpsDock(BaseDock):
    def __init__(self, iface, manager) -> None:
        super().__init__(iface, manager, tr("AI Factory — Operating point (RPS)"), "AIFactoryRpsDock")
        self.table: RpsTable | None = None
        self.layer: QgsVectorLayer | None = None
        self._total = 0
        self._max_area = 0.0
        self.base_op: dict | None = None  # the operating point that came with the table, if any
        box = QGroupBox(tr("Detections"), self)
        form = QFormLayout(box)
        self.detections = QgsMapLayerComboBox(box)
        self.detections.setFilters(QgsMapLayerProxyModel.VectorLayer)
        self.detections.setAllowEmptyLayer(True)
        self.detections.setLayer(None)
        self.detections.layerChanged.connect(self.set_layer)
        self.score = QSlider(Qt.Orientation.Horizontal, box)
        self.score.setRange(0, STEPS)
        self.score_box = QDoubleSpinBox(box, minimum=0, maximum=1, singleStep=0.01, decimals=2, maximumWidth=90)
        self.area = QSlider(Qt.Orientation.Horizontal, box)
        self.area.setRange(0, 1000)
        self.area_box = QDoubleSpinBox(box, minimum=0, maximum=99999, decimals=1, maximumWidth=90)
        self.score.valueChanged.connect(lambda v: self.score_box.setValue(v / STEPS))
        self.score_box.valueChanged.connect(self._score_edited)
        self.area.valueChanged.connect(lambda v: self.area_box.setValue(self._area_value(v)))
        self.area_box.valueChanged.connect(self._area_edited)
        self.kept = QLabel("", box)
        form.addRow(tr("Layer"), self.detections)
        form.addRow(tr("Score ≥"), self._pair(self.score, self.score_box))
        form.addRow(tr("Area ≥"), self._pair(self.area, self.area_box))
        form.addRow(tr("Kept"), self.kept)
        self.body.addWidget(box)

        quality = QGroupBox(tr("Precision / recall"), self)
        form = QFormLayout(quality)
        self.points = QgsFileWidget(quality)
        self.points.setFilter(tr("RPS table (points.csv *.csv)"))
        self.points.fileChanged.connect(self.load_table)
        self.truth = QgsMapLayerComboBox(quality)
        self.truth.setFilters(QgsMapLayerProxyModel.VectorLayer)
        self.truth.setAllowEmptyLayer(True)
        self.truth.setLayer(None)
        self.compute = QPushButton(tr("Compute RPS against truth"), quality)
        self.compute.clicked.connect(self.launch_rps)
        self.metrics = QLabel(tr("no RPS table"), quality)
        self.curve = PRCurve(quality)
        load = QPushButton(tr("Load…"), quality)
        load.clicked.connect(lambda: self.load_operating_point())
        save = QPushButton(tr("Save…"), quality)
        save.clicked.connect(lambda: self.save_operating_point())
        form.addRow(tr("RPS table"), self.points)
        form.addRow(tr("Truth layer"), self.truth)
        form.addRow(self.compute)
        form.addRow(self.metrics)
        form.addRow(self.curve)
        form.addRow(tr("Operating point"), self._pair(load, save))
        self.body.addWidget(quality)
        self.score_box.setValue(0.5)

    @staticmethod
    def _pair(a, b) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(a, 2)
        row.addWidget(b, 1)
        return row

    def _area_value(self, tick: int) -> float:
        """Quadratic slider: fine steps for small objects, still reaching the largest area."""
        return round(self._max_area * (tick / 1000) ** 2, 1)

    def _score_edited(self, value: float) -> None:
        self.score.blockSignals(True)
        self.score.setValue(round(value * STEPS))
        self.score.blockSignals(False)
        self.apply()

    def _area_edited(self, value: float) -> None:
        self.area.blockSignals(True)
        self.area.setValue(round(1000 * (value / self._max_area) ** 0.5) if self._max_area else 0)
        self.area.blockSignals(False)
        self.apply()

    def set_layer(self, layer) -> None:
        """Attach to a detections layer (clearing the filter on the previous one)."""
        if self.layer is not None and self.layer is not layer:
            self._clear_filter(self.layer)
        self.layer = None
        if layer is None:
            self.kept.setText("")
            return
        if not isinstance(layer, QgsVectorLayer) or missing_fields(layer, "score"):
            self.kept.setText(tr("no score field"))
            self.error(tr("Layer “{0}” has no “score” field: choose a detections layer written by "
                          "aifactory predict.").format(layer.name()))
            return
        self.layer = layer
        self._clear_filter(layer)
        self._total = layer.featureCount()
        has_area = not missing_fields(layer, "area")
        self._max_area = float(layer.maximumValue(layer.fields().indexOf("area")) or 0.0) if has_area else 0.0
        self.area.setEnabled(has_area)
        self.area_box.setEnabled(self.area.isEnabled())
        self.apply()

    @staticmethod
    def _clear_filter(layer: QgsVectorLayer) -> None:
        try:
            if layer.subsetString():
                layer.setSubsetString("")
        except RuntimeError:  # layer already deleted by QGIS
            pass

    def apply(self) -> None:
        """Set the subset string, count what is kept, update precision/recall at the slider."""
        score, area = self.score_box.value(), self.area_box.value() if self.area_box.isEnabled() else 0.0
        if self.layer is not None:
            if not self.layer.setSubsetString(subset_string(score, area)):
                self.error(tr("Layer “{0}” refused the filter (is it a GeoPackage or shapefile?)")
                           .format(self.layer.name()))
                return
            self.kept.setText(tr("{0} of {1} detections").format(self.layer.featureCount(), self._total))
            self.layer.triggerRepaint()
        if self.table is not None:
            point = self.table.at(score, area)
            self.metrics.setText(tr("precision {0:.3f} · recall {1:.3f} · F1 {2:.3f}").format(
                point.precision, point.recall, point.f1))
            self.curve.set_current((point.recall, point.precision))

    def load_table(self, path: str) -> None:
        if not path:
            return
        try:
            self.table = RpsTable.read(path)
        except (OSError, ValueError, KeyError) as exc:
            self.table = None
            self.metrics.setText(tr("no RPS table"))
            self.curve.set_curve([])
            self.error(tr("Cannot read the RPS table: {0}").format(exc))
            return
        self.curve.set_curve([(p.recall, p.precision) for p in self.table.curve(self.area_box.value())])
        beside = Path(path).with_name("operating_point.json")
        if beside.is_file():
            self.load_operating_point(str(beside))  # start where the worker's search ended
        else:
            self.apply()

    def launch_rps(self):
        """Run ``aifactory rps`` for the chosen detections and truth; its points.csv loads when done."""
        truth = self.truth.currentLayer()
        if self.layer is None or truth is None:
            self.error(tr("Choose a detections layer and a truth layer first."))
            return None
        problem = crs_mismatch(truth, self.layer)
        if problem:
            self.error(problem)
            return None
        pred, truth_file = layer_file(self.layer), layer_file(truth)
        if not pred or not truth_file:
            self.error(tr("Both layers must be files (GeoPackage, shapefile…) for the worker to read them."))
            return None
        out = output_folder(self.manager.settings.work_dir(), "rps")
        args = worker.rps(pred, truth_file, str(out), self.sweeps(), source_layer_name(truth.source()))
        job = self.manager.submit(JobSpec(kind="rps", title=tr("RPS of {0}").format(self.layer.name()), args=args,
                                          cwd=str(out.parent)))
        job.finished.connect(lambda status: status == "ok" and self.points.setFilePath(str(out / "points.csv")))
        return job

    def sweeps(self) -> list[str]:
        """Score steps of 0.05, and (when the layer has areas) the area quartiles, so the area slider has
        precision/recall too."""
        sweeps = [worker.DEFAULT_SWEEP]
        if self.layer is not None and not missing_fields(self.layer, "area"):
            index = self.layer.fields().indexOf("area")
            request = QgsFeatureRequest().setFlags(QgsFeatureRequest.NoGeometry).setSubsetOfAttributes([index])
            areas = sorted(float(f[index]) for f in self.layer.dataProvider().getFeatures(request) if f[index])
            if areas:
                levels = sorted({0.0, *(round(areas[len(areas) * q // 4], 1) for q in (1, 2, 3))})
                sweeps.append("min_area=" + ",".join(f"{a:g}" for a in levels))
        return sweeps

    def load_operating_point(self, path: str = "") -> None:
        path = path or QFileDialog.getOpenFileName(self, tr("Operating point"), "", "JSON (*.json)")[0]
        if not path:
            return
        try:
            self.base_op = read_operating_point(path)
        except ValueError as exc:
            self.error(str(exc))
            return
        self.area_box.setValue(float(self.base_op.get("min_area") or 0.0))
        self.score_box.setValue(float(self.base_op["score"]))
        self.apply()

    def save_operating_point(self, path: str = "") -> None:
        path = path or QFileDialog.getSaveFileName(self, tr("Operating point"), "operating_point.json",
                                                   "JSON (*.json)")[0]
        if not path:
            return
        score, area = self.score_box.value(), self.area_box.value()
        point = self.table.at(score, area) if self.table else None
        save_operating_point(Path(path), score, area, point, self.base_op)
        self.info(tr("Operating point saved to {0}").format(path))
