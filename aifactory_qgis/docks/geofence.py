"""Geofence dock: a GeoPackage layer ``geofences`` (name, mode include/exclude, enabled) drawn with QGIS's
own digitizing tools; list, toggle, and pick the geofences a prediction job uses.

The chosen geofences are written next to the layer as the two files ``aifactory predict`` reads:
``<name>_include.gpkg`` (``--geofence``: predict only there) and ``<name>_exclude.gpkg`` (``--exclude``:
never there); the Jobs dock receives their paths (empty when a mode has no chosen geofence).
"""

from __future__ import annotations

import os
from pathlib import Path

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsDefaultValue,
    QgsFeatureRequest,
    QgsField,
    QgsFields,
    QgsFillSymbol,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRendererCategory,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, QVariant, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
)

from ..ui import crs_mismatch, layer_file, missing_fields, tr
from .base import BaseDock
from .navigation import start_digitizing

LAYER = "geofences"
MODES = ("include", "exclude")
STYLE = {"include": {"outline_color": "#2e7d32", "outline_width": "0.8", "color": "46,125,50,40"},
         "exclude": {"outline_color": "#c62828", "outline_width": "0.8", "color": "198,40,40,60"}}


def geofence_fields() -> QgsFields:
    fields = QgsFields()
    fields.append(QgsField("name", QVariant.String))
    fields.append(QgsField("mode", QVariant.String))
    fields.append(QgsField("enabled", QVariant.Bool))
    return fields


def create_geofence_file(path: str, crs: QgsCoordinateReferenceSystem) -> str:
    """Create an empty ``geofences`` layer in a new GeoPackage; returns an error message or ``""``."""
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = LAYER
    writer = QgsVectorFileWriter.create(path, geofence_fields(), QgsWkbTypes.MultiPolygon, crs,
                                        QgsProject.instance().transformContext(), options)
    error = writer.errorMessage() if writer.hasError() != QgsVectorFileWriter.NoError else ""
    del writer
    return error


