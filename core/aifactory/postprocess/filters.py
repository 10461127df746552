"""Ops that keep or drop whole features: area, score, class and geofence filters."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import geopandas as gpd
import numpy as np
import shapely
from pydantic import Field, FilePath, model_validator

from aifactory.config import StrictModel
from aifactory.errors import InputError
from aifactory.io.vector import align_to_crs, read_vector
from aifactory.postprocess.base import (
    OPS,
    geometries,
    geos_errors,
    is_polygonal,
    polygonal_part,
    replace_geometry,
    scores,
)


class AreaFilterParams(StrictModel):
    min_area: float = Field(0.0, ge=0, description="drop features smaller than this (CRS units², pixels² without CRS)")
    max_area: float | None = Field(None, gt=0, description="drop features larger than this (none: no upper bound)")


@OPS.register("area_filter", AreaFilterParams)
def area_filter(frame: gpd.GeoDataFrame, params: AreaFilterParams) -> gpd.GeoDataFrame:
    """Keep features whose area is within [min_area, max_area] (lines and points have area 0)."""
    area = shapely.area(geometries(frame))
    keep = area >= params.min_area
    if params.max_area is not None:
        keep &= area <= params.max_area
    return frame.loc[keep].copy()


class ScoreFilterParams(StrictModel):
    min_score: float = Field(0.5, ge=0, le=1, description="drop detections scored below this")
    max_score: float = Field(1.0, ge=0, le=1, description="drop detections scored above this")


@OPS.register("score_filter", ScoreFilterParams)
def score_filter(frame: gpd.GeoDataFrame, params: ScoreFilterParams) -> gpd.GeoDataFrame:
    """Keep detections with min_score <= score <= max_score (a missing score is dropped)."""
    values = scores(frame, "score_filter")
    return frame.loc[(values >= params.min_score) & (values <= params.max_score)].copy()


class ClassFilterParams(StrictModel):
    include: list[str] | None = Field(None, description="keep only these classes (none: all)")
    exclude: list[str] = Field(default_factory=list, description="drop these classes")
    column: str = Field("class", description="column holding the class (e.g. reviewed_class)")


@OPS.register("class_filter", ClassFilterParams)
def class_filter(frame: gpd.GeoDataFrame, params: ClassFilterParams) -> gpd.GeoDataFrame:
    """Keep features of the included classes and drop the excluded ones."""
    if params.column not in frame.columns:
        if not len(frame):
            return frame.copy()
        raise InputError(f"class_filter: the features have no {params.column!r} column")
    values = frame[params.column]
    keep = np.ones(len(frame), bool)
    if params.include is not None:
        keep &= values.isin(params.include).to_numpy()
    keep &= ~values.isin(params.exclude).to_numpy()
    return frame.loc[keep].copy()


class GeofenceParams(StrictModel):
    path: FilePath = Field(description="vector file of fence polygons (any CRS; relative to the chain file)")
    layer: str | None = Field(None, description="layer of the fence file (default: the first)")
    mode: Literal["include", "exclude"] = Field("include", description="keep features inside, or outside, the fence")
    predicate: Literal["intersects", "within", "centroid"] = Field(
        "intersects", description="what 'inside' means: touches the fence, lies wholly in it, or its centroid does")
    clip: bool = Field(False, description="cut geometries at the fence line instead of testing a predicate: "
                                          "keep the part inside (include) or outside (exclude)")

    @model_validator(mode="after")
    def _clip_has_no_predicate(self) -> GeofenceParams:
        if self.clip and self.predicate != "intersects":
            raise ValueError(f"predicate {self.predicate!r} is not used with clip: true")
        return self


def load_fence(path: Path, layer: str | None, crs: object) -> shapely.Geometry:
    """The union of the fence's polygons in ``crs`` (None: pixel space), prepared for repeated predicates."""
    fence = align_to_crs(read_vector(path, layer=layer), crs, str(path))
    polygons = fence.geometry.array[is_polygonal(geometries(fence))]
    if not len(polygons):
        raise InputError(f"{path}: the geofence has no polygon")
    union = shapely.union_all(np.asarray(polygons, dtype=object))
    shapely.prepare(union)
    return union


@OPS.register("geofence", GeofenceParams)
def geofence(frame: gpd.GeoDataFrame, params: GeofenceParams) -> gpd.GeoDataFrame:
    """Keep features inside (include) or outside (exclude) fence polygons read from a file, in any CRS."""
    if not len(frame):
        return frame.copy()
    fence = load_fence(params.path, params.layer, frame.crs)
    geoms = geometries(frame)
    include = params.mode == "include"
    if params.clip:
        with geos_errors("geofence"):
            cut = (shapely.intersection if include else shapely.difference)(geoms, fence)
        polygons = is_polygonal(geoms)
        cut[polygons] = polygonal_part(cut[polygons])  # touching the fence leaves stray lines
        return replace_geometry(frame, cut)
    if params.predicate == "centroid":
        inside = shapely.intersects(fence, shapely.centroid(geoms))
    elif params.predicate == "within":
        inside = shapely.covers(fence, geoms)
    else:
        inside = shapely.intersects(fence, geoms)
    return frame.loc[inside if include else ~inside].copy()
