"""Attribute and CRS ops: shape measures as columns, reprojection."""

from __future__ import annotations

from typing import Literal

import geopandas as gpd
import numpy as np
import shapely
from pydantic import Field

from aifactory.config import CrsText, StrictModel
from aifactory.errors import InputError
from aifactory.postprocess.base import OPS, geometries, refresh_area

Measure = Literal["area", "perimeter", "elongation", "orientation", "compactness"]
MEASURES: list[Measure] = ["area", "perimeter", "elongation", "orientation", "compactness"]


class AttributesParams(StrictModel):
    measures: list[Measure] = Field(
        default_factory=lambda: list(MEASURES),
        description="columns to compute: area; perimeter (length for lines); elongation = long/short side of "
                    "the oriented box (≥ 1); orientation = direction of its long side in degrees [0, 180) "
                    "from the x axis towards y; compactness = 4πA/P² (1 = disc)")
    prefix: str = Field("", description="prefix of the new column names (e.g. 'shape_')")


def box_sides(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Long side, short side and long-side direction (degrees, [0, 180)) of each oriented bounding box."""
    n = len(geoms)
    boxes = shapely.oriented_envelope(geoms)
    long_side, short_side, angle = np.zeros(n), np.zeros(n), np.zeros(n)
    present = ~shapely.is_empty(boxes) & ~shapely.is_missing(boxes)  # empty input: an empty box, no corners
    polygon = present & (shapely.get_type_id(boxes) == shapely.GeometryType.POLYGON)
    if polygon.any():
        corners = shapely.get_coordinates(boxes[polygon]).reshape(-1, 5, 2)
        first, second = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 1]
        a, b = np.hypot(*first.T), np.hypot(*second.T)
        along = np.where((a >= b)[:, None], first, second)
        long_side[polygon], short_side[polygon] = np.maximum(a, b), np.minimum(a, b)
        angle[polygon] = np.degrees(np.arctan2(along[:, 1], along[:, 0])) % 180
    line = present & (shapely.get_type_id(boxes) == shapely.GeometryType.LINESTRING)  # degenerate: collinear input
    if line.any():
        ends = shapely.get_coordinates(boxes[line]).reshape(-1, 2, 2)
        along = ends[:, 1] - ends[:, 0]
        long_side[line] = np.hypot(*along.T)
        angle[line] = np.degrees(np.arctan2(along[:, 1], along[:, 0])) % 180
    return long_side, short_side, angle


@OPS.register("attributes", AttributesParams)
def attributes(frame: gpd.GeoDataFrame, params: AttributesParams) -> gpd.GeoDataFrame:
    """Add shape measures as columns: area, perimeter, elongation, orientation, compactness."""
    geoms = geometries(frame)
    out = frame.copy()
    area, perimeter = shapely.area(geoms), shapely.length(geoms)
    long_side, short_side, angle = box_sides(geoms) if len(geoms) else (np.zeros(0),) * 3
    with np.errstate(divide="ignore", invalid="ignore"):
        values = {
            "area": area,
            "perimeter": perimeter,
            "elongation": np.where(short_side > 0, long_side / short_side, np.nan),
            "orientation": np.where(long_side > 0, angle, np.nan),
            "compactness": np.where(perimeter > 0, 4 * np.pi * area / perimeter**2, np.nan),
        }
    for measure in params.measures:
        out[f"{params.prefix}{measure}"] = values[measure].astype("float64")
    return out


class ReprojectParams(StrictModel):
    crs: CrsText = Field(description="target CRS: 'EPSG:4326', a PROJ string or WKT")


@OPS.register("reproject", ReprojectParams)
def reproject(frame: gpd.GeoDataFrame, params: ReprojectParams) -> gpd.GeoDataFrame:
    """Reproject to another CRS (area is recomputed in the new units)."""
    if frame.crs is None:
        if not len(frame):
            return frame.set_crs(params.crs)
        raise InputError("reproject: the features have no CRS (pixel coordinates of a non-georeferenced image)")
    return refresh_area(frame.to_crs(params.crs))
