"""Outline ops: regularize building outlines (right angles on a dominant orientation) and straighten lines.

Regularization is written here because the maintained stack has no such operation (shapely/GEOS offer
simplification and oriented boxes, not orthogonalization) and the one PyPI package for it
(``buildingregulariser``) is young and loops over features in Python. The method, on every ring of every
building at once (:mod:`.rings`):

1. remove pixel noise with Douglas-Peucker (``tolerance``);
2. find each building's dominant orientation: the circular mean of its edge directions modulo 90°
   (angles ×4 so that walls at right angles vote together), weighted by length² (measured on noisy
   rectangles: half the error of plain length weights, as short edges carry the most direction noise);
3. rotate into that frame, call each edge horizontal or vertical, and merge consecutive edges of one kind
   into a wall at their length-weighted mean level; walls shorter than ``min_edge`` are dropped and their
   neighbours merged again;
4. each corner is where a horizontal wall meets the next vertical one; rotate back.

A ring with fewer than four walls, or a result whose area differs from the input by more than
``max_area_change``, falls back to the oriented bounding box: the right-angled shape closest to the input.
"""

from __future__ import annotations

from typing import Literal

import geopandas as gpd
import numpy as np
import shapely
from pydantic import Field

from aifactory.config import StrictModel
from aifactory.postprocess.base import (
    OPS,
    geometries,
    is_linear,
    is_polygonal,
    metric_only,
    repair,
    replace_geometry,
)
from aifactory.postprocess.rings import RingTable, decimate, decompose, rebuild, ring_neighbours


