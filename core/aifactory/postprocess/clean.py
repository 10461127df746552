"""Cleaning ops: make valid, remove holes and slivers, snap to a grid, split multi-part features."""

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
    geos_errors,
    is_polygonal,
    polygonal_part,
    refresh_area,
    replace_geometry,
    rows,
)
from aifactory.postprocess.rings import decompose, reassemble, rebuild
from aifactory.registry import NoParams


class MakeValidParams(StrictModel):
    method: Literal["structure", "linework"] = Field(
        "structure", description="GEOS repair: 'structure' unions overlapping parts and keeps holes as holes; "
                                 "'linework' keeps every edge (overlaps become holes)")
    repeated_tolerance: float = Field(0.0, ge=0, description="also drop consecutive vertices closer than this")
    orient: bool = Field(True, description="orient polygon shells counter-clockwise and holes clockwise")


@OPS.register("make_valid", MakeValidParams)
def make_valid(frame: gpd.GeoDataFrame, params: MakeValidParams) -> gpd.GeoDataFrame:
    """Repair invalid geometries (polygons stay polygonal), drop empty ones, normalise orientation."""
    geoms = geometries(frame)
    polygons = is_polygonal(geoms)
    if params.repeated_tolerance > 0:
        geoms = shapely.remove_repeated_points(geoms, params.repeated_tolerance)
    invalid = ~shapely.is_valid(geoms) & ~shapely.is_missing(geoms)
    if invalid.any():
        geoms = geoms.copy()
        geoms[invalid] = shapely.make_valid(geoms[invalid], method=params.method)
        geoms[polygons] = polygonal_part(geoms[polygons])
    if params.orient:
        geoms = shapely.orient_polygons(geoms)
    return replace_geometry(frame, geoms)


class RemoveHolesParams(StrictModel):
    max_area: float | None = Field(None, gt=0, description="remove holes smaller than this (none: all holes)")


def ring_areas(coords: np.ndarray, ring: np.ndarray, n_rings: int) -> np.ndarray:
    """Unsigned shoelace area of every ring of a ring table (open lines give meaningless values)."""
    if not len(ring):
        return np.zeros(n_rings)
    first = np.r_[True, ring[1:] != ring[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(ring)), 0))
    last = np.r_[ring[1:] != ring[:-1], True]
    nxt = np.where(last, start, np.arange(len(ring)) + 1)
    x, y = coords[:, 0] - coords[start, 0], coords[:, 1] - coords[start, 1]  # local origin: no cancellation
    cross = x * y[nxt] - x[nxt] * y
    return np.abs(np.bincount(ring, weights=cross, minlength=n_rings)) / 2


@OPS.register("remove_holes", RemoveHolesParams)
def remove_holes(frame: gpd.GeoDataFrame, params: RemoveHolesParams) -> gpd.GeoDataFrame:
    """Fill polygon holes smaller than max_area (all holes when max_area is not set)."""
    table = decompose(geometries(frame))
    drop = table.closed & ~table.exterior
    if params.max_area is not None:
        drop &= ring_areas(table.coords, table.ring, table.n_rings) < params.max_area
    if not drop.any():
        return frame.copy()
    keep = ~drop[table.ring]
    return replace_geometry(frame, rebuild(table.with_vertices(table.coords[keep], table.ring[keep])))


class RemoveSliversParams(StrictModel):
    min_area: float = Field(0.0, ge=0, description="drop polygon parts smaller than this")
    min_compactness: float = Field(
        0.05, ge=0, le=1, description="drop polygon parts thinner than this Polsby-Popper compactness "
                                      "4πA/P² (1 = disc, 0.785 = square, ≈0.05 = a 1:60 strip)")


@OPS.register("remove_slivers", RemoveSliversParams)
def remove_slivers(frame: gpd.GeoDataFrame, params: RemoveSliversParams) -> gpd.GeoDataFrame:
    """Drop small or thin polygon parts; a feature left with no part is dropped (see open for thin spikes)."""
    geoms = geometries(frame)
    parts, owner = shapely.get_parts(geoms, return_index=True)
    area = shapely.area(parts)
    perimeter = shapely.length(parts)
    polygon = shapely.get_type_id(parts) == shapely.GeometryType.POLYGON
    with np.errstate(divide="ignore", invalid="ignore"):
        compactness = np.where(perimeter > 0, 4 * np.pi * area / perimeter**2, 0.0)
    sliver = polygon & ((area < params.min_area) | (compactness < params.min_compactness))
    if not sliver.any():
        return frame.copy()
    parts = parts.copy()
    parts[sliver] = None
    return replace_geometry(frame, reassemble(geoms, parts, owner))


class SnapToGridParams(StrictModel):
    grid_size: float = Field(gt=0, description="grid spacing in CRS units (1 = whole pixels without CRS)")


@OPS.register("snap_to_grid", SnapToGridParams)
def snap_to_grid(frame: gpd.GeoDataFrame, params: SnapToGridParams) -> gpd.GeoDataFrame:
    """Round coordinates to a grid (GEOS keeps the output valid; features narrower than a cell vanish)."""
    with geos_errors("snap_to_grid"):
        geoms = shapely.set_precision(geometries(frame), params.grid_size, mode="valid_output")
    return replace_geometry(frame, geoms)


@OPS.register("explode")
def explode(frame: gpd.GeoDataFrame, params: NoParams) -> gpd.GeoDataFrame:
    """Split multi-part features into one feature per part (attributes copied, area per part).

    Like the ops that change geometries, it drops missing and empty ones (also empty parts), and keeps the
    column order (``GeoDataFrame.explode`` moves the geometry column last and keeps a missing geometry but
    not an empty multi-part one).
    """
    parts, owner = shapely.get_parts(geometries(frame), return_index=True)
    keep = ~shapely.is_empty(parts)
    out = rows(frame, owner[keep])
    out[out.geometry.name] = gpd.GeoSeries(parts[keep], index=out.index, crs=frame.crs)
    return refresh_area(out)
