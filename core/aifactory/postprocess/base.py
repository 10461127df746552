"""The op registry and what every op shares: the params base, the detections schema, geometry replacement.

An op is ``func(frame: GeoDataFrame, params) -> GeoDataFrame`` registered with ``@OPS.register(name,
Params)``. Ops never modify their input frame, keep every column they do not own (the detections schema of
DESIGN.md: ``class``, ``score``, ``model_run``, ``tile_id``, ``area``, ``review``, ``reviewed_class``, and
any other), keep the CRS (or its absence: pixel-space data), return an empty frame for an empty one, and
recompute ``area`` whenever they change geometries (:func:`replace_geometry`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from aifactory.errors import InputError
from aifactory.registry import Registry

Op = Callable[[gpd.GeoDataFrame, Any], gpd.GeoDataFrame]

OPS: Registry[Op] = Registry("postprocess op", "aifactory.postprocess", builtin_modules=(
    "aifactory.postprocess.filters", "aifactory.postprocess.clean", "aifactory.postprocess.shape",
    "aifactory.postprocess.outline", "aifactory.postprocess.overlap", "aifactory.postprocess.skeleton",
    "aifactory.postprocess.attributes",
))

CLASS = "class"
SCORE = "score"
AREA = "area"

POLYGONAL = (shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON)
LINEAR = (shapely.GeometryType.LINESTRING, shapely.GeometryType.LINEARRING, shapely.GeometryType.MULTILINESTRING)


def geometries(frame: gpd.GeoDataFrame) -> np.ndarray:
    """The frame's geometries as a numpy object array (what shapely's vectorized functions take)."""
    return np.asarray(frame.geometry.array, dtype=object)


def replace_geometry(frame: gpd.GeoDataFrame, geoms: np.ndarray, drop_empty: bool = True) -> gpd.GeoDataFrame:
    """A copy of ``frame`` with new geometries (same rows), ``area`` recomputed; vanished ones dropped."""
    out = frame.copy()
    out[out.geometry.name] = gpd.GeoSeries(geoms, index=frame.index, crs=frame.crs)
    if drop_empty and len(out):
        keep = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
        if not keep.all():
            out = out.loc[keep]
    return refresh_area(out)


def refresh_area(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Recompute the ``area`` column (0 for points and lines) when the frame has one."""
    if AREA in frame.columns:
        frame = frame.copy()
        frame[AREA] = shapely.area(geometries(frame)).astype("float64")
    return frame


def rows(frame: gpd.GeoDataFrame, positions: np.ndarray) -> gpd.GeoDataFrame:
    """Rows at integer ``positions`` (a copy with a fresh index), schema and CRS kept."""
    return frame.iloc[np.asarray(positions, dtype=np.intp)].reset_index(drop=True)


def class_codes(frame: gpd.GeoDataFrame) -> np.ndarray:
    """An integer code per row for its class (all zeros when the frame has no ``class`` column)."""
    if CLASS not in frame.columns:
        return np.zeros(len(frame), dtype=np.intp)
    codes, _ = pd.factorize(frame[CLASS], use_na_sentinel=False)
    return np.asarray(codes, dtype=np.intp)


def scores(frame: gpd.GeoDataFrame, op: str) -> np.ndarray:
    """The ``score`` column as floats (checked by :func:`score_values`); ops that rank detections need it."""
    if SCORE not in frame.columns:
        raise InputError(f"{op}: the features have no {SCORE!r} column to rank them by")
    return score_values(frame, op)


def score_values(frame: gpd.GeoDataFrame, source: str, field: str = SCORE, allow_missing: bool = True
                 ) -> np.ndarray:
    """The ``field`` column as floats, refused in one line when it breaks the detections schema (DESIGN.md:
    a score is 0–1): text cannot be ranked, and a 0–100 scale would pass every threshold meant for 0–1.

    A missing value becomes NaN (dropped by the score filters), or is refused unless ``allow_missing``.
    Post-processing and evaluation both read scores through here, so that one file is judged the same by both.
    """
    column = frame[field]
    values = pd.to_numeric(column, errors="coerce")
    text = values.isna() & column.notna()
    if text.any():
        raise InputError(f"{source}: {int(text.sum())} features have a non-numeric {field!r} "
                         f"(e.g. {column[text].iloc[0]!r}); scores are numbers in [0, 1]")
    out = values.to_numpy(dtype="float64", na_value=np.nan)
    present = out[~np.isnan(out)]
    if not allow_missing and len(present) < len(out):
        raise InputError(f"{source}: {len(out) - len(present)} features have no {field!r} value")
    if len(present) and not (present.min() >= 0 and present.max() <= 1):
        raise InputError(f"{source}: {field!r} holds values from {present.min():g} to {present.max():g}; "
                         "scores must be in [0, 1]")
    return out