def merge_runs(kind: np.ndarray, ring: np.ndarray, weight: np.ndarray, weighted: np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge consecutive items of the same kind within each (cyclic) ring, summing weights and weighted values.

    Items are ordered by ring; the last run of a ring joins its first when they are of the same kind.
    """
    if not len(kind):
        return kind, ring, weight, weighted
    first = np.r_[True, ring[1:] != ring[:-1]]
    last = np.r_[ring[1:] != ring[:-1], True]
    run = np.cumsum(first | np.r_[True, kind[1:] != kind[:-1]]) - 1
    head, tail = np.flatnonzero(first), np.flatnonzero(last)
    wrap = (kind[head] == kind[tail]) & (run[head] != run[tail])
    relabel = np.arange(run[-1] + 1)
    relabel[run[tail[wrap]]] = run[head[wrap]]
    _, run = np.unique(relabel[run], return_inverse=True)
    runs = run.max() + 1
    out_kind, out_ring = np.empty(runs, kind.dtype), np.empty(runs, ring.dtype)
    out_kind[run], out_ring[run] = kind, ring
    return (out_kind, out_ring, np.bincount(run, weight, minlength=runs),
            np.bincount(run, weighted, minlength=runs))


def dominant_angle(table: RingTable, n_features: int) -> np.ndarray:
    """Per feature, the mean direction of its shell edges modulo 90°, weighted by length² (radians)."""
    _, nxt = table.neighbours()
    delta = table.coords[nxt] - table.coords
    weight = (delta**2).sum(axis=1) * table.exterior[table.ring]  # length²: long walls are the surest
    quad = 4 * np.arctan2(delta[:, 1], delta[:, 0])
    owner = table.feature[table.ring]
    c = np.bincount(owner, weight * np.cos(quad), minlength=n_features)
    s = np.bincount(owner, weight * np.sin(quad), minlength=n_features)
    return np.arctan2(s, c) / 4


def box_angle(geoms: np.ndarray) -> np.ndarray:
    """Direction of the first side of each geometry's oriented bounding box (radians)."""
    boxes = shapely.oriented_envelope(geoms)
    coords, owner = shapely.get_coordinates(boxes, return_index=True)
    first = np.r_[True, owner[1:] != owner[:-1]]
    start = np.flatnonzero(first)
    second = np.minimum(start + 1, len(coords) - 1)
    angle = np.zeros(len(geoms))
    delta = coords[second] - coords[start]
    angle[owner[start]] = np.arctan2(delta[:, 1], delta[:, 0])
    return angle


def orthogonalize(table: RingTable, angle: np.ndarray, min_edge: float) -> RingTable:
    """Right-angled rings: every edge snapped to one of two perpendicular directions per feature."""
    owner = table.feature[table.ring]
    counts = np.bincount(owner, minlength=len(angle)).clip(min=1)
    center = np.column_stack([np.bincount(owner, table.coords[:, i], minlength=len(angle)) / counts
                              for i in (0, 1)])
    cos, sin = np.cos(angle)[owner], np.sin(angle)[owner]
    local = table.coords - center[owner]
    x, y = local[:, 0] * cos + local[:, 1] * sin, -local[:, 0] * sin + local[:, 1] * cos
    _, nxt = table.neighbours()
    dx, dy = x[nxt] - x, y[nxt] - y
    length = np.hypot(dx, dy)
    horizontal = np.abs(dx) >= np.abs(dy)
    level = np.where(horizontal, (y + y[nxt]) / 2, (x + x[nxt]) / 2)  # a wall's y (horizontal) or x
    kind, ring, weight, weighted = merge_runs(horizontal, table.ring, length, length * level)
    long_enough = weight >= min_edge
    kind, ring, weight, weighted = merge_runs(kind[long_enough], ring[long_enough], weight[long_enough],
                                              weighted[long_enough])
    walls = np.bincount(ring, minlength=table.n_rings)
    keep = walls[ring] >= 4
    kind, ring, level = kind[keep], ring[keep], (weighted / np.maximum(weight, 1e-300))[keep]
    _, following = ring_neighbours(ring, np.ones(table.n_rings, bool))
    corner_x = np.where(kind, level[following], level)
    corner_y = np.where(kind, level, level[following])
    owner = table.feature[ring]
    cos, sin = np.cos(angle)[owner], np.sin(angle)[owner]
    coords = np.column_stack([corner_x * cos - corner_y * sin, corner_x * sin + corner_y * cos]) + center[owner]
    return table.with_vertices(coords, ring)


class RegularizeParams(StrictModel):
    tolerance: float = Field(1.0, gt=0, description="noise removed before squaring (CRS units; about a pixel)")
    min_edge: float | None = Field(None, ge=0, description="walls shorter than this are dropped "
                                                           "(default: 2 × tolerance)")
    orientation: Literal["dominant", "oriented_box"] = Field(
        "dominant", description="building axis: weighted mean of edge directions, or the oriented box's")
    max_area_change: float = Field(0.3, gt=0, description="relative area change beyond which the oriented "
                                                          "bounding box is used instead")


@OPS.register("regularize", RegularizeParams)
def regularize(frame: gpd.GeoDataFrame, params: RegularizeParams) -> gpd.GeoDataFrame:
    """Square building outlines: right angles on each building's dominant orientation (polygons only)."""
    metric_only(frame, "regularize", tolerance=params.tolerance, min_edge=params.min_edge)
    geoms = geometries(frame).copy()
    polygons = np.flatnonzero(is_polygonal(geoms))
    if not len(polygons):
        return replace_geometry(frame, geoms)  # no polygon: missing and empty geometries go, as when there are
    source = geoms[polygons]
    table = decompose(shapely.simplify(source, params.tolerance, preserve_topology=True))
    angle = dominant_angle(table, len(source)) if params.orientation == "dominant" else box_angle(source)
    min_edge = 2 * params.tolerance if params.min_edge is None else params.min_edge
    squared = repair(rebuild(orthogonalize(table, angle, min_edge)), np.ones(len(source), bool))
    before, after = shapely.area(source), shapely.area(squared)
    with np.errstate(divide="ignore", invalid="ignore"):
        off = ~(np.abs(after - before) <= params.max_area_change * before) | shapely.is_empty(squared)
    squared[off] = shapely.oriented_envelope(source[off])
    geoms[polygons] = squared
    return replace_geometry(frame, geoms)


class StraightenParams(StrictModel):
    tolerance: float = Field(1.0, gt=0, description="Douglas-Peucker tolerance for wiggles (CRS units)")
    angle: float = Field(20.0, gt=0, lt=180, description="vertices turning less than this (degrees) are removed…")
    max_deviation: float | None = Field(None, gt=0, description="…when that moves the line by at most this "
                                                                "(default: 3 × tolerance)")


def turning_angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Direction change at b (degrees) on the path a → b → c."""
    u, v = b - a, c - b
    cross = u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]
    dot = (u * v).sum(axis=1)
    return np.degrees(np.abs(np.arctan2(cross, dot)))


def chord_distance(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Distance from b to the segment a-c."""
    ac, ab = c - a, b - a
    t = np.clip((ab * ac).sum(axis=1) / np.maximum((ac * ac).sum(axis=1), 1e-300), 0, 1)
    return np.hypot(*(ab - t[:, None] * ac).T)


@OPS.register("straighten_lines", StraightenParams)
def straighten_lines(frame: gpd.GeoDataFrame, params: StraightenParams) -> gpd.GeoDataFrame:
    """Straighten lines (roads): drop wiggles, then vertices with small turns; real bends stay (lines only)."""
    metric_only(frame, "straighten_lines", tolerance=params.tolerance, max_deviation=params.max_deviation)
    geoms = geometries(frame).copy()
    lines = is_linear(geoms)
    if not lines.any():
        return replace_geometry(frame, geoms)  # no line: missing and empty geometries go, as when there are
    deviation = 3 * params.tolerance if params.max_deviation is None else params.max_deviation

    def cost(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.where(chord_distance(a, b, c) <= deviation, turning_angle(a, b, c), np.inf)

    table = decompose(shapely.simplify(geoms[lines], params.tolerance, preserve_topology=True))
    geoms[lines] = rebuild(decimate(table, cost, params.angle))
    return replace_geometry(frame, geoms)
