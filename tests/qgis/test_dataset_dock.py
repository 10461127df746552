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
