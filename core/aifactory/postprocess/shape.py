"""Shape ops: simplify (Douglas-Peucker, Visvalingam-Whyatt), Chaikin smoothing, buffer/open/close, hulls,
boxes and centroids.

Visvalingam-Whyatt is written here (on the vectorized vertex table of :mod:`.rings`) because no maintained
library fits: GEOS's VW (``shapely.coverage_simplify``) treats a whole array as one polygonal coverage
(overlapping detections give invalid output, lines are refused, per-feature calls would be a Python loop),
and the PyPI packages (``simplification``, ``visvalingamwyatt``) take one coordinate list per call. Chaikin
smoothing has no library form in the shapely stack; it is four lines of numpy on the same table.
"""

from __future__ import annotations

from typing import Literal

import geopandas as gpd
import numpy as np
import shapely
from pydantic import Field

from aifactory.config import StrictModel
from aifactory.postprocess.base import OPS, geometries, is_polygonal, metric_only, repair, replace_geometry
from aifactory.postprocess.rings import RingTable, decimate, decompose, rebuild
from aifactory.registry import NoParams


def triangle_area(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Area of the triangles (a, b, c), each an (n, 2) array: Visvalingam-Whyatt's effective area."""
    return np.abs((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])) / 2


class SimplifyParams(StrictModel):
    tolerance: float = Field(1.0, gt=0, description="Douglas-Peucker: max distance moved (CRS units); "
                                                    "Visvalingam-Whyatt: vertices whose triangle area is below "
                                                    "tolerance² are removed")
    method: Literal["douglas_peucker", "visvalingam_whyatt"] = Field(
        "douglas_peucker", description="keep-the-farthest-point (GEOS, topology preserving) or "
                                       "drop-the-smallest-triangle (smoother, keeps the area better)")


@OPS.register("simplify", SimplifyParams)
def simplify(frame: gpd.GeoDataFrame, params: SimplifyParams) -> gpd.GeoDataFrame:
    """Reduce vertices with Douglas-Peucker or Visvalingam-Whyatt; valid polygons stay valid."""
    metric_only(frame, "simplify", tolerance=params.tolerance)
    geoms = geometries(frame)
    if params.method == "douglas_peucker":
        return replace_geometry(frame, shapely.simplify(geoms, params.tolerance, preserve_topology=True))
    simplified = rebuild(decimate(decompose(geoms), triangle_area, params.tolerance**2))
    return replace_geometry(frame, repair(simplified, is_polygonal(geoms)))


def chaikin(table: RingTable) -> RingTable:
    """One corner-cutting round: each edge gives its 1/4 and 3/4 points; line ends stay where they are."""
    prev, nxt = table.neighbours()
    has_edge = nxt >= 0
    here, there = table.coords, table.coords[np.where(has_edge, nxt, 0)]
    # up to four output points per vertex, in order: [line start], q, r, [line end]
    points = np.stack([here, 0.75 * here + 0.25 * there, 0.25 * here + 0.75 * there, here], axis=1)
    emit = np.column_stack([prev < 0, has_edge, has_edge, ~has_edge])
    return table.with_vertices(points[emit], np.repeat(table.ring, emit.sum(axis=1)))


class SmoothParams(StrictModel):
    iterations: int = Field(2, ge=1, le=6, description="corner-cutting rounds (each doubles the vertices)")


@OPS.register("smooth", SmoothParams)
def smooth(frame: gpd.GeoDataFrame, params: SmoothParams) -> gpd.GeoDataFrame:
    """Chaikin corner cutting for natural outlines and lines (trees, water, roads); shrinks convex corners."""
    geoms = geometries(frame)
    table = decompose(geoms)
    for _ in range(params.iterations):
        table = chaikin(table)
    return replace_geometry(frame, repair(rebuild(table), is_polygonal(geoms)))


class BufferParams(StrictModel):
    distance: float = Field(description="buffer distance in CRS units (negative shrinks polygons)")
    quad_segs: int = Field(8, ge=1, le=64, description="segments per quarter circle on rounded corners")
    join_style: Literal["round", "mitre", "bevel"] = Field("round", description="how corners are joined")
    cap_style: Literal["round", "flat", "square"] = Field("round", description="how line ends are capped")


class MorphologyParams(StrictModel):
    distance: float = Field(gt=0, description="radius of the structuring disc in CRS units")
    quad_segs: int = Field(8, ge=1, le=64, description="segments per quarter circle on rounded corners")
    join_style: Literal["round", "mitre", "bevel"] = Field(
        "mitre", description="'mitre' keeps right-angled corners (buildings); 'round' rounds them")


