"""RPS dock: the slider's subset string and counts, the table's live precision/recall, a real rps job."""

from __future__ import annotations

import json

import pytest
from plugin_helpers import count_features, reprojected_copy, score_of, wait_for
from qgis.core import Qgis

POINTS = """zone,class,score,min_area,nms_iou,tp,fp,fn,precision,recall,f1
all,all,0.1,0,,90,60,10,0.6,0.9,0.72
all,all,0.5,0,,70,10,30,0.875,0.7,0.7778
all,all,0.9,0,,20,0,80,1,0.2,0.3333
all,all,0.1,0,0.5,1,1,1,0.5,0.5,0.5
building,all,0.5,0,,1,1,1,0.5,0.5,0.5
"""


def test_slider_sets_subset_string_and_counts(qgis_app, project_layers, plugin):
    _raster, _truth, detections = project_layers
    dock = plugin.docks["rps"]
    total = count_features(detections.source().split("|")[0])
    dock.detections.setLayer(detections)
    dock.score.setValue(42)
    assert detections.subsetString() == '"score" >= 0.42'
    expected = sum(1 for i in range(total) if score_of(i) >= 0.42)
    assert detections.featureCount() == expected
    assert dock.kept.text().startswith(f"{expected} of {total}")
    dock.area_box.setValue(30)
    assert detections.subsetString() == '"score" >= 0.42 AND "area" >= 30'
    expected = count_features(detections.source().split("|")[0], "score >= 0.42 AND area >= 30")
    assert 0 < expected < total and detections.featureCount() == expected
    assert all(f["score"] >= 0.42 and f["area"] >= 30 for f in detections.getFeatures())
    dock.detections.setLayer(None)
    assert detections.subsetString() == ""  # leaving a layer restores it


def test_table_gives_live_precision_recall_and_operating_point_round_trip(qgis_app, project_layers, plugin, tmp_path):
    dock = plugin.docks["rps"]
    dock.detections.setLayer(project_layers[2])
    (tmp_path / "points.csv").write_text(POINTS)
    dock.points.setFilePath(str(tmp_path / "points.csv"))
    assert [(p.recall, p.precision) for p in dock.table.curve()] == [(0.9, 0.6), (0.7, 0.875), (0.2, 1.0)]
    dock.score.setValue(30)  # halfway between 0.1 and 0.5
    assert dock.curve.current == pytest.approx((0.8, 0.7375))
    assert "precision 0.737" in dock.metrics.text() and "recall 0.800" in dock.metrics.text()
    dock.save_operating_point(str(tmp_path / "op.json"))
    saved = json.loads((tmp_path / "op.json").read_text())
    assert saved["score"] == 0.3 and saved["criterion"] == "manual" and saved["version"] == 1
    dock.score.setValue(90)
    dock.load_operating_point(str(tmp_path / "op.json"))
    assert dock.score.value() == 30 and project_layers[2].subsetString() == '"score" >= 0.3'


def test_layer_without_score_is_refused_with_a_message(qgis_app, qgis_iface, project_layers, plugin):
    truth = project_layers[1]
    plugin.docks["rps"].detections.setLayer(truth)
    assert plugin.docks["rps"].layer is None and truth.subsetString() == ""
    assert any("no “score” field" in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))


def test_truth_layer_launches_a_real_rps_job_and_loads_its_table(qgis_app, project_layers, plugin):
    _raster, truth, detections = project_layers
    dock = plugin.docks["rps"]
    dock.detections.setLayer(detections)
    dock.truth.setLayer(truth)
    job = dock.launch_rps()
    assert wait_for(qgis_app, lambda: job.done, 180), list(job.log)
    assert job.status == "ok", job.message
    assert wait_for(qgis_app, lambda: dock.table is not None, 5)
    # detections are the truth geometries: every kept detection is a true positive
    assert all(p.precision == 1.0 for p in dock.table.curve() if p.recall > 0)
    assert "precision 1.000" in dock.metrics.text()


def test_truth_in_another_crs_is_refused(qgis_app, qgis_iface, project_layers, plugin, tmp_path):
    _raster, truth, detections = project_layers
    other = reprojected_copy(truth, tmp_path / "truth4326.gpkg", "EPSG:4326")
    dock = plugin.docks["rps"]
    dock.detections.setLayer(detections)
    dock.truth.setLayer(other)
    assert dock.launch_rps() is None
    assert any("EPSG:4326" in m and "reproject" in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))
