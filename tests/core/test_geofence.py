"""Geofences: reprojection, tile selection, coverage rules, one-line errors; and through predict."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from aifactory.errors import InputError
from aifactory.prediction import predict
from aifactory.prediction.geofence import Geofence
from aifactory.prediction.tiling import Tile
from aifactory.prediction.vectorize import Detections
from test_predict_support import predict_scene, trained_run  # noqa: F401  (shared session fixtures)

TRANSFORM = Affine(0.5, 0, 500_000, 0, -0.5, 5_000_000)  # EPSG:32631, 0.5 m


def write_polygons(path, geoms, crs="EPSG:32631"):
    gpd.GeoDataFrame({"name": [f"p{i}" for i in range(len(geoms))]}, geometry=list(geoms), crs=crs).to_file(path)
    return path


def pixel_box_in_crs(col0, row0, col1, row1, crs="EPSG:32631"):
    x0, y0 = TRANSFORM * (col0, row1)
    x1, y1 = TRANSFORM * (col1, row0)
    frame = gpd.GeoDataFrame(geometry=[shapely.box(x0, y0, x1, y1)], crs="EPSG:32631")
    return frame.to_crs(crs).geometry.iloc[0]


def test_include_in_another_crs_is_reprojected_to_pixels(tmp_path):
    fence_path = write_polygons(tmp_path / "fence.gpkg", [pixel_box_in_crs(100, 50, 300, 250, "EPSG:4326")],
                                crs="EPSG:4326")
    fence = Geofence.load(600, 400, "EPSG:32631", TRANSFORM, fence_path)
    minx, miny, maxx, maxy = fence.region.bounds
    assert (minx, miny, maxx, maxy) == pytest.approx((100, 50, 300, 250), abs=0.05)
    assert fence.touches(Tile(0, 0, 0, 0, 128)) is True  # reaches (128, 128) > (100, 50)
    assert fence.touches(Tile(0, 3, 0, 400, 128)) is False
    mask = fence.mask(0, 300, 600)
    assert mask.sum() == pytest.approx(200 * 200, rel=0.02)


def test_exclude_and_whole_raster(tmp_path):
    exclude = write_polygons(tmp_path / "x.gpkg", [pixel_box_in_crs(0, 0, 600, 100)])
    fence = Geofence.load(600, 400, "EPSG:32631", TRANSFORM, exclude=exclude)
    assert fence.limited and not fence.touches(Tile(0, 0, 0, 0, 64))
    assert fence.mask(0, 200, 600)[:100].sum() == 0 and fence.mask(0, 200, 600)[100:].all()
    whole = Geofence.load(600, 400, "EPSG:32631", TRANSFORM)
    assert not whole.limited and whole.mask(0, 10, 600) is None


def test_rules_keep_clip_drop(tmp_path):
    fence_path = write_polygons(tmp_path / "fence.gpkg", [pixel_box_in_crs(0, 0, 100, 100)])
    detections = Detections(np.array([shapely.box(10, 10, 20, 20), shapely.box(90, 40, 110, 60),
                                      shapely.box(200, 200, 210, 210)], dtype=object),
                            np.array([1, 1, 2], "int32"), np.array([0.9, 0.8, 0.7]), np.array([1.0, 0.9, 0.8]),
                            np.array([100, 400, 100]))
    rules = {rule: Geofence.load(600, 400, "EPSG:32631", TRANSFORM, fence_path, rule=rule).apply(detections)
             for rule in ("keep", "clip", "drop-partial")}
    assert shapely.area(rules["keep"].geometry).round(3).tolist() == [100, 400]
    assert shapely.area(rules["clip"].geometry).round(3).tolist() == [100, 200]
    assert rules["clip"].score.tolist() == [0.9, 0.8]
    assert shapely.area(rules["drop-partial"].geometry).round(3).tolist() == [100]


def test_bad_geofences_are_one_line(tmp_path):
    far = write_polygons(tmp_path / "far.gpkg", [shapely.box(0, 0, 10, 10)])
    with pytest.raises(InputError, match="does not intersect") as excinfo:
        Geofence.load(600, 400, "EPSG:32631", TRANSFORM, far)
    assert "\n" not in str(excinfo.value)
    everything = write_polygons(tmp_path / "all.gpkg", [pixel_box_in_crs(-10, -10, 700, 500)])
    with pytest.raises(InputError, match="covers all"):
        Geofence.load(600, 400, "EPSG:32631", TRANSFORM, exclude=everything)
    points = gpd.GeoDataFrame(geometry=[shapely.Point(500_010, 4_999_990)], crs="EPSG:32631")
    points.to_file(tmp_path / "points.gpkg")
    with pytest.raises(InputError, match="no polygons"):
        Geofence.load(600, 400, "EPSG:32631", TRANSFORM, tmp_path / "points.gpkg")


def test_predict_inside_a_geofence_reads_only_touching_tiles(tmp_path, trained_run, predict_scene):  # noqa: F811
    raster, _ = predict_scene
    with rasterio.open(raster) as ds:
        transform = ds.transform
    x0, y1 = transform * (330, 200)
    x1, y0 = transform * (600, 0)
    fence = write_polygons(tmp_path / "fence.gpkg",
                           [gpd.GeoSeries([shapely.box(x0, y0, x1, y1)], crs="EPSG:32631").to_crs(4326).iloc[0]],
                           crs="EPSG:4326")
    result = predict([trained_run], raster, tmp_path / "out", geofence=fence, geofence_rule="clip")
    assert result.tiles_skipped_outside > 0
    assert result.tiles_predicted + result.tiles_skipped_outside + result.tiles_skipped_nodata == result.tiles_total
    with rasterio.open(result.scores) as ds:
        valid = ds.dataset_mask() > 0
    assert not valid[:, :320].any() and not valid[210:].any() and valid[5:195, 340:595].all()
    detections = gpd.read_file(result.detections, layer="detections")
    region = shapely.box(x0, y0, x1, y1).buffer(0.5)  # reprojection round trip
    assert len(detections) > 0 and shapely.within(detections.geometry.array, region).all()