def _buffer(geoms: np.ndarray, distance: float, params: BufferParams | MorphologyParams) -> np.ndarray:
    cap = getattr(params, "cap_style", "round")
    return shapely.buffer(geoms, distance, quad_segs=params.quad_segs, join_style=params.join_style, cap_style=cap)


@OPS.register("buffer", BufferParams)
def buffer(frame: gpd.GeoDataFrame, params: BufferParams) -> gpd.GeoDataFrame:
    """Grow (or shrink, with a negative distance) every feature; lines and points become polygons."""
    metric_only(frame, "buffer", distance=params.distance or None)
    return replace_geometry(frame, _buffer(geometries(frame), params.distance, params))


def _morphology(frame: gpd.GeoDataFrame, params: MorphologyParams, sign: float) -> gpd.GeoDataFrame:
    metric_only(frame, "close" if sign > 0 else "open", distance=params.distance)
    geoms = geometries(frame).copy()
    polygons = is_polygonal(geoms)
    once = _buffer(geoms[polygons], sign * params.distance, params)
    geoms[polygons] = _buffer(once, -sign * params.distance, params)
    return replace_geometry(frame, geoms)


@OPS.register("open", MorphologyParams)
def open_(frame: gpd.GeoDataFrame, params: MorphologyParams) -> gpd.GeoDataFrame:
    """Morphological opening of polygons (shrink, grow): removes spikes, bridges, parts thinner than 2×distance."""
    return _morphology(frame, params, -1.0)


@OPS.register("close", MorphologyParams)
def close(frame: gpd.GeoDataFrame, params: MorphologyParams) -> gpd.GeoDataFrame:
    """Morphological closing of polygons (grow, shrink): fills notches, gaps, holes narrower than 2×distance."""
    return _morphology(frame, params, 1.0)


@OPS.register("convex_hull")
def convex_hull(frame: gpd.GeoDataFrame, params: NoParams) -> gpd.GeoDataFrame:
    """Replace each feature by its convex hull."""
    return replace_geometry(frame, shapely.convex_hull(geometries(frame)))


@OPS.register("oriented_box")
def oriented_box(frame: gpd.GeoDataFrame, params: NoParams) -> gpd.GeoDataFrame:
    """Replace each feature by its minimum-area rotated rectangle (oriented bounding box)."""
    return replace_geometry(frame, shapely.oriented_envelope(geometries(frame)))


@OPS.register("bounding_box")
def bounding_box(frame: gpd.GeoDataFrame, params: NoParams) -> gpd.GeoDataFrame:
    """Replace each feature by its axis-aligned bounding box."""
    return replace_geometry(frame, shapely.envelope(geometries(frame)))


class ScaleParams(StrictModel):
    factor: float = Field(1.0, gt=0, description="linear factor (0.8 shrinks each side by 20 %)")
    origin: Literal["centroid", "bbox_center"] = Field("bbox_center", description="fixed point of the scaling")


@OPS.register("scale", ScaleParams)
def scale(frame: gpd.GeoDataFrame, params: ScaleParams) -> gpd.GeoDataFrame:
    """Resize each feature about its own centre (its bounding box's or its centroid), by a linear factor.

    Calibrates the size of detections, e.g. boxes grown from object cores; sweep ``scale.factor`` in RPS to
    choose it.
    """
    geoms = geometries(frame)
    if params.origin == "centroid":
        centres = shapely.get_coordinates(shapely.centroid(geoms))
    else:
        bounds = shapely.bounds(geoms)
        centres = np.column_stack([(bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2])
    counts = shapely.get_num_coordinates(geoms)
    origin = np.repeat(centres, counts, axis=0)
    scaled = shapely.transform(geoms, lambda xy: origin + (xy - origin) * params.factor)
    return replace_geometry(frame, scaled)


class CentroidParams(StrictModel):
    method: Literal["centroid", "point_on_surface"] = Field(
        "centroid", description="'centroid' (may fall outside concave shapes) or 'point_on_surface' (always inside)")


@OPS.register("centroids", CentroidParams)
def centroids(frame: gpd.GeoDataFrame, params: CentroidParams) -> gpd.GeoDataFrame:
    """Replace each feature by a point (area becomes 0: compute attributes first to keep shape measures)."""
    geoms = geometries(frame)
    points = shapely.centroid(geoms) if params.method == "centroid" else shapely.point_on_surface(geoms)
    return replace_geometry(frame, points)
