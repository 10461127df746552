"""Every post-processing op on hand-made geometries with known results."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from aifactory.errors import InputError
from aifactory.io.vector import write_vector
from aifactory.postprocess import apply_chain
from shapely import box
from test_postprocess_helpers import ORIGIN, UTM, corner_angles, detections, local, noisy_rectangle


def run(frame, name, **params):
    return apply_chain(frame, [{"name": name, **params}])


def test_area_score_class_filters():
    frame = detections([box(0, 0, 2, 2), box(10, 0, 20, 10), box(30, 0, 70, 40)],
                       classes=["car", "building", "building"], scores=[0.9, 0.3, 0.7])
    assert run(frame, "area_filter", min_area=5)["tile_id"].tolist() == ["t1", "t2"]
    assert run(frame, "area_filter", min_area=5, max_area=200)["tile_id"].tolist() == ["t1"]
    assert run(frame, "score_filter", min_score=0.5)["tile_id"].tolist() == ["t0", "t2"]
    assert run(frame, "class_filter", include=["building"])["tile_id"].tolist() == ["t1", "t2"]
    assert run(frame, "class_filter", exclude=["building"])["tile_id"].tolist() == ["t0"]
    frame["reviewed_class"] = ["car", "car", None]
    assert run(frame, "class_filter", include=["car"], column="reviewed_class")["tile_id"].tolist() == ["t0", "t1"]


def test_geofence_in_another_crs(tmp_path):
    frame = detections([box(0, 0, 10, 10), box(100, 100, 110, 110), box(48, 0, 58, 10)])
    fence_utm = gpd_frame([box(-5, -5, 50, 50)])
    path = tmp_path / "fence.gpkg"
    write_vector(fence_utm.to_crs("EPSG:4326"), path, layer="fence")  # the fence is in lon/lat
    assert run(frame, "geofence", path=str(path))["tile_id"].tolist() == ["t0", "t2"]
    assert run(frame, "geofence", path=str(path), predicate="within")["tile_id"].tolist() == ["t0"]
    assert run(frame, "geofence", path=str(path), mode="exclude")["tile_id"].tolist() == ["t1"]
    assert run(frame, "geofence", path=str(path), predicate="centroid")["tile_id"].tolist() == ["t0"]
    clipped = run(frame, "geofence", path=str(path), clip=True)
    assert clipped["tile_id"].tolist() == ["t0", "t2"]
    assert clipped["area"].tolist() == pytest.approx([100, 20], rel=1e-6)  # reprojection round trip
    outside = run(frame, "geofence", path=str(path), mode="exclude", clip=True)
    assert outside["area"].tolist() == pytest.approx([100, 80], rel=1e-6)


def gpd_frame(geoms):
    import geopandas as gpd

    return gpd.GeoDataFrame(geometry=shapely.transform(np.array(geoms), lambda xy: xy + np.array(ORIGIN)), crs=UTM)


def test_geofence_needs_matching_georeferencing(tmp_path):
    path = tmp_path / "fence.gpkg"
    write_vector(gpd_frame([box(0, 0, 5, 5)]), path, layer="fence")
    pixels = detections([box(0, 0, 1, 1)], crs=None)
    with pytest.raises(InputError, match="has a CRS"):
        run(pixels, "geofence", path=str(path))


def test_make_valid_repairs_bowtie_and_drops_empty():
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    clockwise = shapely.Polygon([(20, 0), (20, 10), (30, 10), (30, 0)])
    frame = detections([bowtie, shapely.Polygon(), clockwise])
    out = run(frame, "make_valid")
    assert out["tile_id"].tolist() == ["t0", "t2"]
    assert shapely.is_valid(out.geometry.array).all()
    assert out.geometry.iloc[0].geom_type == "MultiPolygon" and out["area"].iloc[0] == pytest.approx(50)
    assert shapely.is_ccw(shapely.get_exterior_ring(out.geometry.array[1]))


def test_remove_holes_below_size():
    shell = box(0, 0, 100, 100)
    donut = shell.difference(box(10, 10, 12, 12)).difference(box(50, 50, 80, 80))
    frame = detections([donut, shapely.MultiPolygon([donut, box(200, 0, 210, 10)])])
    out = run(frame, "remove_holes", max_area=10)
    assert [shapely.get_num_interior_rings(shapely.get_geometry(g, 0)) for g in out.geometry] == [1, 1]
    assert out["area"].tolist() == pytest.approx([10_000 - 900, 10_000 - 900 + 100])
    assert out.geometry.iloc[1].geom_type == "MultiPolygon"
    assert run(frame, "remove_holes")["area"].tolist() == pytest.approx([10_000, 10_100])


def test_remove_slivers_drops_thin_and_small_parts():
    strip = box(0, 0, 100, 1)  # compactness 4π·100/202² ≈ 0.03
    tiny = box(200, 0, 201, 1)
    frame = detections([shapely.MultiPolygon([box(0, 10, 20, 30), strip]), tiny, strip])
    out = run(frame, "remove_slivers", min_area=2)
    assert out["tile_id"].tolist() == ["t0"]
    assert out["area"].iloc[0] == pytest.approx(400)


def test_simplify_douglas_peucker_and_visvalingam_whyatt():
    rng = np.random.default_rng(3)
    t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    radius = 40 + rng.normal(0, 0.2, t.size)
    blob = shapely.Polygon(np.c_[radius * np.cos(t), radius * np.sin(t)])
    road = shapely.LineString(np.c_[np.arange(200.0), rng.normal(0, 0.2, 200)])
    frame = detections([blob, road])
    for method in ("douglas_peucker", "visvalingam_whyatt"):
        out = run(frame, "simplify", tolerance=1.0, method=method)
        before = shapely.get_num_coordinates(frame.geometry.array)
        after = shapely.get_num_coordinates(out.geometry.array)
        assert (after < before / 4).all(), (method, after)
        assert shapely.is_valid(out.geometry.array).all()
        distance = shapely.hausdorff_distance(out.geometry.array, frame.geometry.array)
        assert (distance < 2.0).all(), (method, distance)
        assert out["area"].iloc[0] == pytest.approx(blob.area, rel=0.02)
        assert out["area"].iloc[1] == 0


def test_visvalingam_whyatt_removes_smallest_triangles_first():
    # the spike at (5, 0.5) makes a triangle of area 2.5, the bump at (12, 0.1) one of 0.35
    line = shapely.LineString([(0, 0), (5, 0.5), (10, 0), (12, 0.1), (14, 0), (20, 0)])
    out = run(detections([line], crs=None), "simplify", tolerance=1.0, method="visvalingam_whyatt")
    assert local(out)[0].equals(shapely.LineString([(0, 0), (5, 0.5), (10, 0), (20, 0)]))
    square = run(detections([box(0, 0, 10, 10)], crs=None), "simplify", tolerance=100, method="visvalingam_whyatt")
    assert shapely.get_num_coordinates(square.geometry.array)[0] == 4  # a ring keeps three corners


def test_smooth_chaikin_keeps_line_ends_and_rounds_corners():
    square = box(0, 0, 10, 10)
    line = shapely.LineString([(0, 0), (10, 0), (10, 10)])
    out = run(detections([square, line], crs=None), "smooth", iterations=1)
    smoothed_square, smoothed_line = local(out)
    assert shapely.get_num_coordinates(smoothed_square) == 9  # 4 edges × 2 points + closing
    assert smoothed_square.area == pytest.approx(100 - 4 * 0.5 * 2.5 * 2.5)
    assert list(smoothed_line.coords) == [(0, 0), (2.5, 0), (7.5, 0), (10, 2.5), (10, 7.5), (10, 10)]


def test_regularize_noisy_rectangle_has_right_angles():
    outline = noisy_rectangle(40, 20, angle=30, center=(100, 100), noise=0.3)
    frame = detections([outline])
    out = run(frame, "regularize", tolerance=1.0)
    squared = local(out)[0]
    assert squared.is_valid and shapely.get_num_coordinates(squared) == 5
    assert np.abs(corner_angles(squared) - 90).max() < 0.01
    assert squared.area == pytest.approx(800, rel=0.03)
    assert out["area"].iloc[0] == pytest.approx(squared.area)
    long_side = np.diff(np.asarray(squared.exterior.coords)[:3], axis=0)
    sides = np.hypot(*long_side.T)
    edge = long_side[np.argmax(sides)]
    assert np.degrees(np.arctan2(edge[1], edge[0])) % 180 == pytest.approx(30, abs=2)


def test_regularize_keeps_an_l_shape_and_falls_back_to_a_box():
    ell = shapely.affinity.rotate(shapely.Polygon([(0, 0), (30, 0), (30, 10), (10, 10), (10, 30), (0, 30)]), 17)
    jittered = shapely.Polygon(np.asarray(ell.exterior.coords)[:-1] + np.random.default_rng(1).normal(0, 0.2, (6, 2)))
    blob = shapely.Point(50, 50).buffer(3, 4)
    out = run(detections([jittered, blob], crs=None), "regularize", tolerance=0.5)
    squared, fallback = local(out)
    assert shapely.get_num_coordinates(squared) == 7 and np.abs(corner_angles(squared) - 90).max() < 0.01
    assert squared.area == pytest.approx(ell.area, rel=0.03)
    assert np.abs(corner_angles(fallback) - 90).max() < 0.01  # the round blob: its oriented box


def test_straighten_lines_removes_wiggles_and_keeps_the_bend():
    rng = np.random.default_rng(5)
    x = np.arange(0, 100.0)
    leg1 = np.c_[x, rng.normal(0, 0.3, x.size)]
    leg2 = np.c_[np.full(x.size, 100.0) + rng.normal(0, 0.3, x.size), x]
    road = shapely.LineString(np.r_[leg1, leg2])
    out = run(detections([road, box(0, 0, 5, 5)], crs=None), "straighten_lines", tolerance=1.0)
    line, untouched = local(out)
    assert 3 <= shapely.get_num_coordinates(line) <= 5
    assert shapely.hausdorff_distance(line, road) < 3
    assert untouched.equals(box(0, 0, 5, 5))


def test_buffer_open_close():
    frame = detections([box(0, 0, 10, 10)], crs=None)
    assert run(frame, "buffer", distance=1, join_style="mitre")["area"].iloc[0] == pytest.approx(144)
    assert run(frame, "buffer", distance=-1)["area"].iloc[0] == pytest.approx(64)
    spiky = box(0, 0, 10, 10).union(box(10, 4.5, 30, 5.5))  # a 1-wide spike
    opened = run(detections([spiky], crs=None), "open", distance=1)
    assert local(opened)[0].symmetric_difference(box(0, 0, 10, 10)).area < 1e-6
    notched = box(0, 0, 10, 10).difference(box(4.5, 5, 5.5, 10))  # a 1-wide notch
    closed = run(detections([notched], crs=None), "close", distance=1)
    assert local(closed)[0].symmetric_difference(box(0, 0, 10, 10)).area < 1e-6


def test_merge_touching_per_class_with_area_weighted_score():
    frame = detections([box(0, 0, 10, 10), box(10, 0, 20, 10), box(15, 5, 40, 10), box(0, 20, 5, 25),
                        box(100, 0, 110, 10), box(105, 0, 115, 10)],
                       classes=["building"] * 4 + ["building", "tree"],
                       scores=[0.9, 0.5, 0.8, 0.6, 0.7, 0.4])
    out = run(frame, "merge")
    assert len(out) == 4
    merged = out.loc[out["tile_id"] == "t0"].iloc[0]  # best member t0 gives the attributes
    assert merged.geometry.area == pytest.approx(100 + 100 + 125 - 25)
    assert merged["score"] == pytest.approx((0.9 * 100 + 0.5 * 100 + 0.8 * 125) / 325)
    assert merged["area"] == pytest.approx(300)
    assert sorted(out["class"]) == ["building", "building", "building", "tree"]  # tree not merged
    best = run(frame, "merge", score="max")
    assert best.loc[best["tile_id"] == "t0", "score"].iloc[0] == pytest.approx(0.9)
    assert len(run(frame, "merge", per_class=False)) == 3


def test_nms_keeps_the_higher_score():
    frame = detections([box(0, 0, 10, 10), box(1, 0, 11, 10), box(6, 0, 16, 10), box(0, 0, 10, 10)],
                       classes=["building", "building", "building", "tree"], scores=[0.6, 0.9, 0.8, 0.5])
    # t1 (0.9) beats t0 (IoU 0.82); t2 overlaps t1 by IoU 0.43 < 0.5 and survives; the tree is another class
    out = run(frame, "nms", iou_threshold=0.5)
    assert sorted(out["tile_id"]) == ["t1", "t2", "t3"]
    assert sorted(run(frame, "nms", iou_threshold=0.3)["tile_id"]) == ["t1", "t3"]
    assert sorted(run(frame, "nms", iou_threshold=0.5, per_class=False)["tile_id"]) == ["t1", "t2"]
    nested = detections([box(0, 0, 10, 10), box(2, 2, 5, 5)], scores=[0.9, 0.95])
    assert len(run(nested, "nms")) == 2 and run(nested, "nms", overlap="ios")["tile_id"].tolist() == ["t1"]


def test_nms_greedy_chain():
    # a (0.9) suppresses b (0.8); b would have suppressed c (0.7), but b is gone so c stays
    frame = detections([box(0, 0, 10, 10), box(3, 0, 13, 10), box(6, 0, 16, 10)], scores=[0.9, 0.8, 0.7])
    assert run(frame, "nms", iou_threshold=0.4)["tile_id"].tolist() == ["t0", "t2"]


def test_dedupe_by_distance():
    points = [shapely.Point(0, 0), shapely.Point(0.5, 0), shapely.Point(3, 0), shapely.Point(3.2, 0)]
    frame = detections(points, classes=["car", "car", "car", "tree"], scores=[0.5, 0.9, 0.6, 0.1])
    assert run(frame, "dedupe", distance=1)["tile_id"].tolist() == ["t1", "t2", "t3"]
    assert run(frame, "dedupe", distance=1, per_class=False)["tile_id"].tolist() == ["t1", "t2"]
    no_score = frame.drop(columns="score")
    assert run(no_score, "dedupe", distance=1)["tile_id"].tolist() == ["t0", "t2", "t3"]


def test_explode_hulls_boxes_centroids():
    ell = shapely.Polygon([(0, 0), (4, 0), (4, 1), (1, 1), (1, 4), (0, 4)])
    multi = shapely.MultiPolygon([box(10, 0, 12, 2), box(20, 0, 21, 1)])
    frame = detections([ell, multi], crs=None)
    exploded = run(frame, "explode")
    assert exploded["area"].tolist() == [7, 4, 1] and exploded["tile_id"].tolist() == ["t0", "t1", "t1"]
    assert run(frame, "convex_hull")["area"].iloc[0] == pytest.approx(11.5)
    assert run(frame, "bounding_box")["area"].tolist() == [16, 22]
    oriented = run(detections([shapely.affinity.rotate(box(0, 0, 8, 2), 30)], crs=None), "oriented_box")
    assert oriented["area"].iloc[0] == pytest.approx(16)
    points = run(frame, "centroids")
    assert points.geometry.geom_type.tolist() == ["Point", "Point"] and points["area"].tolist() == [0, 0]
    inside = run(detections([ell], crs=None), "centroids", method="point_on_surface")
    assert ell.contains(local(inside)[0])


def test_scale_resizes_about_each_centre_with_holes():
    ring = box(0, 0, 10, 10).difference(box(4, 4, 6, 6))
    frame = detections([box(100, 100, 120, 110), ring], crs=None)
    half = run(frame, "scale", factor=0.5)
    assert [tuple(local(half)[0].bounds)] == [(105.0, 102.5, 115.0, 107.5)]
    assert half["area"].tolist() == [50, pytest.approx(24)]
    assert local(half)[1].equals(box(2.5, 2.5, 7.5, 7.5).difference(box(4.5, 4.5, 5.5, 5.5)))
    tri = shapely.Polygon([(0, 0), (6, 0), (0, 6)])
    grown = run(detections([tri], crs=None), "scale", factor=2, origin="centroid")
    assert local(grown)[0].centroid.equals_exact(tri.centroid, 1e-9) and grown["area"].iloc[0] == 72


def test_skeletonize_cross_of_roads():
    cross = box(0, 45, 200, 55).union(box(95, 0, 105, 100))
    frame = detections([cross, box(300, 0, 310, 10)], classes=["road", "building"], crs=None)
    out = apply_chain(frame, [{"name": "skeletonize", "classes": ["road"], "tile_cells": 64}])
    lines = out.loc[out["class"] == "road"]
    assert set(lines.geometry.geom_type) == {"LineString"}
    assert len(lines) == 4  # four arms meeting at the junction
    assert lines["area"].tolist() == [0, 0, 0, 0] and (lines["score"] == frame["score"].iloc[0]).all()
    total = shapely.length(lines.geometry.array).sum()
    assert total == pytest.approx(200 + 100, rel=0.12)  # arms stop short of the ends by about half a width
    centre = shapely.MultiLineString([[(0, 50), (200, 50)], [(100, 0), (100, 100)]])
    assert shapely.hausdorff_distance(shapely.union_all(lines.geometry.array), centre) < 8
    assert (out["class"] == "building").sum() == 1  # other classes pass around the op


def test_snap_to_grid():
    frame = detections([shapely.Polygon([(0.2, 0.1), (9.8, 0.3), (10.1, 9.7), (0.4, 10.2)]), box(20, 20, 20.3, 20.3)],
                       crs=None)
    out = run(frame, "snap_to_grid", grid_size=1.0)
    assert len(out) == 1 and local(out)[0].normalize().equals(box(0, 0, 10, 10).normalize())
    assert out["area"].iloc[0] == 100


def test_attributes():
    rectangle = shapely.affinity.rotate(box(0, 0, 20, 5), 30, origin=(0, 0))
    frame = detections([rectangle, shapely.Point(0, 0).buffer(10, 64)], crs=None)
    out = run(frame, "attributes")
    assert out["area"].tolist() == pytest.approx([100, np.pi * 100], rel=1e-3)
    assert out["perimeter"].iloc[0] == pytest.approx(50)
    assert out["elongation"].tolist() == pytest.approx([4, 1], rel=1e-3)
    assert out["orientation"].iloc[0] == pytest.approx(30)
    assert out["compactness"].tolist() == pytest.approx([4 * np.pi * 100 / 2500, 1], rel=1e-3)
    prefixed = run(frame, "attributes", measures=["elongation"], prefix="shape_")
    assert "shape_elongation" in prefixed.columns and "perimeter" not in prefixed.columns


def test_reproject_recomputes_area():
    frame = detections([box(0, 0, 100, 100)])
    out = run(frame, "reproject", crs="EPSG:3857")
    assert out.crs.to_epsg() == 3857 and out["area"].iloc[0] == pytest.approx(out.geometry.area.iloc[0])
    assert out["area"].iloc[0] > 10_000  # Web Mercator inflates areas at 45° N
    with pytest.raises(InputError, match="no CRS"):
        run(detections([box(0, 0, 1, 1)], crs=None), "reproject", crs="EPSG:4326")
