"""Tagging dock: tiles of an AL round in rank order, digitizing started, status written, next round job."""

from __future__ import annotations

from osgeo import ogr
from plugin_helpers import wait_for
from qgis.core import Qgis, QgsProject, QgsVectorLayer


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
    assert dock.open_tiles(str(tmp_path / "tiles.gpkg")) is tiles  # chosen again: the same layer, no copy
    assert dock.open_tiles(str(tmp_path / "." / "tiles.gpkg")) is tiles
    assert len(QgsProject.instance().mapLayersByName("AL tiles")) == 1
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

    assert dock.next_round() is None  # no round config chosen yet
    assert any("al round config" in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))



def test_filter_deleted_tile_read_only_and_removed_layer(qgis_app, qgis_iface, project_layers, plugin, tmp_path):
    """A filter set after the tiles were chosen reloads the walk; a tile deleted in an edit session, a layer
    flagged read-only and a layer removed from the project give no Python exception."""
    write_tiles(tmp_path / "tiles.gpkg", project_layers[0])
    dock = plugin.docks["tagging"]
    dock.tiles_file.setFilePath(str(tmp_path / "tiles.gpkg"))
    tiles = dock.tiles
    assert tiles.setSubsetString('"rank" > 2')
    assert [tiles.getFeature(fid)["rank"] for fid in dock.order] == [3, 4]
    dock.tagged()
    status = {f["rank"]: f["status"] for f in QgsVectorLayer(str(tmp_path / "tiles.gpkg"), "x", "ogr").getFeatures()}
    assert status == {1: "to_tag", 2: "to_tag", 3: "tagged", 4: "to_tag"}
    assert dock.counts.text() == "1 to tag · 1 tagged · 0 skipped"

    assert tiles.setSubsetString("") and len(dock.order) == 4
    assert tiles.startEditing() and tiles.deleteFeature(dock.order[1])
    dock.go(1)
    assert len(dock.order) == 3 and dock.counts.text() == "2 to tag · 1 tagged · 0 skipped"
    dock.skipped()
    tiles.rollBack()
    assert len(dock.order) == 4

    tiles.setReadOnly(True)
    dock.tagged()
    assert any("read-only" in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))
    QgsProject.instance().removeMapLayer(tiles.id())
    assert dock.tiles is None
    dock.tagged()
    dock.next()


ROUND = """rasters: [{raster}]
annotations: {{path: {truth}, layer: truth, class_field: class}}
n: 2
tile_size: 64
classes: {{level: 1}}
train:
  model: {{architecture: unet, params: {{encoder: resnet18, encoder_depth: 3, decoder_channels: [16, 8, 8]}}}}
  epochs: 100
  max_steps: 2
  batch_size: 2
  num_workers: 0
  checkpoint_every: 1000
  tracking: {{enabled: false}}
"""


def test_the_dock_drives_real_al_rounds(qgis_app, qgis_iface, project_layers, plugin, tmp_path):
    """Round 1 (random tiles) → refused while tiles are to tag → tagged → round 2 trains and picks new tiles,
    each time through the real worker's ``al round``; the dock follows the newest tiles layer."""
    raster, truth, _detections = project_layers
    config = tmp_path / "round.yaml"
    config.write_text(ROUND.format(raster=raster.source(), truth=truth.source().split("|")[0]))
    dock = plugin.docks["tagging"]
    dock.annotations.setLayer(truth)
    dock.round_config.setFilePath(str(config))

    def run_round():
        job = dock.next_round()
        assert job.spec.args[:3] == ["al", "round", str(config)] and job.spec.cwd == str(tmp_path)
        assert wait_for(qgis_app, lambda: job.done, 300), list(job.log)
        return job

    first = run_round()
    assert first.status == "ok", first.message
    assert dock.tiles is not None and dock.tiles.source().startswith(str(tmp_path / "round-1" / "tiles.gpkg"))
    assert dock.counts.text() == "2 to tag · 0 tagged · 0 skipped"

    waiting = run_round()  # nothing tagged yet: the worker refuses with one line, shown in the message bar
    assert waiting.status == "failed" and "waiting for tags" in waiting.message
    assert any("waiting for tags" in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))

    dock.tagged()
    dock.tagged()
    truth.rollBack()
    second = run_round()
    assert second.status == "ok", second.message
    assert dock.tiles.source().startswith(str(tmp_path / "round-2" / "tiles.gpkg"))
    assert dock.counts.text() == "2 to tag · 0 tagged · 0 skipped"
    assert (tmp_path / "round-1" / "run" / "model.pt").is_file() and (tmp_path / "rounds.jsonl").is_file()
