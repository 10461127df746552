"""Review dock: order, keyboard decisions written to the layer, progress counts, export as labels."""

from __future__ import annotations

import zipfile

from plugin_helpers import reprojected_copy, score_of, wait_for, write_detections
from qgis.core import Qgis, QgsProject, QgsVectorLayer
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


def on_disk(layer) -> dict:
    """fid → (review, reviewed_class) as a fresh layer reads them from the file."""
    reread = QgsVectorLayer(layer.source(), "reread", "ogr")
    return {f.id(): (f["review"], f["reviewed_class"]) for f in reread.getFeatures()}


def test_review_resumes_on_a_reloaded_layer_and_skips_reviewed(qgis_app, project_layers, plugin):
    """Decisions survive a reload from disk; the review reopens on the first unreviewed detection and a
    decision moves on to the next unreviewed one, not to one already decided."""
    detections = project_layers[2]
    dock = plugin.docks["review"]
    dock.detections.setLayer(detections)
    order = list(dock.order)
    dock.accept()
    dock.go(2)
    dock.reject()
    assert dock.index == 3
    reloaded = QgsVectorLayer(detections.source(), "reloaded", "ogr")
    QgsProject.instance().addMapLayer(reloaded)
    dock.detections.setLayer(reloaded)
    assert dock.order == order and dock.index == 1  # the first unreviewed one
    assert dock.progress.text().startswith(f"2 of {len(order)} reviewed · 1 accepted · 1 rejected")
    dock.relabel_to.setEditText("building")
    dock.relabel()
    assert dock.index == 3  # order[2] is already rejected: skipped
    decisions = on_disk(reloaded)
    assert decisions[order[0]] == ("accepted", reloaded.getFeature(order[0])["class"])
    assert decisions[order[1]] == ("relabelled", "building")
    assert decisions[order[2]][0] == "rejected" and not decisions[order[2]][1]
    assert decisions[order[3]][0] == "unreviewed"


def test_a_new_filter_reloads_the_review(qgis_app, project_layers, plugin):
    """The RPS slider sets a subset string after the layer was chosen: hidden detections leave the review."""
    detections = project_layers[2]
    dock = plugin.docks["review"]
    dock.detections.setLayer(detections)
    total, shown = len(dock.order), dock.order[0]
    dock.iface.mapCanvas().zoomScale(1e6)  # the annotator looks around while dragging the slider
    extent = dock.iface.mapCanvas().extent()
    assert detections.setSubsetString('"score" >= 0.5')
    kept = {f.id() for f in detections.getFeatures()}
    assert 0 < len(kept) < total
    assert wait_for(qgis_app, lambda: set(dock.order) == kept, 5) and dock.order[dock.index] == shown
    assert dock.iface.mapCanvas().extent() == extent  # the shown detection is still listed: the map stays
    for _ in range(len(kept) + 2):
        dock.reject()
    assert {fid for fid, (review, _c) in on_disk(detections).items() if review == "rejected"} == kept


def test_deleted_detection_and_removed_layer_raise_nothing(qgis_app, project_layers, plugin):
    detections = project_layers[2]
    dock = plugin.docks["review"]
    dock.detections.setLayer(detections)
    total, second = len(dock.order), dock.order[1]
    assert detections.startEditing() and detections.deleteFeature(second)
    dock.next()  # lands on the deleted one: dropped
    assert second not in dock.order and len(dock.order) == total - 1 and dock.index == 1
    dock.accept()
    assert detections.getFeature(dock.order[1])["review"] == "accepted"  # in the edit buffer
    detections.rollBack()  # discarded: the list is read again
    assert len(dock.order) == total and "0 of" in dock.progress.text()
    QgsProject.instance().removeMapLayer(detections.id())
    assert dock.layer is None
    dock.accept()
    dock.next()
    dock.previous()


def test_read_only_layers_are_refused_in_the_message_bar(qgis_app, qgis_iface, scene, tmp_path, plugin,
                                                         qgis_new_project):
    source = tmp_path / "detections.gpkg"
    write_detections(scene[1], source)
    with zipfile.ZipFile(tmp_path / "detections.zip", "w") as archive:
        archive.write(source, "detections.gpkg")
    zipped = QgsVectorLayer(f"/vsizip/{tmp_path}/detections.zip/detections.gpkg|layername=detections", "zipped", "ogr")
    flagged = QgsVectorLayer(f"{source}|layername=detections", "flagged", "ogr")
    flagged.setReadOnly(True)
    QgsProject.instance().addMapLayers([zipped, flagged])
    dock = plugin.docks["review"]
    for layer, message in ((zipped, "Could not write the review to “zipped”"), (flagged, "“flagged” is read-only")):
        dock.detections.setLayer(layer)
        dock.accept()
        assert dock.index == 0
        assert any(message in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))
    assert all(review == "unreviewed" for review, _c in on_disk(flagged).values())


def test_export_refuses_unsaved_edits_and_the_detections_file(qgis_app, qgis_iface, project_layers, plugin, tmp_path):
    detections = project_layers[2]
    dock = plugin.docks["review"]
    dock.detections.setLayer(detections)
    detections.startEditing()
    dock.accept()
    assert dock.export(str(tmp_path / "labels.gpkg")) == 0 and not (tmp_path / "labels.gpkg").exists()
    assert any("Save the edits" in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))
    assert detections.commitChanges()
    path = detections.source().split("|")[0]
    assert dock.export(path) == 0 and QgsVectorLayer(detections.source(), "x", "ogr").featureCount() > 1
    assert dock.export(str(tmp_path / "labels.gpkg")) == 1


def test_reprojected_layer_zooms_to_the_detection(qgis_app, qgis_iface, project_layers, plugin, tmp_path):
    detections = project_layers[2]
    copy = reprojected_copy(detections, tmp_path / "detections_wgs84.gpkg", "EPSG:4326")
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(detections.crs())  # the project stays in UTM: the copy is reprojected on the fly
    dock = plugin.docks["review"]
    dock.detections.setLayer(copy)
    for _ in range(3):
        shown = detections.getFeature(dock.order[dock.index]).geometry().boundingBox()  # same fids, UTM
        assert canvas.extent().contains(shown) and canvas.extent().width() < 20 * max(shown.width(), 1)
        dock.next()


def test_a_slider_drag_reloads_the_review_once_with_its_last_value(qgis_app, project_layers, plugin, monkeypatch):
    """Reading the list takes ≈ 3.5 s on 100 000 detections: a drag of the RPS slider (a filter per step) must
    not read it at every step."""
    detections = project_layers[2]
    review, rps = plugin.docks["review"], plugin.docks["rps"]
    review.detections.setLayer(detections)
    rps.detections.setLayer(detections)
    reads = []
    fill = review._fill
    monkeypatch.setattr(review, "_fill", lambda layer, keep: (reads.append(layer.subsetString()), fill(layer, keep)))
    for value in range(10, 71, 3):
        rps.score.setValue(value)
    assert reads == []  # still moving
    assert wait_for(qgis_app, lambda: reads, 5)
    qgis_app.processEvents()
    assert reads == ['"score" >= 0.7']
    assert set(review.order) == {f.id() for f in detections.getFeatures()} and review.order
    rps.score.setValue(20)
    review.accept()  # a key before the pause: the new filter is read first, the decision lands on a listed one
    assert reads[-1] == '"score" >= 0.2' and len(reads) == 2
