"""Observations from a label layer, aligned to one raster: the shared front door of catalog and datasets.

Any OGR format or a CSV with WKT; labels in another CRS than the raster are reprojected; invalid
geometries are repaired (counted by :func:`aifactory.io.vector.repair_geometries`); labels outside the
raster and labels with an unusable class path are dropped with a warning that gives their count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from aifactory.catalog.hierarchy import normalize
from aifactory.errors import InputError
from aifactory.io.raster import RasterInfo
from aifactory.io.vector import align_to_crs, read_vector
from aifactory.progress import reporter


def raster_footprint(info: RasterInfo) -> shapely.Geometry:
    """The raster's outline in its CRS (pixel coordinates for pixel-space rasters)."""
    corners = np.array([(0, 0), (info.width, 0), (info.width, info.height), (0, info.height)], dtype="float64")
    xs, ys = info.transform * (corners[:, 0], corners[:, 1])
    return shapely.Polygon(np.column_stack([xs, ys]))


def to_wgs84(geoms: np.ndarray, crs: Any) -> np.ndarray:
    """Geometries reprojected to WGS 84, vertex by vertex: a caller with long segments densifies them first (image
    footprints do, :func:`aifactory.catalog.build._image_record`), or their edges become chords."""
    frame = gpd.GeoSeries(geoms, crs=crs)
    return np.asarray(frame.to_crs(4326).array, dtype=object)


def class_paths(frame: gpd.GeoDataFrame, class_field: str, source: str) -> gpd.GeoDataFrame:
    """A ``class_path`` column from ``class_field``; rows with an unusable path are dropped and counted."""
    if class_field not in frame.columns:
        fields = ", ".join(c for c in frame.columns if c != frame.geometry.name) or "none"
        raise InputError(f"{source}: no class field {class_field!r} (fields: {fields})")
    paths: list[str | None] = []
    bad: dict[str, int] = {}
    for value in frame[class_field].astype("string").fillna(""):
        try:
            paths.append(normalize(str(value)))
        except InputError:
            paths.append(None)
            bad[str(value)] = bad.get(str(value), 0) + 1
    out = frame.assign(class_path=paths)
    if bad:
        examples = ", ".join(repr(v) for v in list(bad)[:3])
        reporter().warning(f"{source}: dropped {sum(bad.values())} labels with an unusable class path ({examples})")
        out = out[out["class_path"].notna()]
    return out


def load_labels(path: str | Path, info: RasterInfo, layer: str | None = None, class_field: str = "class",
                crs: Any = None, where: str | None = None) -> gpd.GeoDataFrame:
    """Labels of one raster: ``class_path`` + geometry in the raster's CRS, those touching its outline.

    ``crs`` is the labels' CRS when the file has none (CSV). ``where``: an attribute filter (OGR SQL, as a QGIS
    layer filter) keeping only some features. Returns a frame without CRS for pixel space.
    """
    source = f"{path}" + (f" (layer {layer})" if layer else "") + (f" where {where}" if where else "")
    ogr: dict[str, Any] = {"where": where} if where else {}
    frame = read_vector(path, layer=layer, crs=crs, **ogr)
    frame = class_paths(frame, class_field, source)
    frame = align_to_crs(frame, info.crs if info.georeferenced else None, source)
    frame = frame.loc[~(shapely.is_empty(frame.geometry.array) | shapely.is_missing(frame.geometry.array))]
    footprint = raster_footprint(info)
    inside = shapely.intersects(frame.geometry.array, footprint)
    if (~inside).any():
        reporter().warning(f"{source}: {int((~inside).sum())} of {len(frame)} labels lie outside {info.path}")
    frame = frame.loc[inside]
    polygonal = np.isin(shapely.get_type_id(frame.geometry.array), (3, 6, 7))  # (multi)polygons, collections
    if (~polygonal).any():
        reporter().warning(f"{source}: ignored {int((~polygonal).sum())} point or line labels (polygons needed)")
        frame = frame.loc[polygonal]
    return gpd.GeoDataFrame({"class_path": frame["class_path"].to_numpy()}, geometry=frame.geometry.array,
                            crs=frame.crs).reset_index(drop=True)