class GeofenceDock(BaseDock):
    geofencesChosen = pyqtSignal(str, str)  # include file, exclude file ("" for none)

    def __init__(self, iface, manager) -> None:
        super().__init__(iface, manager, tr("AI Factory — Geofences"), "AIFactoryGeofenceDock")
        self.layer: QgsVectorLayer | None = None
        box = QGroupBox(tr("Geofence layer"), self)
        form = QFormLayout(box)
        self.path = QgsFileWidget(box)
        self.path.setStorageMode(QgsFileWidget.SaveFile)
        self.path.setFilter(tr("GeoPackage (*.gpkg)"))
        self.raster = QgsMapLayerComboBox(box)
        self.raster.setFilters(QgsMapLayerProxyModel.RasterLayer)
        new, open_ = QPushButton(tr("New"), box), QPushButton(tr("Open"), box)
        new.clicked.connect(lambda: self.create())
        open_.clicked.connect(lambda: self.open())
        form.addRow(tr("File"), self.path)
        form.addRow(tr("Raster (CRS)"), self.raster)
        form.addRow(self._row(new, open_))
        self.body.addWidget(box)

        fences = QGroupBox(tr("Geofences"), self)
        form = QFormLayout(fences)
        self.tree = QTreeWidget(fences)
        self.tree.setHeaderLabels([tr("name"), tr("mode"), tr("enabled")])
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.setRootIsDecorated(False)
        self.tree.itemChanged.connect(self._item_changed)
        draw, save = QPushButton(tr("Draw"), fences), QPushButton(tr("Save edits"), fences)
        draw.clicked.connect(self.draw)
        save.clicked.connect(self.save)
        include, exclude = QPushButton(tr("Include"), fences), QPushButton(tr("Exclude"), fences)
        include.clicked.connect(lambda: self.set_mode("include"))
        exclude.clicked.connect(lambda: self.set_mode("exclude"))
        use = QPushButton(tr("Use selected for prediction"), fences)
        use.clicked.connect(lambda: self.use_selected())
        form.addRow(self.tree)
        form.addRow(self._row(draw, save))
        form.addRow(self._row(include, exclude))
        form.addRow(use)
        self.body.addWidget(fences)

    @staticmethod
    def _row(*buttons) -> QHBoxLayout:
        row = QHBoxLayout()
        for button in buttons:
            row.addWidget(button)
        return row

    # -- file --------------------------------------------------------------------------------------
    def create(self, path: str = "") -> QgsVectorLayer | None:
        path = path or self.path.filePath()
        if not path:
            self.error(tr("Choose where to create the geofence GeoPackage."))
            return None
        raster = self.raster.currentLayer()
        crs = raster.crs() if raster else QgsProject.instance().crs()
        error = create_geofence_file(path, crs)
        if error:
            self.error(tr("Cannot create {0}: {1}").format(path, error))
            return None
        return self.open(path)

    def open(self, path: str = "") -> QgsVectorLayer | None:
        path = path or self.path.filePath()
        layer = QgsVectorLayer(f"{path}|layername={LAYER}", tr("geofences"), "ogr")
        if not layer.isValid() or missing_fields(layer, "name", "mode", "enabled"):
            self.error(tr("{0} has no “{1}” layer with fields name, mode, enabled.").format(path, LAYER))
            return None
        self.path.setFilePath(path)
        fields = layer.fields()
        layer.setDefaultValueDefinition(fields.indexOf("mode"), QgsDefaultValue("'include'"))
        layer.setDefaultValueDefinition(fields.indexOf("enabled"), QgsDefaultValue("true"))
        layer.setDefaultValueDefinition(fields.indexOf("name"), QgsDefaultValue("'geofence ' || substr(uuid(), 2, 8)"))
        layer.setRenderer(QgsCategorizedSymbolRenderer("mode", [
            QgsRendererCategory(mode, QgsFillSymbol.createSimple(STYLE[mode]), mode) for mode in MODES]))
        QgsProject.instance().addMapLayer(layer)
        self.layer = layer
        for signal in (layer.afterCommitChanges, layer.featureAdded, layer.attributeValueChanged,
                       layer.featureDeleted):
            signal.connect(self.refresh)
        self.refresh()
        return layer

    # -- list --------------------------------------------------------------------------------------
    def refresh(self, *_args) -> None:
        self.tree.blockSignals(True)
        self.tree.clear()
        if self.layer is not None:
            for feature in self.layer.getFeatures(QgsFeatureRequest().setFlags(QgsFeatureRequest.NoGeometry)):
                item = QTreeWidgetItem(self.tree, [str(feature["name"] or ""), str(feature["mode"] or ""), ""])
                item.setData(0, Qt.ItemDataRole.UserRole, feature.id())
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(2, Qt.CheckState.Checked if feature["enabled"] else Qt.CheckState.Unchecked)
        self.tree.blockSignals(False)

    def _write(self, fid: int, field: str, value) -> None:
        assert self.layer is not None
        index = self.layer.fields().indexOf(field)
        if self.layer.isEditable():
            self.layer.changeAttributeValue(fid, index, value)
        else:
            self.layer.dataProvider().changeAttributeValues({fid: {index: value}})
            self.layer.triggerRepaint()

    def _item_changed(self, item: QTreeWidgetItem, column: int) -> None:
        if column == 2 and self.layer is not None:
            self._write(item.data(0, Qt.ItemDataRole.UserRole), "enabled", item.checkState(2) == Qt.CheckState.Checked)

    def set_mode(self, mode: str) -> None:
        for item in self.tree.selectedItems():
            self._write(item.data(0, Qt.ItemDataRole.UserRole), "mode", mode)
        self.refresh()

    def draw(self) -> None:
        if self.layer is None:
            self.error(tr("Create or open a geofence GeoPackage first."))
            return
        start_digitizing(self.iface, self.layer)

    def save(self) -> None:
        if self.layer is not None and self.layer.isEditable() and not self.layer.commitChanges():
            self.error(tr("Could not save the geofences: {0}").format("; ".join(self.layer.commitErrors())))

    # -- selection for prediction ------------------------------------------------------------------
    def use_selected(self) -> tuple[str, str]:
        """Write the selected, enabled geofences for ``predict``; returns the (include, exclude) files."""
        if self.layer is None:
            self.error(tr("Create or open a geofence GeoPackage first."))
            return "", ""
        raster = self.raster.currentLayer()
        problem = crs_mismatch(self.layer, raster) if raster else None
        if problem:
            self.error(problem)
            return "", ""
        fids = [item.data(0, Qt.ItemDataRole.UserRole) for item in self.tree.selectedItems()
                if item.checkState(2) == Qt.CheckState.Checked]
        if not fids:
            self.error(tr("Select at least one enabled geofence."))
            return "", ""
        self.save()
        source = Path(layer_file(self.layer))
        paths = []
        for mode in MODES:
            chosen = [fid for fid in fids if self.layer.getFeature(fid)["mode"] == mode]
            paths.append(self._write_selection(chosen, source.with_name(f"{source.stem}_{mode}.gpkg"))
                         if chosen else "")
        if not any(paths):  # writing failed (already reported)
            return "", ""
        include, exclude = paths
        self.geofencesChosen.emit(include, exclude)
        self.info(tr("{0} geofence(s) will be used by the next prediction").format(len(fids)))
        return include, exclude

    def _write_selection(self, fids: list[int], target: Path) -> str:
        """The features ``fids`` as a GeoPackage ``target`` (written aside, then renamed)."""
        assert self.layer is not None
        tmp = target.with_name(f".{target.stem}.part.gpkg")
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        options.layerName = LAYER
        options.onlySelectedFeatures = True
        previous = self.layer.selectedFeatureIds()
        self.layer.selectByIds(fids)
        result = QgsVectorFileWriter.writeAsVectorFormatV3(self.layer, str(tmp),
                                                          QgsProject.instance().transformContext(), options)
        self.layer.selectByIds(previous)
        if result[0] != QgsVectorFileWriter.NoError:
            self.error(tr("Cannot write {0}: {1}").format(target, result[1]))
            return ""
        os.replace(tmp, target)
        return str(target)
