"""Geofence dock: GeoPackage layer created, digitizing started, list/toggle/mode, selection for predict."""

from __future__ import annotations

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsGeometry,
    QgsProject,
    QgsVectorLayer,
    QgsVectorLayerUtils,
)
from qgis.PyQt.QtCore import Qt


def square(layer_extent, fraction: float) -> QgsGeometry:
    x0, y0 = layer_extent.xMinimum(), layer_extent.yMinimum()
    size = min(layer_extent.width(), layer_extent.height()) * fraction
    return QgsGeometry.fromWkt(f"POLYGON(({x0} {y0},{x0 + size} {y0},{x0 + size} {y0 + size},{x0} {y0 + size},"
                               f"{x0} {y0}))")


def test_create_draw_toggle_and_use_for_prediction(qgis_app, qgis_iface, project_layers, plugin, tmp_path):
    raster = project_layers[0]
    dock = plugin.docks["geofence"]
    dock.raster.setLayer(raster)
    path = tmp_path / "zones.gpkg"
    layer = dock.create(str(path))
    assert path.is_file() and layer is not None and layer in QgsProject.instance().mapLayers().values()
    assert layer.fields().names()[-3:] == ["name", "mode", "enabled"] and layer.crs() == raster.crs()

    dock.draw()  # QGIS's own digitizing: editable layer, active, add-feature tool triggered
    assert layer.isEditable()
    assert qgis_iface.activeLayer() is layer
    qgis_iface.actionAddFeature().trigger.assert_called()
    for fraction in (0.5, 0.25):  # what the add-feature tool does on a click sequence
        layer.addFeature(QgsVectorLayerUtils.createFeature(layer, square(raster.extent(), fraction)))
    dock.save()
    assert not layer.isEditable() and dock.tree.topLevelItemCount() == 2
    first, second = (dock.tree.topLevelItem(i) for i in range(2))
    assert first.text(1) == "include" and first.checkState(2) == Qt.Checked

    second.setCheckState(2, Qt.Unchecked)  # disable the second geofence
    first.setSelected(True)
    dock.set_mode("exclude")
    stored = {f["name"]: (f["mode"], f["enabled"]) for f in QgsVectorLayer(str(path), "x", "ogr").getFeatures()}
    assert sorted(stored.values()) == [("exclude", True), ("include", False)]

    for i in range(2):
        dock.tree.topLevelItem(i).setSelected(True)
    include, exclude = dock.use_selected()
    assert include == ""  # the only include geofence is disabled
    chosen = QgsVectorLayer(f"{exclude}|layername=geofences", "chosen", "ogr")
    assert chosen.featureCount() == 1 and next(chosen.getFeatures())["mode"] == "exclude"
    jobs = plugin.docks["jobs"]
    assert (jobs.geofence.filePath(), jobs.exclude.filePath()) == (include, exclude)
    jobs.kind.setCurrentIndex(jobs.kind.findData("predict"))
    jobs.model.setFilePath(str(tmp_path))
    (tmp_path / "model.json").write_text("{}")
    jobs.raster.setLayer(raster)
    spec = jobs.build_spec()
    assert spec.args[spec.args.index("--exclude") + 1] == exclude and "--geofence" not in spec.args


def test_geofences_in_another_crs_than_the_raster_are_refused(qgis_app, qgis_iface, project_layers, plugin,
                                                             tmp_path):
    dock = plugin.docks["geofence"]
    dock.raster.setLayer(None)
    project_crs = QgsProject.instance().crs()
    QgsProject.instance().setCrs(QgsCoordinateReferenceSystem("EPSG:4326"))
    layer = dock.create(str(tmp_path / "wgs84.gpkg"))  # no raster chosen: in the project's CRS
    QgsProject.instance().setCrs(project_crs)
    layer.startEditing()
    layer.addFeature(QgsVectorLayerUtils.createFeature(layer, QgsGeometry.fromWkt(
        "POLYGON((3 45,3.1 45,3.1 45.1,3 45))")))
    dock.save()
    dock.raster.setLayer(project_layers[0])
    dock.tree.topLevelItem(0).setSelected(True)
    assert dock.use_selected() == ("", "")
    assert any("EPSG:4326" in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))
