"""Review dock: step through detections (by score, by uncertainty, by class), zoom to each over the imagery,
accept / reject / relabel from the keyboard, and export the confirmed ones as training labels.

Decisions go straight to the provider (``review``, ``reviewed_class``) unless the layer is in an edit
session, so that nothing is lost if QGIS is closed mid-review. The review resumes there: it opens on the
first unreviewed detection in the chosen order, and a decision moves on to the next unreviewed one (Previous
and Next still walk every detection, to change a decision). The review follows the layer's current filter,
so the RPS dock's threshold also decides what is reviewed: moving the slider reloads the list, once the
slider rests (RELOAD_DELAY_MS): reading 100 000 detections takes seconds, a drag sets dozens of filters.
"""

from __future__ import annotations

import os
from pathlib import Path

from qgis.core import (
    NULL,
    QgsFeature,
    QgsFeatureRequest,
    QgsField,
    QgsFields,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QTimer, QVariant
from qgis.PyQt.QtGui import QKeySequence
from qgis.PyQt.QtWidgets import QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton

from ..qt import QShortcut
from ..ui import missing_fields, tr
from .base import BaseDock
from .navigation import zoom_to_feature

REVIEW_FIELDS = ("score", "class", "review", "reviewed_class")
ORDERS = (("score", "Highest score first"), ("uncertainty", "Most uncertain first (|score − 0.5|)"),
          ("class", "By class, then score"))
EXPORTED = ("accepted", "relabelled")
#: a new filter is read this long after the last one (one reload per slider drag, with its last value)
RELOAD_DELAY_MS = 150


def sort_key(order: str, score: float, label: str) -> tuple:
    if order == "uncertainty":
        return (abs(score - 0.5), -score)
    if order == "class":
        return (label, -score)
    return (-score,)


def review_of(feature: QgsFeature) -> str:
    """The ``review`` of a detection, an empty or NULL one counting as unreviewed."""
    value = feature["review"]
    return str(value) if value not in (NULL, None, "") else "unreviewed"


class ReviewDock(BaseDock):
    def __init__(self, iface, manager) -> None:
        super().__init__(iface, manager, tr("AI Factory — Review"), "AIFactoryReviewDock")
        self.layer: QgsVectorLayer | None = None
        self.order: list[int] = []
        self.index = -1
        self.counts: dict[str, int] = {}
        self.reviews: dict[int, str] = {}  # feature id → its review, as last read or written
        self._subset = ""  # the layer's filter when the list was read
        self._reload = QTimer(self, singleShot=True, interval=RELOAD_DELAY_MS)
        self._reload.timeout.connect(self._reload_now)
        box = QGroupBox(tr("Detections to review"), self)
        form = QFormLayout(box)
        self.detections = QgsMapLayerComboBox(box)
        self.detections.setFilters(QgsMapLayerProxyModel.VectorLayer)
        self.detections.setAllowEmptyLayer(True)
        self.detections.setLayer(None)
        self.detections.layerChanged.connect(self.set_layer)
        self.sort = QComboBox(box)
        for key, label in ORDERS:
            self.sort.addItem(tr(label), key)
        self.sort.currentIndexChanged.connect(lambda: self.set_layer(self.layer))
        self.current = QLabel(tr("no detection"), box)
        self.current.setWordWrap(True)
        self.relabel_to = QComboBox(box)
        self.relabel_to.setEditable(True)
        self.progress = QLabel("", box)
        moves, decisions = QHBoxLayout(), QHBoxLayout()
        actions = ((moves, tr("◀ Previous (P)"), "P", self.previous), (moves, tr("Next (N) ▶"), "N", self.next),
                   (decisions, tr("Accept (A)"), "A", self.accept), (decisions, tr("Reject (R)"), "R", self.reject),
                   (decisions, tr("Relabel (L)"), "L", self.relabel))
        # window-wide while the dock is shown: keys work with the focus on the map canvas
        self.shortcuts = []
        for row, label, key, slot in actions:
            button = QPushButton(label, box)
            button.clicked.connect(slot)
            row.addWidget(button)
            self.shortcuts.append(QShortcut(QKeySequence(key), self, slot))
        self.export_path = QgsFileWidget(box)
        self.export_path.setStorageMode(QgsFileWidget.SaveFile)
        self.export_path.setFilter(tr("GeoPackage (*.gpkg)"))
        export = QPushButton(tr("Export labels"), box)
        export.setToolTip(tr("Write the accepted and relabelled detections, with their reviewed class, as "
                             "training labels"))
        export.clicked.connect(lambda: self.export())
        form.addRow(tr("Layer"), self.detections)
        form.addRow(tr("Order"), self.sort)
        form.addRow(self.current)
        form.addRow(moves)
        form.addRow(decisions)
        form.addRow(tr("Relabel as"), self.relabel_to)
        form.addRow(self.progress)
        form.addRow(tr("Labels file"), self.export_path)
        form.addRow(export)
        self.body.addWidget(box)

    # -- loading -----------------------------------------------------------------------------------
    def set_layer(self, layer) -> None:
        self._fill(layer, None)

    def _fill(self, layer, keep: int | None) -> None:
        """Read the detections of ``layer`` in the chosen order; show ``keep`` (a feature id, without zooming)
        if it is still listed, else zoom to the first unreviewed detection."""
        self._reload.stop()  # this read supersedes a pending one
        self.watch_layer(None)
        self.layer, self.order, self.index, self.counts, self.reviews = None, [], -1, {}, {}
        self.current.setText(tr("no detection"))
        self.progress.setText("")
        if layer is None:
            return
        missing = missing_fields(layer, *REVIEW_FIELDS) if isinstance(layer, QgsVectorLayer) else REVIEW_FIELDS
        if missing:
            self.error(tr("Layer “{0}” lacks the field(s) {1}: review works on detections written by "
                          "aifactory predict.").format(layer.name(), ", ".join(missing)))
            return
        self.layer = layer
        self._subset = layer.subsetString()
        self.watch_layer(layer)
        request = QgsFeatureRequest().setFlags(QgsFeatureRequest.NoGeometry)
        request.setSubsetOfAttributes(["score", "class", "review"], layer.fields())
        rows = []
        order = self.sort.currentData()
        fields = layer.fields()
        at_score, at_class, at_review = (fields.indexOf(name) for name in ("score", "class", "review"))
        for feature in layer.getFeatures(request):  # by index, not by name: seconds on 100 000 detections
            values = feature.attributes()
            score, review = values[at_score], values[at_review]
            score = float(score) if isinstance(score, (int, float)) else 0.0
            rows.append((sort_key(order, score, str(values[at_class])), feature.id()))
            self.reviews[feature.id()] = review if isinstance(review, str) and review else "unreviewed"
        self.order = [fid for _key, fid in sorted(rows)]
        self.relabel_to.clear()
        self.relabel_to.addItems(sorted({str(v) for v in layer.uniqueValues(layer.fields().indexOf("class"))
                                         if v != NULL}))
        self._show_progress()
        if keep in self.order:
            self.go(self.order.index(keep), zoom=False)
            return
        pending = self._pending_after(-1)
        self.go(pending if pending is not None else 0)

    def layer_changed(self) -> None:
        """A new filter is read once it rests (:data:`RELOAD_DELAY_MS`); discarded edits at once."""
        if self.layer is not None and self.layer.subsetString() != self._subset:
            self._reload.start()  # (re)started: a slider drag ends in one reload, with its last filter
        else:
            self._reload_now()

    def _reload_now(self) -> None:
        """Read the list again without moving the map while the detection shown is still in it: dragging the
        RPS slider must not make the canvas jump."""
        shown = self.order[self.index] if self.layer is not None and 0 <= self.index < len(self.order) else None
        self._fill(self.layer, shown)

    def _settle(self) -> None:
        """A key pressed while a new filter waits: read it first, so the decision is on a listed detection."""
        if self._reload.isActive():
            self._reload_now()

    def layer_gone(self) -> None:
        self.set_layer(None)

    # -- navigation --------------------------------------------------------------------------------
    def go(self, index: int, zoom: bool = True) -> None:
        if self.layer is None or not self.order:
            if self.layer is not None:
                self.current.setText(tr("no detection"))
            return
        self.index = max(0, min(index, len(self.order) - 1))
        feature = self.feature()
        if not feature.isValid():  # deleted in an edit session since the list was read: drop it
            self.reviews.pop(self.order.pop(self.index), None)
            self._show_progress()
            self.go(self.index, zoom)
            return
        self.current.setText(tr("{0}/{1} · {2} · score {3:.3f} · {4}").format(
            self.index + 1, len(self.order), feature["class"], float(feature["score"] or 0),
            feature["review"] or "unreviewed"))
        if zoom:
            zoom_to_feature(self.iface.mapCanvas(), self.layer, feature)

    def feature(self) -> QgsFeature:
        assert self.layer is not None
        return self.layer.getFeature(self.order[self.index])

    def next(self) -> None:
        self._settle()
        self.go(self.index + 1)

    def previous(self) -> None:
        self._settle()
        self.go(self.index - 1)

    def _pending_after(self, index: int) -> int | None:
        """The position of the first unreviewed detection after ``index`` in the order, if any."""
        for position in range(index + 1, len(self.order)):
            if self.reviews.get(self.order[position], "unreviewed") == "unreviewed":
                return position
        return None

    # -- decisions ---------------------------------------------------------------------------------
    def accept(self) -> None:
        self._settle()
        if self.layer is None or self.index < 0 or not self.order:
            return
        feature = self.feature()
        if feature.isValid():
            self.decide("accepted", str(feature["class"]))
        else:
            self.go(self.index)  # drops it and shows the next one

    def reject(self) -> None:
        self.decide("rejected", None)

    def relabel(self) -> None:
        label = self.relabel_to.currentText().strip()
        if not label:
            self.error(tr("Type or pick the class to relabel to."))
            return
        self.decide("relabelled", label)

    def decide(self, review: str, reviewed_class: str | None) -> None:
        """Write the decision of the current detection and move to the next unreviewed one."""
        self._settle()
        if self.layer is None or self.index < 0 or not self.order:
            return
        feature = self.feature()
        if not feature.isValid():
            self.go(self.index)  # drops it and shows the next one
            return
        if self.layer.readOnly():
            self.error(tr("Layer “{0}” is read-only in this project: the review is not written.")
                       .format(self.layer.name()))
            return
        fields = self.layer.fields()
        changes = {fields.indexOf("review"): review,
                   fields.indexOf("reviewed_class"): reviewed_class if reviewed_class is not None else NULL}
        if self.layer.isEditable():
            for index, value in changes.items():
                self.layer.changeAttributeValue(feature.id(), index, value)
        elif not self.layer.dataProvider().changeAttributeValues({feature.id(): changes}):
            self.error(tr("Could not write the review to “{0}” (read-only file?)").format(self.layer.name()))
            return
        self.reviews[feature.id()] = review
        self.layer.triggerRepaint()
        self._show_progress()
        pending = self._pending_after(self.index)
        self.go(pending if pending is not None else self.index + 1)

    def _show_progress(self) -> None:
        self.counts = {}
        for review in self.reviews.values():
            self.counts[review] = self.counts.get(review, 0) + 1
        total = sum(self.counts.values())
        done = total - self.counts.get("unreviewed", 0)
        self.progress.setText(tr("{0} of {1} reviewed · {2} accepted · {3} rejected · {4} relabelled").format(
            done, total, self.counts.get("accepted", 0), self.counts.get("rejected", 0),
            self.counts.get("relabelled", 0)))

    # -- export ------------------------------------------------------------------------------------
    def export(self, path: str = "") -> int:
        """Write accepted and relabelled detections (with their reviewed class) as a labels GeoPackage."""
        path = path or self.export_path.filePath()
        if self.layer is None or not path:
            self.error(tr("Choose a reviewed detections layer and the labels file to write."))
            return 0
        if self.layer.isEditable() and self.layer.isModified():
            self.error(tr("Save the edits of “{0}” first: the labels are exported from the file.")
                       .format(self.layer.name()))
            return 0
        if Path(path).resolve() == Path(self.layer.source().split("|")[0]).resolve():
            self.error(tr("{0} is the detections file itself: choose another labels file.").format(path))
            return 0
        fields = QgsFields()
        fields.append(QgsField("class", QVariant.String))
        fields.append(QgsField("score", QVariant.Double))
        fields.append(QgsField("review", QVariant.String))
        fields.append(QgsField("source_fid", QVariant.LongLong))
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        options.layerName = "labels"
        tmp = Path(path).with_name(f".{Path(path).stem}.part.gpkg")  # renamed when complete: never half-written
        writer = QgsVectorFileWriter.create(str(tmp), fields, self.layer.wkbType(), self.layer.crs(),
                                            QgsProject.instance().transformContext(), options)
        if writer.hasError() != QgsVectorFileWriter.NoError:
            self.error(tr("Cannot write {0}: {1}").format(path, writer.errorMessage()))
            return 0
        request = QgsFeatureRequest().setFilterExpression(f'"review" IN {tuple(EXPORTED)!r}')
        written = 0
        for feature in self.layer.dataProvider().getFeatures(request):
            label = feature["reviewed_class"] if feature["reviewed_class"] not in (NULL, None, "") else feature["class"]
            out = QgsFeature(fields)
            out.setGeometry(feature.geometry())
            out.setAttributes([str(label), feature["score"], feature["review"], feature.id()])
            writer.addFeature(out)
            written += 1
        del writer  # closes the file
        os.replace(tmp, path)
        self.info(tr("{0} labels written to {1}").format(written, path))
        return written

