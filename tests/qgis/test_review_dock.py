"""Review dock: order, keyboard decisions written to the layer, progress counts, export as labels."""

from __future__ import annotations

from plugin_helpers import score_of
from qgis.core import Qgis, QgsVectorLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QApplication


def test_keys_write_review_fields_and_export_labels(qgis_app, qgis_iface, project_layers, plugin, tmp_path):
    detections = project_layers[2]
    dock = plugin.docks["review"]
    dock.show()
    dock.detections.setLayer(detections)
    scores = [detections.getFeature(fid)["score"] for fid in dock.order]
    assert scores == sorted(scores, reverse=True) and len(scores) == detections.featureCount()
    first, second, third = dock.order[:3]
    canvas_before = qgis_iface.mapCanvas().extent()

    window = qgis_iface.mainWindow()  # shortcuts work while the dock's window is active, canvas focused or not
    window.show()
    QApplication.setActiveWindow(window)
    QTest.keyClick(dock, Qt.Key_A)  # accept the best-scored detection
    QTest.keyClick(dock, Qt.Key_R)  # reject the next one
    dock.relabel_to.setEditText("vehicle/truck")
    QTest.keyClick(dock, Qt.Key_L)  # relabel the third

    reread = QgsVectorLayer(detections.source(), "reread", "ogr")  # what is on disk, not in a cache
    decisions = {f.id(): (f["review"], f["reviewed_class"]) for f in reread.getFeatures()}
    assert decisions[first] == ("accepted", detections.getFeature(first)["class"])
    assert decisions[second][0] == "rejected" and not decisions[second][1]
    assert decisions[third] == ("relabelled", "vehicle/truck")
    assert dock.index == 3
    assert dock.progress.text().startswith(f"3 of {len(scores)} reviewed · 1 accepted · 1 rejected · 1 relabelled")
    assert qgis_iface.mapCanvas().extent() != canvas_before  # zoomed to the current detection

    written = dock.export(str(tmp_path / "labels.gpkg"))
    labels = QgsVectorLayer(f"{tmp_path / 'labels.gpkg'}|layername=labels", "labels", "ogr")
    assert written == 2 and labels.featureCount() == 2
    assert sorted(f["class"] for f in labels.getFeatures()) == sorted(
        [detections.getFeature(first)["class"], "vehicle/truck"])
    assert labels.crs() == detections.crs()


def test_uncertainty_order_puts_scores_near_half_first(qgis_app, project_layers, plugin):
    dock = plugin.docks["review"]
    dock.sort.setCurrentIndex(dock.sort.findData("uncertainty"))
    dock.detections.setLayer(project_layers[2])
    distances = [abs(project_layers[2].getFeature(fid)["score"] - 0.5) for fid in dock.order]
    assert distances == sorted(distances)
    assert distances[0] == min(abs(score_of(i) - 0.5) for i in range(len(distances)))


def test_layer_without_review_fields_is_refused(qgis_app, qgis_iface, project_layers, plugin):
    plugin.docks["review"].detections.setLayer(project_layers[1])  # the truth: no score/review fields
    assert plugin.docks["review"].layer is None
    assert any("lacks the field(s) score" in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))
