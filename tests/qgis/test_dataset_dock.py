"""Dataset dock: pickers filled from the project, live counts from a real `dataset preview`, build job."""

from __future__ import annotations

import json

import yaml
from plugin_helpers import reprojected_copy, wait_for
from qgis.core import Qgis


def tick(widget, names):
    for i in range(widget.count()):
        item = widget.item(i)
        item.setCheckState(2 if item.text() in names else 0)


def test_pickers_preview_counts_and_build(qgis_app, project_layers, plugin, tmp_path):
    dock = plugin.docks["dataset"]
    assert [dock.rasters.item(i).text() for i in range(dock.rasters.count())] == ["scene"]
    assert sorted(dock.annotations.item(i).text() for i in range(dock.annotations.count())) == ["detections",
                                                                                                 "truth"]
    tick(dock.rasters, {"scene"})
    tick(dock.annotations, {"truth"})
    assert dock.class_field.currentField() == "class"
    dock.tile.setValue(128)
    dock.level.setValue(2)
    assert wait_for(qgis_app, lambda: "objects in" in dock.status.text(), 60), dock.status.text()
    truth_classes = {f["class"] for f in project_layers[1].getFeatures()}
    assert set(dock.chart.counts) == truth_classes  # level 2 keeps vegetation/tree, vehicle/car
    assert sum(sum(row.values()) for row in dock.chart.counts.values()) == project_layers[1].featureCount()
    assert set(next(iter(dock.chart.counts.values()))) == {"train", "val", "test"}
    written = yaml.safe_load((plugin.manager.settings.work_dir() / "preview" / "dataset.yaml").read_text())
    assert written["sources"][0]["layer"] == "truth" and written["classes"] == {"level": 2}

    dock.level.setValue(1)
    assert wait_for(qgis_app, lambda: set(dock.chart.counts) == {c.split("/")[0] for c in truth_classes}, 60)
    dock.output.setFilePath(str(tmp_path / "dataset"))
    job = dock.build()
    assert wait_for(qgis_app, lambda: job.done, 180), list(job.log)
    assert job.status == "ok", job.message
    meta = json.loads((tmp_path / "dataset" / "dataset.json").read_text())
    assert meta["tile_size"] == 128 and meta["class_level"] == 1
    assert set(meta["classes"][1:]) == {c.split("/")[0] for c in truth_classes}
    assert (tmp_path / "dataset" / "chips.csv").is_file()


def test_annotations_in_another_crs_are_refused(qgis_app, qgis_iface, project_layers, plugin, tmp_path):
    reprojected_copy(project_layers[1], tmp_path / "truth_wgs84.gpkg", "EPSG:4326")
    dock = plugin.docks["dataset"]
    tick(dock.rasters, {"scene"})
    tick(dock.annotations, {"truth EPSG:4326"})
    assert any("EPSG:4326" in p for p in dock.problems())
    assert dock.build() is None
    assert any("reproject" in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))
    dock.preview()
    assert "EPSG:4326" in dock.status.text() and dock.chart.counts == {}



def test_catalog_mode_context_filters_reach_the_worker(qgis_app, project_layers, plugin, scene, tmp_path):
    """The catalog YAML the dock writes is run by the real worker; a context range that excludes the only
    image (cloud 3.5 %) empties the counts: the previous ones must not stay on the chart."""
    from plugin_helpers import run_worker

    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump({
        "images": [{"path": str(scene[0]), "sensor": "synthetic", "date": "2024-05-01",
                    "context": {"cloud": 3.5, "fog": 0}}],
        "labels": [{"path": str(scene[1]), "layer": "truth", "class_field": "class"}]}))
    run_worker("catalog", "build", str(tmp_path / "catalog.yaml"), "-o", str(tmp_path / "catalog.gpkg"),
               "--events", "none")
    dock = plugin.docks["dataset"]
    dock.mode.setCurrentIndex(dock.mode.findData("catalog"))
    dock.catalog.setFilePath(str(tmp_path / "catalog.gpkg"))
    check, low, high = dock.context["cloud"]
    check.setChecked(True)
    high.setValue(20)
    assert wait_for(qgis_app, lambda: "objects in" in dock.status.text(), 60), dock.status.text()
    assert sum(sum(row.values()) for row in dock.chart.counts.values()) == project_layers[1].featureCount()
    written = yaml.safe_load((plugin.manager.settings.work_dir() / "preview" / "dataset.yaml").read_text())
    assert written["catalog"]["select"] == {"context": {"cloud": [0.0, 20.0]}} and "sources" not in written
    low.setValue(10)
    assert wait_for(qgis_app, lambda: "Preview failed" in dock.status.text(), 60), dock.status.text()
    assert dock.chart.counts == {} and "no labels selected" in dock.status.text()
    assert "aifactory: error" not in dock.status.text()
    low.setValue(0)
    dock.output.setFilePath(str(tmp_path / "ds"))
    job = dock.build()
    assert wait_for(qgis_app, lambda: job.done, 180), list(job.log)
    assert job.status == "ok", job.message
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["class_level"] == 1


def test_filtered_and_removed_layers(qgis_app, qgis_iface, project_layers, plugin, tmp_path):
    """A filtered annotation layer gives the dataset of the features the map shows (its filter goes to the worker
    as ``where``); a removed layer leaves the pickers, and a preview still running for it does not bring its counts
    back."""
    from qgis.core import QgsProject

    dock = plugin.docks["dataset"]
    tick(dock.rasters, {"scene"})
    tick(dock.annotations, {"truth"})
    truth = project_layers[1]
    truth.setSubsetString("\"class\" = 'building'")
    assert dock.problems() == [] and dock.sources()[0]["where"] == "\"class\" = 'building'"
    assert wait_for(qgis_app, lambda: set(dock.chart.counts) == {"building"}, 60), dock.status.text()
    assert sum(sum(row.values()) for row in dock.chart.counts.values()) == truth.featureCount()
    truth.setSubsetString("")
    assert dock.problems() == [] and "where" not in dock.sources()[0]
    dock.timer.stop()
    dock.preview()
    assert dock.preview_call is not None  # counting for scene + truth
    QgsProject.instance().removeMapLayer(truth.id())
    assert [dock.annotations.item(i).text() for i in range(dock.annotations.count())] == ["detections"]
    assert dock.problems() == ["Tick at least one annotation layer."]
    assert wait_for(qgis_app, lambda: not dock.timer.isActive() and dock.preview_call is None, 60)
    for _ in range(50):  # the aborted preview's answer, had it come, would be handled by now
        qgis_app.processEvents()
    assert dock.chart.counts == {} and "Tick at least one annotation layer." in dock.status.text()
