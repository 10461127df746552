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


def geographic_detections(source, path):
    """A real EPSG:4326 copy of the detections whose ``area`` is the geometry's area in degrees² (what
    ``aifactory predict`` writes for a geographic raster)."""
    from osgeo import ogr, osr

    target_srs = osr.SpatialReference()
    target_srs.ImportFromEPSG(4326)
    target_srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    src = ogr.Open(str(source))
    layer = src.GetLayer("detections")
    srs = layer.GetSpatialRef()
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    transform = osr.CoordinateTransformation(srs, target_srs)
    out_ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    out = out_ds.CreateLayer("detections", target_srs, ogr.wkbMultiPolygon)
    definition = layer.GetLayerDefn()
    for i in range(definition.GetFieldCount()):
        out.CreateField(definition.GetFieldDefn(i))
    for feature in layer:
        geometry = feature.GetGeometryRef().Clone()
        geometry.Transform(transform)
        new = ogr.Feature(out.GetLayerDefn())
        new.SetFrom(feature)
        new.SetGeometry(geometry)
        new["area"] = geometry.GetArea()
        out.CreateFeature(new)
    out_ds = None
    return path


def test_geographic_layer_tiny_degree_areas_are_settable_and_filter(qgis_app, project_layers, plugin, tmp_path):
    from qgis.core import QgsProject, QgsVectorLayer

    path = geographic_detections(project_layers[2].source().split("|")[0], tmp_path / "dets4326.gpkg")
    layer = QgsVectorLayer(f"{path}|layername=detections", "dets 4326", "ogr")
    QgsProject.instance().addMapLayer(layer)
    areas = sorted(f["area"] for f in layer.getFeatures())
    assert 0 < areas[-1] < 1e-6  # degrees²
    dock = plugin.docks["rps"]
    dock.detections.setLayer(layer)
    dock.score.setValue(0)
    dock.area.setValue(700)
    value = dock.area_box.value()
    assert 0 < value < areas[-1]
    expected = sum(1 for a in areas if a >= value)
    assert 0 < expected < len(areas)
    assert layer.featureCount() == expected, layer.subsetString()
    median = areas[len(areas) // 2]
    dock.area_box.setValue(median)
    assert dock.area_box.value() == pytest.approx(median, rel=1e-3)
    assert layer.featureCount() == sum(1 for a in areas if a >= dock.area_box.value())
    levels = dock.sweeps()[-1]
    assert levels.startswith("min_area=") and len(levels.split(",")) == 4, levels
    dock.save_operating_point(str(tmp_path / "op.json"))
    assert json.loads((tmp_path / "op.json").read_text())["min_area"] == pytest.approx(dock.area_box.value())


def test_large_areas_reach_the_top_of_the_slider(qgis_app, project_layers, plugin):
    _raster, _truth, detections = project_layers
    index = detections.fields().indexOf("area")
    changes = {f.id(): {index: f["area"] * 10000} for f in detections.getFeatures()}  # fields of 1-30 ha
    assert detections.dataProvider().changeAttributeValues(changes)
    dock = plugin.docks["rps"]
    dock.detections.setLayer(detections)
    dock.score.setValue(0)
    largest = max(f["area"] for f in detections.getFeatures())
    assert largest > 99999
    dock.area.setValue(1000)
    assert dock.area_box.value() == pytest.approx(largest, rel=1e-6)
    assert detections.featureCount() >= 1


def test_another_score_field_name(qgis_app, project_layers, plugin, tmp_path):
    from osgeo import ogr
    from qgis.core import QgsProject, QgsVectorLayer

    source = project_layers[2].source().split("|")[0]
    copy = tmp_path / "conf.gpkg"
    ds = ogr.GetDriverByName("GPKG").CopyDataSource(ogr.Open(source), str(copy))
    ds.ExecuteSQL('ALTER TABLE detections RENAME COLUMN score TO confidence')
    ds = None
    layer = QgsVectorLayer(f"{copy}|layername=detections", "confidence dets", "ogr")
    assert layer.isValid() and layer.fields().indexOf("confidence") >= 0
    QgsProject.instance().addMapLayer(layer)
    dock = plugin.docks["rps"]
    dock.detections.setLayer(layer)
    assert dock.score_field.currentField() == "confidence" and dock.layer is layer
    dock.score.setValue(42)
    assert layer.subsetString() == '"confidence" >= 0.42'
    total = count_features(copy)
    assert layer.featureCount() == sum(1 for i in range(total) if score_of(i) >= 0.42)
    dock.truth.setLayer(project_layers[1])
    job = dock.launch_rps()  # the worker is told the field's name
    assert job.spec.args[job.spec.args.index("--score-field") + 1] == "confidence"
    assert wait_for(qgis_app, lambda: job.done, 180), list(job.log)
    assert job.status == "ok", job.message


def test_a_filter_of_the_users_is_kept_and_restored(qgis_app, project_layers, plugin):
    _raster, _truth, detections = project_layers
    detections.setSubsetString("\"class\" = 'building'")
    buildings = detections.featureCount()
    dock = plugin.docks["rps"]
    dock.detections.setLayer(detections)
    dock.score.setValue(42)
    assert detections.subsetString() == "(\"class\" = 'building') AND \"score\" >= 0.42"
    assert all(f["class"] == "building" for f in detections.getFeatures())
    assert dock.kept.text().endswith(f"of {buildings} detections")
    dock.detections.setLayer(None)
    assert detections.subsetString() == "\"class\" = 'building'"
    dock.detections.setLayer(detections)
    dock.detections.setLayer(project_layers[1])  # switching to another layer gives this one its filter back
    assert detections.subsetString() == "\"class\" = 'building'" and dock.layer is None


def test_removed_layer_and_edit_session(qgis_app, qgis_iface, project_layers, plugin):
    from qgis.core import QgsProject

    _raster, _truth, detections = project_layers
    dock = plugin.docks["rps"]
    dock.detections.setLayer(detections)
    dock.score.setValue(20)
    detections.startEditing()
    for value in (30, 40, 50):  # QGIS refuses a new filter during an edit session: one clear message
        dock.score.setValue(value)
    messages = [m for m in qgis_iface.messageBar().get_messages(Qgis.Critical) if "edit session" in m]
    assert len(messages) == 1 and dock.kept.text() == "not filtered"
    detections.rollBack()  # edits over: the slider's value is applied
    assert detections.subsetString() == '"score" >= 0.5'
    QgsProject.instance().removeMapLayer(detections.id())
    dock.score.setValue(70)  # raised RuntimeError (wrapped C/C++ object deleted) and aborted
    dock.area_box.setValue(5)
    assert dock.layer is None and dock.kept.text() == ""


def test_a_layer_still_filtered_by_the_slider_is_read_back_not_wrapped(qgis_app, project_layers, plugin):
    _raster, _truth, detections = project_layers
    detections.setSubsetString("(\"class\" = 'building') AND \"score\" >= 0.3 AND \"area\" >= 12.5")
    dock = plugin.docks["rps"]
    dock.detections.setLayer(detections)
    assert dock.score_box.value() == 0.3 and dock.area_box.value() == 12.5
    assert detections.subsetString() == "(\"class\" = 'building') AND \"score\" >= 0.3 AND \"area\" >= 12.5"
    detections.setSubsetString("\"class\" = 'tree'")  # the query builder: the layer's own filter now
    dock.score.setValue(60)
    assert detections.subsetString() == "(\"class\" = 'tree') AND \"score\" >= 0.6 AND \"area\" >= 12.5"
    dock.detections.setLayer(None)
    assert detections.subsetString() == "\"class\" = 'tree'"


NMS_POINTS = """zone,class,score,min_area,nms_iou,tp,fp,fn,precision,recall,f1
all,all,0.1,0,0.3,80,20,20,0.8,0.8,0.8
all,all,0.5,0,0.3,60,0,40,1,0.6,0.75
all,all,0.1,0,0.5,90,60,10,0.6,0.9,0.72
all,all,0.5,0,0.5,70,10,30,0.875,0.7,0.7778
"""


def test_the_operating_point_shown_is_the_one_rps_chose(qgis_app, qgis_iface, project_layers, plugin, tmp_path):
    """Every row has an NMS IoU (``--sweep nms_iou=0.3,0.5``): the rows of the chosen IoU are shown, not a mix
    of both curves."""
    (tmp_path / "points.csv").write_text(NMS_POINTS)
    (tmp_path / "operating_point.json").write_text(json.dumps(
        {"version": 1, "criterion": "max_f1", "score": 0.5, "min_area": 0.0, "nms_iou": 0.5, "postprocess": {},
         "precision": 0.875, "recall": 0.7, "f1": 0.7778}))
    dock = plugin.docks["rps"]
    dock.detections.setLayer(project_layers[2])
    dock.points.setFilePath(str(tmp_path / "points.csv"))
    assert dock.score_box.value() == 0.5 and project_layers[2].subsetString() == '"score" >= 0.5'
    assert [(p.recall, p.precision) for p in dock.table.curve()] == [(0.9, 0.6), (0.7, 0.875)]
    assert "precision 0.875 · recall 0.700" in dock.metrics.text()
    assert any("NMS IoU 0.5" in m for m in qgis_iface.messageBar().get_messages(Qgis.Info))
    (tmp_path / "fine.json").write_text(json.dumps({"version": 1, "score": 0.125, "min_area": 0.0}))
    dock.load_operating_point(str(tmp_path / "fine.json"))  # a finer sweep's choice: applied as chosen, not 0.13
    assert project_layers[2].subsetString() == '"score" >= 0.125'
