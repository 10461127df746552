"""Ops between features: merge touching/overlapping polygons, polygon NMS, distance de-duplication.

Candidate pairs come from one vectorized ``STRtree.query`` over all features, overlaps from vectorized
``shapely.intersection``; per-class work is a filter on the pairs, never a loop over classes or features.
Greedy suppression (NMS) is sequential by definition; :func:`greedy_keep` resolves it in rounds over the
conflict graph only (see its docstring), so features without conflicts cost nothing.
"""

from __future__ import annotations

from typing import Literal

import geopandas as gpd
import numpy as np
import shapely
from pydantic import Field
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from aifactory.config import StrictModel
from aifactory.postprocess.base import (
    OPS,
    SCORE,
    class_codes,
    geometries,
    geos_errors,
    is_polygonal,
    metric_only,
    replace_geometry,
    rows,
    scores,
)


def candidate_pairs(geoms: np.ndarray, classes: np.ndarray | None, predicate: str = "intersects",
                    distance: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of features meeting ``predicate``, of the same class when ``classes`` is given."""
    tree = shapely.STRtree(geoms)
    if distance is None:
        left, right = tree.query(geoms, predicate=predicate)
    else:
        left, right = tree.query(geoms, predicate="dwithin", distance=distance)
    keep = left < right
    if classes is not None:
        keep &= classes[left] == classes[right]
    return left[keep], right[keep]


def ranks(frame: gpd.GeoDataFrame, op: str) -> np.ndarray:
    """Rank of each feature for greedy keeping: highest score first, then original order (missing score last)."""
    values = np.nan_to_num(scores(frame, op), nan=-np.inf)
    order = np.lexsort((np.arange(len(frame)), -values))
    rank = np.empty(len(frame), dtype=np.intp)
    rank[order] = np.arange(len(frame))
    return rank


def greedy_keep(rank: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Which features greedy suppression keeps: walking by rank, a feature survives unless a kept one conflicts.

    Solved in rounds instead of a walk: an undecided feature with a kept better-ranked neighbour is dropped;
    one whose better-ranked neighbours are all dropped is kept. Each round settles at least the best
    undecided feature, and the result is exactly the sequential walk's.
    """
    state = np.zeros(len(rank), dtype=np.int8)  # 0 undecided, 1 kept, -1 dropped
    better_first = rank[left] < rank[right]
    high, low = np.where(better_first, left, right), np.where(better_first, right, left)
    while True:
        pending = state[low] == 0
        high, low = high[pending], low[pending]
        undecided = state == 0
        if not undecided.any():
            break
        killed = np.zeros(len(rank), bool)
        killed[low[state[high] == 1]] = True
        waiting = np.zeros(len(rank), bool)
        waiting[low[state[high] == 0]] = True
        state[undecided & killed] = -1
        state[undecided & ~killed & ~waiting] = 1
    return state == 1


def _overlaps(geoms: np.ndarray, left: np.ndarray, right: np.ndarray, op: str) -> np.ndarray:
    with geos_errors(op):
        return shapely.area(shapely.intersection(geoms[left], geoms[right]))


class NmsParams(StrictModel):
    iou_threshold: float = Field(0.5, gt=0, le=1, description="suppress a detection overlapping a better one "
                                                              "by more than this")
    overlap: Literal["iou", "ios"] = Field(
        "iou", description="'iou': intersection over union; 'ios': intersection over the smaller one "
                           "(also catches a small detection inside a large one)")
    per_class: bool = Field(True, description="only detections of the same class suppress each other")


@OPS.register("nms", NmsParams)
def nms(frame: gpd.GeoDataFrame, params: NmsParams) -> gpd.GeoDataFrame:
    """Polygon non-maximum suppression: of overlapping detections keep the higher score (IoU on true shapes)."""
    if not len(frame):
        return frame.copy()
    geoms = geometries(frame)
    rank = ranks(frame, "nms")
    left, right = candidate_pairs(geoms, class_codes(frame) if params.per_class else None)
    inter = _overlaps(geoms, left, right, "nms")
    area = shapely.area(geoms)
    pair_area = area[left], area[right]
    denominator = pair_area[0] + pair_area[1] - inter if params.overlap == "iou" else np.minimum(*pair_area)
    with np.errstate(divide="ignore", invalid="ignore"):
        conflict = inter / denominator > params.iou_threshold
    return frame.loc[greedy_keep(rank, left[conflict], right[conflict])].copy()


class DedupeParams(StrictModel):
    distance: float = Field(gt=0, description="features at most this far apart are duplicates (CRS units)")
    using: Literal["centroid", "geometry"] = Field(
        "centroid", description="measure between centroids (points, small objects) or between the shapes")
    per_class: bool = Field(True, description="only features of the same class are duplicates of each other")


@OPS.register("dedupe", DedupeParams)
def dedupe(frame: gpd.GeoDataFrame, params: DedupeParams) -> gpd.GeoDataFrame:
    """Distance de-duplication: of features within distance keep the higher score (else the first)."""
    if not len(frame):
        return frame.copy()
    metric_only(frame, "dedupe", distance=params.distance)
    geoms = geometries(frame)
    if params.using == "centroid":
        geoms = shapely.centroid(geoms)
    rank = ranks(frame, "dedupe") if SCORE in frame.columns else np.arange(len(frame))
    left, right = candidate_pairs(geoms, class_codes(frame) if params.per_class else None,
                                  distance=params.distance)
    return frame.loc[greedy_keep(rank, left, right)].copy()


def union_groups(geoms: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Union of the geometries of each group ``labels`` (0..k-1), vectorized.

    ``shapely.union_all(axis=1)`` unions the rows of a 2-D array and skips missing entries; groups are
    bucketed by size (powers of two) so that padding at most doubles the array.
    """
    n_groups = int(labels.max()) + 1 if len(labels) else 0
    out = np.empty(n_groups, dtype=object)
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels, minlength=n_groups)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    slot = np.arange(len(labels)) - starts[labels[order]]
    width = np.maximum(1, 2 ** np.ceil(np.log2(np.maximum(sizes, 1)))).astype(np.intp)
    for size in np.unique(width):
        groups = np.flatnonzero(width == size)
        row = np.full(n_groups, -1)
        row[groups] = np.arange(len(groups))
        members = row[labels[order]] >= 0
        table = np.full((len(groups), size), None, dtype=object)
        table[row[labels[order][members]], slot[members]] = geoms[order][members]
        out[groups] = shapely.union_all(table, axis=1)
    return out


class MergeParams(StrictModel):
    score: Literal["area_weighted_mean", "max"] = Field(
        "area_weighted_mean", description="score of a merged feature: mean of the members' scores weighted by "
                                          "their areas, or the best member's")
    per_class: bool = Field(True, description="only merge features of the same class")


@OPS.register("merge", MergeParams)
def merge(frame: gpd.GeoDataFrame, params: MergeParams) -> gpd.GeoDataFrame:
    """Dissolve touching or overlapping polygons (per class) into one feature each.

    A merged feature takes its other attributes (model_run, tile_id, review…) from its best-scored member
    (the largest without a score column); lines and points are left alone.
    """
    if not len(frame):
        return frame.copy()
    geoms = geometries(frame)
    polygons = np.flatnonzero(is_polygonal(geoms))
    left, right = candidate_pairs(geoms[polygons], class_codes(frame)[polygons] if params.per_class else None)
    n = len(frame)
    graph = coo_matrix((np.ones(len(left)), (polygons[left], polygons[right])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    area = shapely.area(geoms)
    has_score = SCORE in frame.columns
    priority = scores(frame, "merge") if has_score else area
    best = np.lexsort((np.arange(n), -np.nan_to_num(priority, nan=-np.inf), labels))
    head = best[np.r_[True, labels[best][1:] != labels[best][:-1]]]  # best member of each group, by label
    sizes = np.bincount(labels)
    out = rows(frame, head)
    grouped = np.flatnonzero(sizes > 1)
    if not len(grouped):
        return out
    members = sizes[labels] > 1
    _, compact = np.unique(labels[members], return_inverse=True)
    merged = geometries(out).copy()
    with geos_errors("merge"):
        merged[grouped] = union_groups(geoms[members], compact)
    if has_score:
        values = priority[members]
        if params.score == "max":
            combined = np.full(len(grouped), -np.inf)
            np.maximum.at(combined, compact, np.nan_to_num(values, nan=-np.inf))
        else:
            weight = area[members]
            combined = np.bincount(compact, weight * values) / np.maximum(np.bincount(compact, weight), 1e-300)
        out[SCORE] = out[SCORE].astype("float64")
        out.loc[grouped, SCORE] = combined
    return replace_geometry(out, merged)
