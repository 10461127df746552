"""Geofences: where to predict (include polygons) and where not (exclude polygons), in any CRS.

Polygons are read with :func:`aifactory.io.vector.read_vector`, reprojected to the raster's CRS with
:func:`~aifactory.io.vector.align_to_crs` (densified first, :func:`densified`) and then mapped into the
raster's pixel space, where the tiling, the scores mask and the detections all live until the very end. The region is
``union(include) − union(exclude)`` (the whole raster when there is no include layer). Tiles that do
not touch the region are never read. Detections crossing its border follow a coverage rule:

- ``keep``: keep every detection that touches the region, whole;
- ``clip``: cut detections to the region (parts become separate detections);
- ``drop-partial``: keep only detections lying wholly inside the region.

Overlaps under :data:`SLIVER_PX` are rounding: ``clip`` keeps no such part, ``drop-partial`` ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from pyproj import CRS
from rasterio.features import rasterize

from aifactory.errors import ConfigError, InputError
from aifactory.io.vector import align_to_crs, read_vector
from aifactory.prediction.tiling import Tile
from aifactory.prediction.vectorize import Detections

GeofenceRule = Literal["keep", "clip", "drop-partial"]
GEOFENCE_RULES = ("keep", "clip", "drop-partial")
#: overlaps below this area (px²) are rounding, not coverage: a fence whose edge runs along pixel edges, once
#: reprojected, lies 1e-9 px to either side of them, and cut 1e-11 px² slivers off the detections beside it
SLIVER_PX = 1e-3
#: a geofence in another CRS than the raster's gets a vertex at least every 1/DENSIFY_STEPS of its bounds' larger side
DENSIFY_STEPS = 256


def densified(frame: gpd.GeoDataFrame, crs: str | None) -> gpd.GeoDataFrame:
    """``frame`` with vertices added along its edges when it is about to be reprojected to ``crs``.

    Why: reprojection moves vertices only, and an edge that is straight in the geofence's CRS is a curve in the
    raster's (a parallel drawn in EPSG:4326 bends in UTM). Without the added vertices the fence cut a chord:
    a 0.2° box at 45° N drawn in EPSG:4326 came 4.9 m (10 px at 0.5 m) inside its true edge in UTM. Frames
    already in ``crs``, or without a CRS (taken as the raster's), are returned as they are.
    """
    if crs is None or frame.crs is None or CRS.from_user_input(frame.crs) == CRS.from_user_input(crs):
        return frame
    geoms = np.asarray(frame.geometry.array, dtype=object)
    bounds = shapely.bounds(geoms)
    step = np.fmax(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]) / DENSIFY_STEPS
    sized = step > 0  # NaN (empty) and points stay as they are
    geoms[sized] = shapely.segmentize(geoms[sized], step[sized])
    return frame.set_geometry(gpd.GeoSeries(geoms, index=frame.index, crs=frame.crs))


def _load_pixel_union(path: str | Path, crs: str | None, transform: Affine, what: str) -> shapely.Geometry:
    frame = read_vector(path)
    frame = align_to_crs(densified(frame, crs), crs, str(path))
    polygonal = shapely.get_type_id(frame.geometry.array) if len(frame) else np.empty(0)
    if len(frame) == 0 or not np.isin(polygonal, (3, 6, 7)).any():  # Polygon, MultiPolygon, collection
        raise InputError(f"{path}: {what} has no polygons")
    inverse = ~transform
    pixel = shapely.transform(frame.geometry.array,
                              lambda xy: np.column_stack(inverse * (xy[:, 0], xy[:, 1])))
    area = shapely.union_all(pixel)
    return shapely.make_valid(area) if not shapely.is_valid(area) else area


@dataclass
class Geofence:
    """The region to predict, in raster pixel coordinates (x = column, y = row)."""

    region: shapely.Geometry
    rule: GeofenceRule = "keep"
    limited: bool = False  # False when the region is the whole raster (nothing to test or clip)

    @classmethod
    def load(cls, width: int, height: int, crs: str | None, transform: Affine, include: str | Path | None = None,
             exclude: str | Path | None = None, rule: str = "keep", raster_name: str = "raster") -> Geofence:
        """Build the region for a raster; a region that misses the raster is one :class:`InputError` line."""
        if rule not in GEOFENCE_RULES:
            raise ConfigError(f"geofence rule: expected one of {', '.join(GEOFENCE_RULES)}, got {rule!r}")
        extent = shapely.box(0, 0, width, height)
        region = extent
        if include is not None:
            region = shapely.intersection(_load_pixel_union(include, crs, transform, "geofence"), extent)
            if region.is_empty or region.area == 0:
                raise InputError(f"{include}: geofence does not intersect {raster_name}")
        if exclude is not None:
            region = shapely.difference(region, _load_pixel_union(exclude, crs, transform, "exclusion layer"))
            if region.is_empty or region.area == 0:
                raise InputError(f"{exclude}: exclusion layer covers all of {raster_name} that is left to predict")
        shapely.prepare(region)
        return cls(region, rule, limited=include is not None or exclude is not None)  # type: ignore[arg-type]

    def touches(self, tile: Tile) -> bool:
        """Whether any part of ``tile`` lies in the region (tiles that don't are never read)."""
        return not self.limited or bool(shapely.intersects(self.region, shapely.box(*tile.bounds)))

    def mask(self, row0: int, height: int, width: int) -> np.ndarray | None:
        """(height, width) bool mask of pixel centres inside the region for rows from ``row0``; None = all."""
        if not self.limited:
            return None
        window = shapely.box(0, row0, width, row0 + height)
        part = shapely.intersection(self.region, window)
        if part.is_empty:
            return np.zeros((height, width), dtype=bool)
        if shapely.equals(part, window):
            return np.ones((height, width), dtype=bool)
        return rasterize([part], out_shape=(height, width), transform=Affine.translation(0, row0),
                         dtype="uint8").astype(bool)

    def apply(self, detections: Detections) -> Detections:
        """Apply the coverage rule to detections in pixel space."""
        if not self.limited or not len(detections):
            return detections
        geoms = detections.geometry
        if self.rule == "keep":
            return detections.select(shapely.intersects(self.region, geoms))
        if self.rule == "drop-partial":
            inside = shapely.contains(self.region, geoms)
            edge = ~inside & shapely.intersects(self.region, geoms)
            inside[edge] = shapely.area(shapely.difference(geoms[edge], self.region)) < SLIVER_PX
            return detections.select(inside)
        clipped = shapely.intersection(geoms, self.region)
        parts, index = shapely.get_parts(clipped, return_index=True)
        polygons = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) >= SLIVER_PX)
        parts, index = parts[polygons], index[polygons]
        out = detections.select(index)
        out.geometry = parts
        return out
