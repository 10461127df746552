"""Object metrics on hand-computed cases: ties, greedy order, empty sets, touching objects, min-area,
groups, classes, CRS alignment, geographic truth, repairs and bad geometry types."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import shapely
from aifactory.errors import InputError
from aifactory.evaluation.matching import nms_keep, rank_order, self_pairs
from aifactory.evaluation.metrics import average_precision
from aifactory.evaluation.objects import evaluate_objects, pr_curve

UTM = "EPSG:32631"
X0, Y0 = 500_000.0, 5_000_000.0


def box(x: float, y: float, w: float = 10, h: float = 10) -> shapely.Polygon:
    return shapely.box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + h)


def frame(geoms: list, crs: str | None = UTM, **columns: list) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(columns, geometry=geoms, crs=crs)


def test_greedy_by_score_takes_best_iou_and_leaves_the_rest() -> None:
    # A (score 0.9) and B (score 0.8) both overlap T1; B fits better but A comes first and takes it
    truth = frame([box(0, 0), box(20, 0)])
    a = shapely.box(X0 + 1, Y0, X0 + 11, Y0 + 10)  # IoU with T1 = 90/110
    b = shapely.box(X0 + 0.5, Y0, X0 + 10.5, Y0 + 10)  # IoU with T1 = 95/105
    pred = frame([b, a], score=[0.8, 0.9])
    result = evaluate_objects(pred, truth)
    assert (result.overall["tp"], result.overall["fp"], result.overall["fn"]) == (1, 1, 1)
    assert result.pred["matched"].tolist() == [-1, 0]  # the higher score took T1 despite the lower IoU
    assert result.pred["iou"].iloc[1] == pytest.approx(90 / 110)
    assert result.truth["status"].tolist() == ["tp", "fn"]


def test_ties_are_deterministic() -> None:
    truth = frame([box(0, 0), box(10, 0)])
    # equal scores: the first in input order goes first, even with the lower IoU
    pred = frame([box(2, 0), box(1, 0)], score=[0.5, 0.5])
    result = evaluate_objects(pred, truth, iou=0.5)
    assert result.pred["matched"].tolist() == [0, -1]  # the second (IoU 0.82 with T0) finds T0 taken
    # equal IoU with two truth objects: the higher truth index wins, as in COCO
    pred = frame([box(5, 0, 10, 10)], score=[0.9])
    result = evaluate_objects(pred, truth, iou=0.3)
    assert result.pred["matched"].tolist() == [1]
    assert result.pred["iou"].iloc[0] == pytest.approx(50 / 150)


def test_touching_objects_do_not_match() -> None:
    truth = frame([box(0, 0)])
    pred = frame([box(10, 0)], score=[0.9])  # shares an edge, no area
    result = evaluate_objects(pred, truth, iou=0.01)
    assert (result.overall["tp"], result.overall["fp"], result.overall["fn"]) == (0, 1, 1)
    assert result.overall["ap50"] == 0.0


@pytest.mark.parametrize(("n_pred", "n_truth", "expected"), [
    (0, 0, {"precision": 1.0, "recall": 1.0, "f1": 1.0, "ap50": None, "ap": None}),
    (0, 2, {"precision": 1.0, "recall": 0.0, "f1": 0.0, "ap50": 0.0, "ap": 0.0}),
    (2, 0, {"precision": 0.0, "recall": 1.0, "f1": 0.0, "ap50": None, "ap": None}),
])
def test_empty_sets_have_defined_metrics(n_pred: int, n_truth: int, expected: dict) -> None:
    pred = frame([box(30 * i, 0) for i in range(n_pred)], score=[0.9] * n_pred, **{"class": ["a"] * n_pred})
    truth = frame([box(30 * i, 100) for i in range(n_truth)], **{"class": ["a"] * n_truth})
    result = evaluate_objects(pred, truth)
    for key, value in expected.items():
        assert result.overall[key] == value, key
    json.dumps(result.to_dict())  # None → null, no NaN anywhere
    assert "NaN" not in json.dumps(result.to_dict())


def test_min_area_applies_to_both_sides() -> None:
    truth = frame([box(0, 0), box(50, 0, 2, 2)])  # 100 m² and 4 m²
    pred = frame([box(0, 0), box(80, 0, 2, 2)], score=[0.9, 0.8])  # the small one is a false positive
    full = evaluate_objects(pred, truth)
    assert (full.overall["tp"], full.overall["fp"], full.overall["fn"]) == (1, 1, 1)
    filtered = evaluate_objects(pred, truth, min_area=5)
    assert (filtered.overall["tp"], filtered.overall["fp"], filtered.overall["fn"]) == (1, 0, 0)
    assert filtered.inputs["truth"]["below_min_area"] == 1 and filtered.inputs["pred"]["below_min_area"] == 1


def test_groups_never_match_across_and_report_each() -> None:
    truth = frame([box(0, 0), box(0, 0), box(40, 0)], image=["a", "b", "b"])
    pred = frame([box(0, 0), box(40, 0), box(90, 0)], score=[0.9, 0.8, 0.7], image=["b", "a", "b"])
    result = evaluate_objects(pred, truth, by="image")
    assert set(result.groups) == {"a", "b"}
    a, b = result.groups["a"], result.groups["b"]
    assert (a["tp"], a["fp"], a["fn"]) == (0, 1, 1)  # the prediction at (40, 0) in image a has no truth there
    assert (b["tp"], b["fp"], b["fn"]) == (1, 1, 1)
    assert (result.overall["tp"], result.overall["fp"], result.overall["fn"]) == (1, 2, 2)


def test_classes_are_matched_separately_and_confused_in_the_matrix() -> None:
    truth = frame([box(0, 0), box(30, 0)], **{"class": ["car", "tree"]})
    pred = frame([box(0, 0), box(30, 0)], score=[0.9, 0.8], **{"class": ["car", "car"]})
    result = evaluate_objects(pred, truth)
    assert result.classes["car"]["tp"] == 1 and result.classes["car"]["fp"] == 1
    assert result.classes["tree"]["fn"] == 1 and result.classes["tree"]["n_pred"] == 0
    labels, matrix = result.confusion.labels, result.confusion.matrix
    assert labels == ["car", "tree", "background"]
    assert matrix[labels.index("tree"), labels.index("car")] == 1  # tree predicted as car
    assert matrix[labels.index("car"), labels.index("car")] == 1
    assert matrix.sum() == 2


def test_custom_class_field_min_score_and_no_class_field() -> None:
    truth = frame([box(0, 0), box(30, 0)], label=["x", "x"])
    pred = frame([box(0, 0), box(30, 0)], conf=[0.9, 0.2], label=["x", "x"])
    result = evaluate_objects(pred, truth, class_field="label", score_field="conf", min_score=0.5)
    assert (result.overall["tp"], result.overall["fp"], result.overall["fn"]) == (1, 0, 1)
    assert result.overall["ap50"] == pytest.approx(1.0)  # AP ranks every detection, min_score only counts
    assert result.pred["status"].tolist() == ["tp", "below_score"]
    single = evaluate_objects(pred.drop(columns="label"), truth.drop(columns="label"), score_field="conf")
    assert list(single.classes) == ["object"]
    with pytest.raises(InputError, match="no class field 'label'"):
        evaluate_objects(pred, truth.drop(columns="label"), class_field="label", score_field="conf")


def test_predictions_are_reprojected_to_the_truth_crs() -> None:
    truth = frame([box(0, 0, 40, 40), box(100, 0, 40, 40)])
    pred = frame([box(1, 0, 40, 40), box(100, 0, 40, 40)], score=[0.9, 0.8]).to_crs("EPSG:4326")
    result = evaluate_objects(pred, truth, iou=0.9)
    assert result.overall["tp"] == 2
    assert result.inputs["pred"]["reprojected"] is True
    assert result.pred["iou"].iloc[0] == pytest.approx(39 * 40 / (41 * 40), abs=1e-4)


def test_geographic_truth_is_evaluated_in_metres() -> None:
    truth = frame([box(0, 0, 10, 10), box(50, 0, 3, 3)]).to_crs("EPSG:4326")  # 100 m² and 9 m²
    pred = frame([box(0, 0, 10, 10)], score=[0.9]).to_crs("EPSG:4326")
    result = evaluate_objects(pred, truth, min_area=50)  # m², not degrees²
    assert result.inputs["crs"] == "EPSG:32631"
    assert (result.overall["tp"], result.overall["fn"]) == (1, 0)


def test_pixel_space_without_crs() -> None:
    truth = frame([shapely.box(0, 0, 10, 10)], crs=None)
    pred = frame([shapely.box(0, 1, 10, 11)], crs=None, score=[0.7])
    result = evaluate_objects(pred, truth, min_area=50)  # pixels²
    assert result.overall["tp"] == 1 and result.inputs["crs"] is None
    with pytest.raises(InputError, match="has a CRS"):
        evaluate_objects(pred.set_crs(UTM), truth)


def test_invalid_geometries_are_repaired_and_counted() -> None:
    bowtie = shapely.Polygon([(X0, Y0), (X0 + 10, Y0 + 10), (X0 + 10, Y0), (X0, Y0 + 10)])
    truth = frame([bowtie, box(40, 0)])
    pred = frame([bowtie, box(40, 0)], score=[0.9, 0.9])
    result = evaluate_objects(pred, truth)
    assert result.inputs["pred"]["repaired"] == 1 and result.inputs["truth"]["repaired"] == 1
    assert result.overall["tp"] == 2
    assert shapely.is_valid(result.pred.geometry.array).all()


def test_points_are_refused_with_one_line() -> None:
    with pytest.raises(InputError, match=r"need polygons .* found Point"):
        evaluate_objects(frame([shapely.Point(X0, Y0)], score=[0.5]), frame([box(0, 0)]))


def test_pr_curve_and_ap_by_hand() -> None:
    truth = frame([box(0, 0), box(30, 0), box(60, 0)])
    pred = frame([box(0, 0), box(200, 0), box(30, 0), box(300, 0)], score=[0.9, 0.8, 0.7, 0.6])
    curve = pr_curve(pred, truth, iou=0.5)
    np.testing.assert_allclose(curve.scores, [0.9, 0.8, 0.7, 0.6])
    np.testing.assert_allclose(curve.precision, [1, 1 / 2, 2 / 3, 2 / 4])
    np.testing.assert_allclose(curve.recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    # COCO AP: precision envelope 1 up to recall 1/3 (34 points), 2/3 up to 2/3 (33 points), then 0
    expected = (34 * 1 + 33 * (2 / 3)) / 101
    assert average_precision(np.array([True, False, True, False]), 3) == pytest.approx(expected)
    assert evaluate_objects(pred, truth).overall["ap50"] == pytest.approx(expected)


def test_nms_suppresses_by_rank_and_only_from_kept_detections() -> None:
    # 0 beats 1 (IoU 0.82); 1 would beat 2, but 1 is suppressed, so 2 survives (IoU(0, 2) < 0.5)
    geoms = np.array([shapely.box(0, 0, 10, 10), shapely.box(1, 0, 11, 10), shapely.box(6, 0, 16, 10)])
    rank = np.argsort(rank_order(np.array([0.9, 0.8, 0.7])))
    keep = nms_keep(self_pairs(geoms), rank, 3, 0.5)
    assert keep.tolist() == [True, False, True]
