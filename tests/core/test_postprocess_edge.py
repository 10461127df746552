"""Post-processing ops on awkward real data: empty and missing geometries, invalid polygons, geographic CRSs,
non-finite parameters, degenerate extents; and vectorized ops against a per-feature shapely loop."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from aifactory.errors import ConfigError, InputError
from aifactory.postprocess import apply_chain
from aifactory.postprocess import skeleton as skeleton_module
from shapely import Polygon, box
from test_postprocess_helpers import ORIGIN, SCHEMA, UTM, detections

BOWTIE = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])


def run(frame, name, **params):
    return apply_chain(frame, [{"name": name, **params}])


def test_attributes_of_empty_geometries_are_nan_not_a_crash():
    frame = detections([box(0, 0, 10, 2), Polygon(), None, box(20, 0, 22, 2)], crs=None)
    out = run(frame, "attributes")
    assert out["elongation"].iloc[0] == pytest.approx(5) and out["orientation"].iloc[0] == pytest.approx(0)
    assert np.isnan(out["elongation"].iloc[1]) and np.isnan(out["orientation"].iloc[2])
    assert out["elongation"].iloc[3] == pytest.approx(1)


def test_skeletonize_drops_empty_polygons_and_keeps_lines():
    road = shapely.LineString([(0, 0), (100, 0)]).buffer(5, cap_style="flat")
    line = shapely.LineString([(0, 50), (10, 50)])
    only_empty = detections([Polygon(), Polygon()], classes="road", crs=None)
    assert len(run(only_empty, "skeletonize")) == 0
    out = run(detections([Polygon(), road, line], classes="road", crs=None), "skeletonize")
    assert sorted(out.geometry.geom_type) == ["LineString", "LineString"]
    assert all(road.buffer(1e-6).covers(g) or g.equals(line) for g in out.geometry)


def test_skeletonize_refuses_a_raster_too_large_instead_of_running_for_hours():
    roads = [box(0, y, 100, y + 4) for y in (0, 10, 20)]
    frame = detections([box(-1e5, -1e5, 1e5, 1e5), *roads], classes="road", crs=None)
    with pytest.raises(InputError, match=r"^skeletonize: at cell_size=.* set a larger cell_size$"):
        run(frame, "skeletonize")
    assert skeleton_module.MAX_CELLS < 6e10  # the huge polygon at the default cell


def test_explode_keeps_column_order_and_drops_missing_and_empty_parts():
    frame = detections([shapely.MultiPolygon([box(0, 0, 1, 1), box(2, 0, 4, 2)]), None, Polygon(),
                        shapely.from_wkt("MULTIPOLYGON EMPTY"), box(5, 5, 6, 6)], crs=None)
    frame["user"] = ["a", "b", "c", "d", "e"]
    out = run(frame, "explode")
    assert list(out.columns) == list(frame.columns)
    assert out["user"].tolist() == ["a", "a", "e"] and out["area"].tolist() == [1, 4, 1]
    assert list(out.index) == [0, 1, 2]


@pytest.mark.parametrize("name, params", [
    ("merge", {}), ("snap_to_grid", {"grid_size": 1}), ("nms", {}),
])
def test_overlay_ops_on_invalid_polygons_say_make_valid(name, params):
    frame = detections([BOWTIE, box(2, 2, 12, 12)], crs=None)
    with pytest.raises(InputError, match=rf"^{name}: invalid geometries \(.*\); put make_valid before it"):
        run(frame, name, **params)
    repaired = apply_chain(frame, ["make_valid", {"name": name, **params}])
    assert shapely.is_valid(repaired.geometry.array).all()


def test_geofence_clip_on_invalid_polygons_says_make_valid(tmp_path):
    import geopandas as gpd
    from aifactory.io.vector import write_vector

    path = tmp_path / "fence.gpkg"
    fence = box(ORIGIN[0] - 1, ORIGIN[1] - 1, ORIGIN[0] + 30, ORIGIN[1] + 30)
    write_vector(gpd.GeoDataFrame(geometry=[fence], crs=UTM), path, layer="fence")
    frame = detections([BOWTIE, box(2, 2, 12, 12)])
    with pytest.raises(InputError, match=r"^geofence: invalid geometries"):
        run(frame, "geofence", path=str(path), clip=True)


@pytest.mark.parametrize("name, params, field", [
    ("buffer", {"distance": 2}, "distance"), ("open", {"distance": 1}, "distance"),
    ("close", {"distance": 1}, "distance"), ("simplify", {"tolerance": 0.5}, "tolerance"),
    ("regularize", {}, "tolerance"), ("straighten_lines", {}, "tolerance"),
    ("dedupe", {"distance": 3}, "distance"), ("skeletonize", {"cell_size": 0.5}, "cell_size"),
])
def test_lengths_in_a_geographic_crs_are_refused(name, params, field):
    frame = detections([box(0, 0, 10, 10), box(12, 0, 22, 10)]).to_crs("EPSG:4326")
    with pytest.raises(InputError, match=rf"^{name}: .*geographic CRS \(EPSG:4326\) where {field}=.* degrees; "
                                         r"reproject them to a projected CRS \(e\.g\. EPSG:32631\)"):
        run(frame, name, **params)
    assert len(run(frame.iloc[:0], name, **params)) == 0  # empty stays empty


def test_geographic_crs_keeps_area_units_and_scale_free_ops():
    frame = detections([box(0, 0, 10, 10), box(12, 0, 22, 10)]).to_crs("EPSG:4326")
    assert len(run(frame, "area_filter", min_area=1e-9)) == 2  # degrees², like the area field (RPS's min_area)
    for name, params in [("buffer", {"distance": 0}), ("smooth", {}), ("skeletonize", {}), ("snap_to_grid",
                                                                                          {"grid_size": 1e-7})]:
        assert len(run(frame, name, **params)) == 2, name
    assert run(frame, "reproject", crs=UTM)["area"].tolist() == pytest.approx([100, 100], rel=1e-6)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_parameters_are_refused_before_running(tmp_path, value):
    frame = detections([box(0, 0, 10, 10)])
    with pytest.raises(ConfigError, match=r"^postprocess: ops\.0\.distance: Input should be a finite number"):
        run(frame, "buffer", distance=value)
    chain = tmp_path / "ops.yaml"
    chain.write_text("ops:\n  - {name: simplify, tolerance: .inf}\n")
    from aifactory.postprocess import load_chain

    with pytest.raises(ConfigError, match=r"ops\.yaml: ops\.0\.tolerance: Input should be a finite number"):
        load_chain(chain)


def test_dedupe_at_exactly_the_distance_is_a_duplicate():
    frame = detections([shapely.Point(0, 0), shapely.Point(3, 0), shapely.Point(7, 0)], crs=None)
    assert run(frame, "dedupe", distance=3)["tile_id"].tolist() == ["t0", "t2"]


def test_vectorized_ops_match_a_per_feature_loop():
    rng = np.random.default_rng(3)
    corners = rng.uniform([0, 0, 2], [200, 200, 25], (150, 3))
    boxes = [box(x, y, x + w, y + w * 0.7) for x, y, w in corners]
    scores = rng.uniform(0, 1, len(boxes)).round(4)
    classes = list(rng.choice(["a", "b"], len(boxes)))
    frame = detections(boxes, scores=scores, classes=classes, crs=None)
    frame["user"] = np.arange(len(frame))
    order = np.lexsort((np.arange(len(boxes)), -scores))
    for threshold in (0.2, 0.5):
        kept: list[int] = []
        for i in order:
            if all(classes[k] != classes[i] or boxes[i].intersection(boxes[k]).area
                   / boxes[i].union(boxes[k]).area <= threshold for k in kept):
                kept.append(i)
        assert sorted(run(frame, "nms", iou_threshold=threshold)["user"]) == sorted(kept)
    merged = run(frame, "merge")
    unions = [shapely.union_all([b for b, c in zip(boxes, classes, strict=True) if c == cls]) for cls in "ab"]
    expected = sum(len(shapely.get_parts(union)) for union in unions)
    assert len(merged) == expected and shapely.is_valid(merged.geometry.array).all()
    assert list(merged.columns[: len(SCHEMA)]) == SCHEMA
    for name, func in [("convex_hull", shapely.convex_hull), ("oriented_box", shapely.oriented_envelope),
                       ("bounding_box", shapely.envelope)]:
        out = run(frame, name)
        assert all(a.equals(func(b)) for a, b in zip(out.geometry, boxes, strict=True)), name
    simplified = run(frame.assign(geometry=[b.buffer(3) for b in boxes]), "simplify", tolerance=1)
    assert all(a.equals_exact(b.buffer(3).simplify(1), 0) for a, b in zip(simplified.geometry, boxes, strict=True))


@pytest.mark.parametrize("op", ["regularize", "straighten_lines"])
def test_missing_and_empty_geometries_go_whether_or_not_the_op_finds_its_type(op):
    """With no feature of the op's type, the op returned the frame as it was: missing geometries stayed."""
    from shapely import LineString, Point

    only_points = detections([Point(5, 5), None, Polygon()]) if op == "regularize" else \
        detections([box(0, 0, 10, 10), None, LineString()])
    out = run(only_points, op)
    assert len(out) == 1 and not out.geometry.is_empty.any()
