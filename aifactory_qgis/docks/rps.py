"""RPS dock: a score slider and a minimum-area slider re-filter the detections layer live (subset string);
with an RPS table from the worker, live precision/recall/F1 and a PR curve follow the slider.

Counting kept features is a ``SELECT COUNT`` in the provider (fast on GeoPackage); precision and recall
come from ``points.csv`` (see :mod:`aifactory_qgis.rps`), never from matching in the QGIS process.

A filter the layer already had (one class, one image) is kept in front of the slider's terms and given back
when the dock leaves the layer. Areas are in the layer's own units, degrees² for a geographic layer: the
area box takes as many decimals as the largest area needs.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from qgis.core import QgsFeatureRequest, QgsFieldProxyModel, QgsMapLayerProxyModel, QgsVectorLayer
from qgis.gui import QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
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
from ..rps import (
    RpsTable,
    area_decimals,
    number_text,
    parse_subset,
    read_operating_point,
    save_operating_point,
    subset_string,
)
from ..ui import crs_mismatch, layer_file, missing_fields, tr
from ..widgets.charts import PRCurve
from .base import BaseDock
from .jobs import output_folder

STEPS = 100  # score slider resolution: 0.01
#: score fields recognised without asking (the contract's ``score`` first); any numeric field can be chosen
SCORE_NAMES = ("score", "confidence", "conf", "probability", "prob")


class RpsDock(BaseDock):
    def __init__(self, iface, manager) -> None:
        super().__init__(iface, manager, tr("AI Factory — Operating point (RPS)"), "AIFactoryRpsDock")
        self.table: RpsTable | None = None
        self.layer: QgsVectorLayer | None = None
        self._total = 0
        self._max_area = 0.0
        self._base = ""  # the layer's own filter, kept in front of the slider's terms and restored on leaving
        self._applied = ""  # the filter this dock set last (its own subsetStringChanged is not news)
        self._refused = False  # the last filter was refused: say it once, not at every slider step
        self.base_op: dict | None = None  # the operating point that came with the table, if any
        box = QGroupBox(tr("Detections"), self)
        form = QFormLayout(box)
        self.detections = QgsMapLayerComboBox(box)
        self.detections.setFilters(QgsMapLayerProxyModel.VectorLayer)
        self.detections.setAllowEmptyLayer(True)
        self.detections.setLayer(None)
        self.detections.layerChanged.connect(self.set_layer)
        self.score_field = QgsFieldComboBox(box)
        self.score_field.setFilters(QgsFieldProxyModel.Numeric)
        self.score_field.setToolTip(tr("The detections' score (0–1): “score” for layers written by aifactory "
                                       "predict"))
        self.score_field.fieldChanged.connect(lambda _name: self.set_layer(self.detections.currentLayer()))
        self.score = QSlider(Qt.Orientation.Horizontal, box)
        self.score.setRange(0, STEPS)
        # 3 decimals: an operating point of a finer sweep (0.125) is shown and applied as chosen, not as 0.13
        self.score_box = QDoubleSpinBox(box, minimum=0, maximum=1, singleStep=0.01, decimals=3, maximumWidth=90)
        self.area = QSlider(Qt.Orientation.Horizontal, box)
        self.area.setRange(0, 1000)
        # no upper limit of its own: the largest area of the layer (fields, lakes) must be reachable
        self.area_box = QDoubleSpinBox(box, minimum=0, maximum=1e15, decimals=1, maximumWidth=140)
        self.score.valueChanged.connect(lambda v: self.score_box.setValue(v / STEPS))
        self.score_box.valueChanged.connect(self._score_edited)
        self.area.valueChanged.connect(lambda v: self.area_box.setValue(self._area_value(v)))
        self.area_box.valueChanged.connect(self._area_edited)
        self.kept = QLabel("", box)
        form.addRow(tr("Layer"), self.detections)
        form.addRow(tr("Score field"), self.score_field)
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
        return round(self._max_area * (tick / 1000) ** 2, self.area_box.decimals())

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
        """Attach to a detections layer (giving the previous one its own filter back)."""
        same = self.layer is not None and self.layer is layer
        if self.layer is not None and not same:
            self._leave()
        self.watch_layer(None)
        self.layer = None
        self._refused = False
        if layer is None or not isinstance(layer, QgsVectorLayer):
            self.kept.setText("")
            self.score_field.blockSignals(True)
            self.score_field.setLayer(None)
            self.score_field.blockSignals(False)
            return
        score_field = self._score_field_of(layer)
        if not score_field:
            self.kept.setText(tr("no score field"))
            self.error(tr("Layer “{0}” has no “score” field: choose a detections layer written by aifactory "
                          "predict, or its score field (0–1) under “Score field”.").format(layer.name()))
            return
        self.layer = layer
        current = layer.subsetString()
        ours = None
        if not (same and current == self._applied):  # else: still our filter, self._base still the layer's own
            ours = parse_subset(current, score_field) if current else None
            self._base = ours[0] if ours is not None else current
        self._applied = ""
        if layer.subsetString() != self._base:
            layer.setSubsetString(self._base)
        self._total = layer.featureCount()
        has_area = not missing_fields(layer, "area")
        self._max_area = float(layer.maximumValue(layer.fields().indexOf("area")) or 0.0) if has_area else 0.0
        self.area.setEnabled(has_area)
        self.area_box.setEnabled(has_area)
        self.area_box.blockSignals(True)
        self.area_box.setDecimals(area_decimals(self._max_area))
        self.area_box.setSingleStep(float(number_text(self._max_area / 1000)) if self._max_area > 0 else 1.0)
        self.area_box.blockSignals(False)
        self.watch_layer(layer)
        with contextlib.suppress(TypeError):
            layer.editingStopped.connect(self.apply, Qt.ConnectionType.UniqueConnection)
        if ours is not None:  # a layer still filtered by the slider: show where it is, do not wrap it again
            self._set_boxes(ours[1], ours[2])
        self.apply()

    def _score_field_of(self, layer: QgsVectorLayer) -> str:
        """The score field: the one chosen for this layer, else a known name, else "" (the user must choose)."""
        chosen = self.score_field.currentField() if self.score_field.layer() is layer else ""
        if self.score_field.layer() is not layer:
            self.score_field.blockSignals(True)
            self.score_field.setLayer(layer)
            self.score_field.setField("")
            self.score_field.blockSignals(False)
        names = {field.name(): field for field in layer.fields()}
        if not chosen:
            chosen = next((n for n in SCORE_NAMES if n in names and names[n].isNumeric()), "")
        if chosen and self.score_field.currentField() != chosen:
            self.score_field.blockSignals(True)
            self.score_field.setField(chosen)
            self.score_field.blockSignals(False)
        return chosen

    def _set_boxes(self, score: float, min_area: float) -> None:
        for widget in (self.score, self.score_box, self.area, self.area_box):
            widget.blockSignals(True)
        self.score_box.setValue(score)
        self.score.setValue(round(score * STEPS))
        if self.area_box.isEnabled():
            self.area_box.setValue(min_area)
            self.area.setValue(round(1000 * (min_area / self._max_area) ** 0.5) if self._max_area else 0)
        for widget in (self.score, self.score_box, self.area, self.area_box):
            widget.blockSignals(False)

    def _leave(self) -> None:
        """Give the layer its own filter back (nothing to do for a layer QGIS already deleted)."""
        layer = self.layer
        self.watch_layer(None)
        self.layer = None
        try:
            with contextlib.suppress(TypeError):
                layer.editingStopped.disconnect(self.apply)
            if layer.subsetString() == self._applied and self._applied != self._base:
                layer.setSubsetString(self._base)
        except RuntimeError:  # layer already deleted by QGIS
            pass
        self._applied = self._base = ""

    def layer_changed(self) -> None:
        """Someone else changed the layer's filter (the query builder): take it as the layer's own filter."""
        layer = self.layer
        if layer is not None and layer.subsetString() != self._applied:
            self._applied = ""
            self.set_layer(layer)

    def layer_gone(self) -> None:
        """The layer is being removed from the project: let go of it before its C++ object dies."""
        self.layer = None
        self._applied = self._base = ""
        self.kept.setText("")

    def _refuse(self, text: str) -> None:
        """The filter was not set: say why once (a slider drag must not stack one message per step)."""
        self.kept.setText(tr("not filtered"))
        if not self._refused:
            self._refused = True
            self.error(text)

    def apply(self) -> None:
        """Set the subset string, count what is kept, update precision/recall at the slider."""
        score, area = self.score_box.value(), self.area_box.value() if self.area_box.isEnabled() else 0.0
        if self.layer is not None:
            text = subset_string(score, area, self.score_field.currentField() or "score", base=self._base)
            if text != self.layer.subsetString():
                if self.layer.isEditable():
                    self._refuse(tr("Layer “{0}” is in an edit session: QGIS filters it again once the edits "
                                    "are saved or discarded.").format(self.layer.name()))
                    return
                self._applied = text  # before: setSubsetString announces it at once
                if not self.layer.setSubsetString(text):
                    self._applied = ""
                    self._refuse(tr("Layer “{0}” refused the filter {1} (is it a GeoPackage or shapefile?)")
                                 .format(self.layer.name(), text))
                    return
            self._applied = text
            self._refused = False
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
        beside = Path(path).with_name("operating_point.json")
        chosen = None
        if beside.is_file():
            try:
                chosen = read_operating_point(beside)
            except ValueError as exc:
                self.error(str(exc))
        try:
            self.table = RpsTable.read(path, chosen)
        except (OSError, ValueError, KeyError) as exc:
            self.table = None
            self.metrics.setText(tr("no RPS table"))
            self.curve.set_curve([])
            self.error(tr("Cannot read the RPS table: {0}").format(exc))
            return
        self.curve.set_curve([(p.recall, p.precision) for p in self.table.curve(self.area_box.value())])
        if chosen is not None:
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
        args = worker.rps(pred, truth_file, str(out), self.sweeps(), source_layer_name(truth.source()),
                          self.score_field.currentField() or "score")
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
                # 3 significant digits, not decimals: quartiles in degrees² must not all round to 0
                levels = sorted({0.0, *(float(f"{areas[len(areas) * q // 4]:.3g}") for q in (1, 2, 3))})
                sweeps.append("min_area=" + ",".join(number_text(a) for a in levels))
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
        table = self.points.filePath()
        if self.table is not None and Path(table).is_file():  # the figures of this point's NMS and post-processing
            try:
                self.table = RpsTable.read(table, self.base_op)
            except (OSError, ValueError, KeyError) as exc:
                self.error(tr("Cannot read the RPS table: {0}").format(exc))
            self.curve.set_curve([(p.recall, p.precision) for p in self.table.curve(self.area_box.value())])
        self._set_boxes(float(self.base_op["score"]), float(self.base_op.get("min_area") or 0.0))
        self.apply()
        extra = [tr("NMS IoU {0:g}").format(self.base_op["nms_iou"])] if self.base_op.get("nms_iou") else []
        extra += [f"{name} {value:g}" for name, value in (self.base_op.get("postprocess") or {}).items()]
        if extra:
            self.info(tr("The operating point also applies {0}: the figures shown include it, the map shows the "
                         "detections before it.").format(", ".join(extra)))

    def save_operating_point(self, path: str = "") -> None:
        path = path or QFileDialog.getSaveFileName(self, tr("Operating point"), "operating_point.json",
                                                   "JSON (*.json)")[0]
        if not path:
            return
        score, area = self.score_box.value(), self.area_box.value() if self.area_box.isEnabled() else 0.0
        point = self.table.at(score, area) if self.table else None
        save_operating_point(Path(path), score, area, point, self.base_op)
        self.info(tr("Operating point saved to {0}").format(path))