@contextmanager
def geos_errors(op: str) -> Iterator[None]:
    """Turn GEOS's refusal of an invalid input (``TopologyException``) into one line that says what to do.

    Overlay ops (union, intersection, difference, precision snapping) cannot work on self-intersecting
    polygons; reading a file repairs them (``read_vector``), but frames handed to :func:`apply_chain` directly
    or made invalid by an earlier op reach the op as they are.
    """
    try:
        yield
    except shapely.errors.GEOSException as exc:
        reason = str(exc).splitlines()[0].split(". This can occur")[0]
        raise InputError(f"{op}: invalid geometries ({reason}); put make_valid before it in the chain") from None


def metric_only(frame: gpd.GeoDataFrame, op: str, **lengths: float | None) -> None:
    """Refuse lengths given in degrees: on a geographic CRS a distance parameter would be read in degrees.

    A degree of longitude is shorter than a degree of latitude (cos φ), so buffers, tolerances and distances
    in degrees are distorted as well as 10⁵ times too large for values meant in metres: silent garbage. Areas
    (``area_filter``, ``remove_holes``, ``remove_slivers``) stay in CRS units², like the ``area`` field and
    RPS's ``min_area``; ``snap_to_grid`` rounds coordinates, which is meaningful in degrees.
    """
    given = {name: value for name, value in lengths.items() if value is not None}
    if not given or not len(frame) or frame.crs is None or not frame.crs.is_geographic:
        return
    name, value = next(iter(given.items()))
    try:
        utm = f" (e.g. {frame.estimate_utm_crs().to_string()})"
    except (RuntimeError, ValueError):  # no usable bounds (every geometry missing): no suggestion
        utm = ""
    raise InputError(f"{op}: the features are in a geographic CRS ({frame.crs.to_string()}) where {name}={value:g} "
                     f"would be degrees; reproject them to a projected CRS{utm} first "
                     "({name: reproject, crs: ...} before it in the chain)")


def is_polygonal(geoms: np.ndarray) -> np.ndarray:
    return np.isin(shapely.get_type_id(geoms), POLYGONAL)


def is_linear(geoms: np.ndarray) -> np.ndarray:
    return np.isin(shapely.get_type_id(geoms), LINEAR)


def polygonal_part(geoms: np.ndarray) -> np.ndarray:
    """The polygonal part of each geometry (a make_valid result can hold stray lines and points).

    Polygons stay polygons; anything else with polygonal parts becomes a MultiPolygon; no polygonal part
    gives an empty polygon.
    """
    out = np.asarray(geoms, dtype=object).copy()
    mixed = ~is_polygonal(out) & ~shapely.is_missing(out)
    if not mixed.any():
        return out
    positions = np.flatnonzero(mixed)
    parts, owner = shapely.get_parts(out[positions], return_index=True)
    polygon = shapely.get_type_id(parts) == shapely.GeometryType.POLYGON
    out[positions] = shapely.from_wkt("POLYGON EMPTY")
    if polygon.any():
        merged = np.empty(len(positions), dtype=object)
        merged[:] = shapely.from_wkt("POLYGON EMPTY")
        shapely.multipolygons(parts[polygon], indices=owner[polygon], out=merged)
        single = shapely.get_num_geometries(merged) == 1
        merged[single] = shapely.get_geometry(merged[single], 0)
        out[positions] = merged
    return out


def repair(geoms: np.ndarray, keep_polygons: np.ndarray | None = None) -> np.ndarray:
    """``make_valid`` the invalid geometries; those that were polygons stay polygonal (see DESIGN: detections)."""
    out = np.asarray(geoms, dtype=object).copy()
    invalid = ~shapely.is_valid(out) & ~shapely.is_missing(out)
    if invalid.any():
        polygons = is_polygonal(out) if keep_polygons is None else keep_polygons
        fixed = shapely.make_valid(out[invalid])
        was_polygon = polygons[invalid]
        fixed[was_polygon] = polygonal_part(fixed[was_polygon])
        out[invalid] = fixed
    return out
