"""Tagging dock: tiles of an AL round in rank order, digitizing started, status written, next round job."""

from __future__ import annotations

from osgeo import ogr
from plugin_helpers import wait_for
from qgis.core import Qgis, QgsVectorLayer


def write_tiles(path, raster_layer, n: int = 4) -> None:
    """Tiles as `aifactory al select` writes them (score, rank, status, strategy, round), over the raster."""
    extent = raster_layer.extent()
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = ogr.osr.SpatialReference()
    srs.ImportFromWkt(raster_layer.crs().toWkt())
    layer = source.CreateLayer("tiles", srs, ogr.wkbPolygon)
    for name, kind in (("score", ogr.OFTReal), ("rank", ogr.OFTInteger), ("status", ogr.OFTString),
                       ("strategy", ogr.OFTString), ("round", ogr.OFTInteger)):
        layer.CreateField(ogr.FieldDefn(name, kind))
    width = extent.width() / n
    for i in range(n):
        x0 = extent.xMinimum() + i * width
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkt(
            f"POLYGON(({x0} {extent.yMinimum()},{x0 + width} {extent.yMinimum()},{x0 + width} {extent.yMaximum()},"
            f"{x0} {extent.yMaximum()},{x0} {extent.yMinimum()}))"))
        feature["score"], feature["rank"], feature["status"] = 1.0 - i / n, n - i, "to_tag"
        feature["strategy"], feature["round"] = "entropy", 1
        layer.CreateFeature(feature)
    source = None


def test_walk_tiles_mark_status_and_launch_next_round(qgis_app, qgis_iface, project_layers, plugin, tmp_path):
    raster, truth, _detections = project_layers
    write_tiles(tmp_path / "tiles.gpkg", raster)
    dock = plugin.docks["tagging"]
    dock.annotations.setLayer(truth)
    dock.tiles_file.setFilePath(str(tmp_path / "tiles.gpkg"))
    tiles = dock.tiles
    assert tiles is not None and tiles.name() == "AL tiles"
    ranks = [tiles.getFeature(fid)["rank"] for fid in dock.order]
    assert ranks == [1, 2, 3, 4] and dock.index == 0
    assert truth.isEditable() and qgis_iface.activeLayer() is truth  # digitizing started on the annotations
    qgis_iface.actionAddFeature().trigger.assert_called()

    dock.tagged()
    dock.skipped()
    on_disk = {f["rank"]: f["status"] for f in QgsVectorLayer(str(tmp_path / "tiles.gpkg"), "x", "ogr").getFeatures()}
    assert on_disk == {1: "tagged", 2: "skipped", 3: "to_tag", 4: "to_tag"}
    assert dock.counts.text() == "2 to tag · 1 tagged · 1 skipped"
    assert dock.index == 2
    truth.rollBack()

    assert dock.next_round() is None  # no round pipeline chosen yet
    assert any("pipeline YAML" in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))
    pipeline = tmp_path / "round.yaml"
    pipeline.write_text("version: 1\nname: round\ntasks:\n  scene: {task: synth, params: {width: 64, height: 64}}\n")
    dock.round_pipeline.setFilePath(str(pipeline))
    job = dock.next_round()
    assert job.spec.args[:4] == ["run", str(pipeline), "-o", str(tmp_path / "round-2")]
    assert wait_for(qgis_app, lambda: job.done, 120), list(job.log)
    assert job.status == "ok", job.message


def test_layer_without_status_is_refused(qgis_app, qgis_iface, project_layers, plugin):
    plugin.docks["tagging"].tiles_combo.setLayer(project_layers[1])
    assert plugin.docks["tagging"].tiles is None
    assert any("no “status” field" in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))
