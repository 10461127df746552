"""Evaluation numbers against hand-computed references, one small case per defect found by comparing the stage
with an independent brute-force implementation (plain shapely loops) on random cases: COCO's rule for IoU ties,
geofence zones evaluated on their own objects (boundary included), RPS areas in the detections' CRS units, the
burn order of overlapping truth in pixel metrics, and the RPS plot drawing the chosen combination."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from aifactory.evaluation.objects import evaluate_objects
from aifactory.evaluation.pixels import evaluate_pixels
from aifactory.evaluation.rps import apply_operating_point, choose_operating_point, plot_curves, sweep
from rasterio.transform import from_origin

UTM = "EPSG:32631"
X0, Y0 = 500_000.0, 5_000_000.0


def box(x0: float, x1: float, y0: float = 0, y1: float = 10) -> shapely.Polygon:
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def frame(geoms: list, crs: str | None = UTM, **columns: list) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(columns, geometry=geoms, crs=crs)


def test_equal_iou_goes_to_the_last_truth_as_in_coco() -> None:
    # D0 fits T0 and T1 equally (IoU 90/110); COCO gives it T1, so D1 (= T1) must settle for T0 (IoU 2/3)
    truth = frame([box(0, 10), box(2, 12)], cls=["x", "x"])
    pred = frame([box(1, 11), box(2, 12)], score=[0.9, 0.8])
    result = evaluate_objects(pred, truth)
    assert result.pred["matched"].tolist() == [1, 0]
    # IoU 0.50-0.65: both TP (AP 1); 0.70-0.80: D0 TP, D1 FP (51/101); 0.85-0.95: D0 FP, D1 TP on T1 (25.5/101)
    expected = (4 * 1 + 3 * 51 / 101 + 3 * 25.5 / 101) / 10  # faster-coco-eval: 0.6272277227722772
    assert result.overall["ap"] == pytest.approx(expected, abs=1e-12)
    assert result.overall["ap50"] == 1.0


ZONES = gpd.GeoDataFrame({"name": ["west", "east"]}, geometry=[
    shapely.box(X0 - 50, Y0 - 50, X0 + 20, Y0 + 50), shapely.box(X0 + 20, Y0 - 50, X0 + 90, Y0 + 50)], crs=UTM)


def _row(points: object, zone: str) -> tuple[int, int, int]:
    row = points[(points["zone"] == zone) & (points["class"] == "all")].iloc[0]
    return int(row["tp"]), int(row["fp"]), int(row["fn"])


def test_a_zone_is_evaluated_on_its_own_objects() -> None:
    # the detection lies in the west (centre x 17), the truth it overlaps in the east (centre x 21, IoU 0.43);
    # the west's only truth object (x 0-5) is missed, the east also holds a false positive (x 40-50)
    pred = frame([box(12, 22), box(40, 50)], score=[0.9, 0.8], **{"class": ["a", "a"]})
    truth = frame([box(16, 26), box(0, 5)], **{"class": ["a", "a"]})
    points = sweep(pred, truth, {"score": [0.5]}, iou=0.4, geofence=ZONES)
    assert (points[["tp", "fp", "fn"]].to_numpy() >= 0).all() and (points["recall"] <= 1).all()
    assert _row(points, "west") == (0, 1, 1)  # was (1, 0, 0): a TP on a truth outside, the miss hidden
    assert _row(points, "east") == (0, 1, 1)
    # the same as clipping both layers to the zone and evaluating alone
    west = evaluate_objects(pred.iloc[[0]], truth.iloc[[1]], iou=0.4).overall
    assert (west["tp"], west["fp"], west["fn"]) == (0, 1, 1)


def test_an_object_on_the_edge_shared_by_two_zones_counts_in_both() -> None:
    pred = frame([box(15, 25)], score=[0.9], **{"class": ["a"]})  # centre x 20: on the shared edge
    truth = frame([box(15, 25)], **{"class": ["a"]})
    points = sweep(pred, truth, {"score": [0.5]}, geofence=ZONES)
    assert _row(points, "all") == _row(points, "west") == _row(points, "east") == (1, 0, 0)  # was nowhere


def test_rps_min_area_is_in_the_units_the_operating_point_is_applied_in() -> None:
    squares = [box(30 * i, 30 * i + 10) for i in range(10)]
    tiny = [box(30 * i, 30 * i + 2, 100, 102) for i in range(5)]
    truth = frame(squares, **{"class": ["a"] * 10}).to_crs("EPSG:4326")
    pred = frame(squares + tiny, score=[0.9] * 15, **{"class": ["a"] * 15}).to_crs("EPSG:4326")
    tiny_area = float(shapely.area(pred.geometry.array[10]))  # degrees², the units of the area field and of area_filter
    points = sweep(pred, truth, {"score": [0.5], "min_area": [0.0, 2 * tiny_area]})
    op = choose_operating_point(points)
    assert (op["min_area"], op["tp"], op["fp"], op["fn"]) == (2 * tiny_area, 10, 0, 0)
    kept = apply_operating_point(pred, op)
    applied = evaluate_objects(kept, truth).overall
    assert (applied["tp"], applied["fp"], applied["fn"]) == (10, 0, 0)  # was (0, 0, 10): m² against degrees²


def test_overlapping_truth_burns_the_smaller_object_on_top(tmp_path: Path) -> None:
    # A (16 px, class a) and B (24 px, class b) overlap on 3 × 4 px; the training masks draw the smaller on top
    transform = from_origin(X0, Y0 + 100, 1.0, 1.0)
    scores = np.zeros((2, 12, 16), dtype="uint8")
    scores[0, 5:9, 6:10] = 250  # class a predicted exactly on A
    scores[1, 5:9, 10:13] = 250  # class b on B minus the overlap
    path = tmp_path / "scores.tif"
    with rasterio.open(path, "w", driver="GTiff", width=16, height=12, count=2, dtype="uint8", crs=UTM,
                       transform=transform) as ds:
        ds.write(scores)
        ds.descriptions = ("a", "b")
    truth = frame([shapely.box(X0 + 6, Y0 + 91, X0 + 10, Y0 + 95), shapely.box(X0 + 7, Y0 + 91, X0 + 13, Y0 + 95)],
                  **{"class": ["a", "b"]})
    result = evaluate_pixels(path, truth).per_class()
    assert (result["a"]["iou"], result["b"]["iou"]) == (1.0, 1.0)  # was a 4/16, b 12/24: B burned over A
    assert result["a"]["support"] == 16 and result["b"]["support"] == 12


def test_rps_plot_always_draws_the_chosen_combination() -> None:
    # 20 small truth squares and one large; a false positive of 8.5 m² that only min_area 9 removes. With
    # precision 1 required, min_area 9 is chosen, though 10 combinations have a better F1 (8 lines are drawn)
    small = [shapely.box(X0 + 5 * i, Y0, X0 + 5 * i + 2, Y0 + 2) for i in range(20)]
    truth = frame([*small, box(0, 4, 50, 54)], **{"class": ["a"] * 21})
    fp = shapely.box(X0, Y0 + 100, X0 + 8.5, Y0 + 101)
    pred = frame([*truth.geometry, fp], score=[0.9] * 22, **{"class": ["a"] * 22})
    areas = [i / 2 for i in range(10)] + [5.0, 6.0, 7.0, 8.0, 9.0]
    points = sweep(pred, truth, {"score": [0.5], "min_area": areas})
    op = choose_operating_point(points, target_precision=1.0)
    assert op["min_area"] == 9.0 and op["target_met"]
    curves = plot_curves(points, op)
    assert len(curves) == 8
    drawn = [c for label, c in curves.items() if "min_area=9.0" in label]
    assert drawn, list(curves)  # was absent: the star floated beside every line
    on_line = set(zip(drawn[0].recall.tolist(), drawn[0].precision.tolist(), strict=True))
    assert (op["recall"], op["precision"]) in on_line
