"""``catalog build``: ingest rasters, label layers and context into a catalog.

Config (YAML; relative paths are relative to the config file)::

    images:
      - path: scene.tif
        sensor: pleiades
        date: 2024-05-01
        band_names: [blue, green, red, nir]   # declares bands, enables computed context
        context: {cloud: 3.5}                  # imported per-image attributes (percent)
    labels:
      - path: truth.gpkg                       # any OGR format, or CSV with a WKT column
        layer: truth
        class_field: class
        image: scene.tif                       # optional: only this image (needed for pixel space)
    context_layers:                            # optional: polygons with cloud/snow/... fields (percent)
      - path: clouds.gpkg
        layer: clouds
        image: scene.tif                       # optional: only this image (needed for pixel space)
    context:
      compute: [vegetation, snow]
      tile_size: 512                           # also compute per tile

Context layers: a polygon's values hold on its area, with its exact geometry (holes, triangles, rings
included). Each observation gets, per attribute, the value of the first polygon covering its centroid (boundary
included) that has the attribute: layers in config order, features in file order. That value beats the computed
tile's and the image's (see :func:`aifactory.catalog.selection.context_value`). A layer is read by chunks of
:data:`CONTEXT_CHUNK` features, image by image and only around the image, so memory is one chunk plus one
image's observation centroids whatever the layer's size.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pydantic import Field
from pyproj import CRS

from aifactory.catalog.context import compute_context
from aifactory.catalog.labels import load_labels, raster_footprint, to_wgs84
from aifactory.catalog.schema import CONTEXT_FIELDS
from aifactory.catalog.store import Catalog, ImageRecord, is_postgres, open_catalog
from aifactory.config import CrsText, StrictModel, load_config
from aifactory.errors import ConfigError, InputError
from aifactory.io.atomic import atomic_path
from aifactory.io.raster import RasterInfo, gsd, raster_info
from aifactory.io.vector import layer_info, raster_crs_for, read_vector
from aifactory.progress import reporter

#: a context value: a percentage (0.8 meant as a fraction would select as 0.8 %, so out of range is refused)
Percent = Annotated[float, Field(ge=0, le=100)]


class ImageEntry(StrictModel):
    path: Path
    name: str | None = Field(default=None, description="defaults to the file name without suffix")
    sensor: str | None = None
    date: dt.date | None = None
    band_names: list[str] = Field(default_factory=list, description="defaults to the raster's band descriptions")
    context: dict[Literal["cloud", "snow", "vegetation", "fog"], Percent] = Field(default_factory=dict)


class LabelEntry(StrictModel):
    path: Path
    layer: str | None = None
    class_field: str = "class"
    crs: CrsText | None = Field(default=None, description="CRS of a file that has none (CSV with WKT)")
    image: str | None = Field(default=None, description="attach only to this image (name or path)")


class ContextLayer(StrictModel):
    path: Path
    layer: str | None = None
    crs: CrsText | None = None
    image: str | None = None


class ContextOptions(StrictModel):
    compute: list[Literal["vegetation", "snow"]] = Field(default=["vegetation", "snow"],
                                                         description="rules to compute when the bands allow")
    tile_size: int | None = Field(default=None, gt=0)


class CatalogConfig(StrictModel):
    images: list[ImageEntry] = Field(min_length=1)
    labels: list[LabelEntry] = Field(default_factory=list)
    context_layers: list[ContextLayer] = Field(default_factory=list)
    context: ContextOptions = Field(default_factory=ContextOptions)


def _resolve(path: Path, base: Path) -> Path:
    return path if path.is_absolute() else (base / path).resolve()


def _image_record(entry: ImageEntry, path: Path, info: RasterInfo,
                  options: ContextOptions) -> tuple[ImageRecord, list[dict[str, Any]]]:
    """The image row and its computed per-tile context."""
    band_names = entry.band_names or [d or "" for d in info.band_descriptions]
    if entry.band_names and len(entry.band_names) != info.count:
        raise ConfigError(f"{path}: band_names lists {len(entry.band_names)} names for {info.count} bands")
    footprint = raster_footprint(info)
    wgs84 = None
    if info.georeferenced:  # densified so that the outline stays faithful after reprojection
        dense = shapely.segmentize(footprint, max(info.width, info.height) * max(info.res) / 16)
        wgs84 = to_wgs84(np.array([dense]), info.crs)[0]
    image_context, tiles = compute_context(path, band_names, options.compute, options.tile_size)
    record = ImageRecord(
        path=str(path), name=entry.name or path.stem, bands=info.count, dtype=info.dtype, width=info.width,
        height=info.height, transform=info.transform, footprint_native=footprint,
        crs=info.crs if info.georeferenced else None, footprint_wgs84=wgs84,
        sensor=entry.sensor, acquired=entry.date, gsd=gsd(info) if info.georeferenced else None,
        band_names=band_names, context={**image_context, **{str(k): v for k, v in entry.context.items()}},
    )
    return record, tiles


def _matches(image_ref: str | None, record: ImageRecord, base: Path) -> bool:
    if image_ref is None:
        return True
    return image_ref in (record.name, record.path) or str(_resolve(Path(image_ref), base)) == record.path


def _ingest_labels(catalog: Catalog, entry: LabelEntry, base: Path, records: list[tuple[int, ImageRecord,
                   RasterInfo]]) -> int:
    path = _resolve(entry.path, base)
    targets = [(i, r, info) for i, r, info in records if _matches(entry.image, r, base)]
    if entry.image is not None and not targets:
        raise ConfigError(f"labels: {path}: image {entry.image!r} is not among the catalog's images")
    total = 0
    for image_id, _record, info in targets:
        if not info.georeferenced and entry.image is None:
            continue  # pixel-space labels only go to the image they name
        frame = load_labels(path, info, entry.layer, entry.class_field, entry.crs)
        geoms = np.asarray(frame.geometry.array, dtype=object)
        wgs84 = to_wgs84(geoms, info.crs) if info.georeferenced and len(geoms) else None
        total += catalog.add_observations(image_id, frame["class_path"].tolist(), geoms, wgs84, info.transform,
                                          source_layer=f"{path.name}:{entry.layer or ''}".rstrip(":"))
    if total == 0:
        reporter().warning(f"labels: {path}: no label falls on any catalog image")
    return total


#: context-layer features read at once (see the module docstring)
CONTEXT_CHUNK = 20_000


class _ContextSource:
    """One context layer, opened for its fields and CRS, then read by chunks around each image."""

    def __init__(self, entry: ContextLayer, base: Path) -> None:
        self.entry = entry
        self.path = _resolve(entry.path, base)
        self.source = f"{self.path}" + (f" (layer {entry.layer})" if entry.layer else "")
        self.frame: gpd.GeoDataFrame | None = None
        self.crs: CRS | None
        if self.path.suffix.lower() == ".csv":  # no spatial index, no chunked reader: read once
            self.frame = read_vector(self.path, crs=entry.crs, repair=False)
            columns = [str(c) for c in self.frame.columns]
            self.crs = None if self.frame.crs is None else CRS.from_user_input(self.frame.crs)
        else:
            columns, self.crs = layer_info(self.path, entry.layer, entry.crs)
        self.fields = [f for f in CONTEXT_FIELDS if f in columns]
        if not self.fields:
            raise InputError(f"{self.path}: a context layer needs at least one of the fields "
                             f"{', '.join(CONTEXT_FIELDS)}")
        self.repaired: set[int] = set()
        self.not_polygons: set[int] = set()
        self.hits = 0
        self.seen = 0
        self._warned_crs = False

    def target(self, info: RasterInfo) -> CRS | None:
        """The image's CRS, after the checks :func:`aifactory.io.vector.align_to_crs` makes (one warning per layer)."""
        target = raster_crs_for(self.crs, info.crs if info.georeferenced else None, self.source,
                                warn=not self._warned_crs)
        self._warned_crs = self._warned_crs or (self.crs is None and target is not None)
        return target

    def _bbox(self, target: CRS | None, area: shapely.Geometry) -> tuple[float, float, float, float] | None:
        """``area`` (image CRS) as a box in the layer's CRS, for the reader's spatial filter; None = no filter."""
        minx, miny, maxx, maxy = (float(v) for v in shapely.bounds(area))
        if target is None or self.crs is None or self.crs == target:
            return minx, miny, maxx, maxy
        dense = shapely.segmentize(area, max(maxx - minx, maxy - miny, 1e-9) / 64)
        box = gpd.GeoSeries([dense], crs=target).to_crs(self.crs).total_bounds
        if not np.isfinite(box).all():
            return None
        pad = 0.01 * max(box[2] - box[0], box[3] - box[1])  # reprojected edges bend between the dense vertices
        return (float(box[0] - pad), float(box[1] - pad), float(box[2] + pad), float(box[3] + pad))

    def _values(self, frame: pd.DataFrame) -> np.ndarray:
        """The fields as floats (NaN = not given); text that is not a number is one error line."""
        out = np.empty((len(frame), len(self.fields)))
        for k, name in enumerate(self.fields):
            column = frame[name]
            numbers = pd.to_numeric(column, errors="coerce")
            bad = numbers.isna() & column.notna()
            if bad.any():
                raise InputError(f"{self.source}: field {name!r} holds {column[bad].iloc[0]!r}; context values are "
                                 "percentages (numbers)")
            outside = (numbers < 0) | (numbers > 100)
            if outside.any():
                raise InputError(f"{self.source}: field {name!r} holds {numbers[outside].iloc[0]:g}; context values "
                                 "are percentages from 0 to 100")
            out[:, k] = numbers.to_numpy(dtype="float64")
        return out

    def chunks(self, info: RasterInfo, area: shapely.Geometry) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(polygons in the image's CRS, their values) for the features around ``area``, in file order."""
        target = self.target(info)
        if self.frame is not None:
            pieces: Iterator[gpd.GeoDataFrame] = (self.frame.iloc[k:k + CONTEXT_CHUNK]
                                                  for k in range(0, len(self.frame), CONTEXT_CHUNK))
        else:
            pieces = self._read(self._bbox(target, area))
        for piece in pieces:
            geoms = np.asarray(piece.geometry.array, dtype=object)
            fids = piece.index.to_numpy()
            usable = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
            polygonal = np.isin(shapely.get_type_id(geoms), (3, 6, 7))
            self.not_polygons.update(int(f) for f in fids[usable & ~polygonal])
            keep = usable & polygonal
            geoms, values = geoms[keep], self._values(piece.loc[keep])
            invalid = ~shapely.is_valid(geoms)
            if invalid.any():
                self.repaired.update(int(f) for f in fids[keep][invalid])
                geoms[invalid] = shapely.make_valid(geoms[invalid])
            if target is not None and self.crs is not None and self.crs != target and len(geoms):
                geoms = np.asarray(gpd.GeoSeries(geoms, crs=self.crs).to_crs(target).array, dtype=object)
            yield geoms, values

    def _read(self, bbox: tuple[float, float, float, float] | None) -> Iterator[gpd.GeoDataFrame]:
        skip = 0
        while True:
            piece = read_vector(self.path, self.entry.layer, repair=False, columns=self.fields, bbox=bbox,
                                skip_features=skip, max_features=CONTEXT_CHUNK, fid_as_index=True)
            if len(piece):
                yield piece
            if len(piece) < CONTEXT_CHUNK:
                return
            skip += CONTEXT_CHUNK

    def report(self) -> None:
        """The warnings of the whole layer, once (a feature seen around several images counts once)."""
        if self.not_polygons:
            reporter().warning(f"{self.source}: ignored {len(self.not_polygons)} point or line features (context "
                               "needs polygons)")
        if self.repaired:
            reporter().warning(f"{self.source}: repaired {len(self.repaired)} invalid geometries")


def _first_cover(tree: shapely.STRtree, values: dict[str, np.ndarray], geoms: np.ndarray, given: np.ndarray,
                 fields: list[str]) -> int:
    """Give each centroid of ``tree`` still without a value the value of the first polygon covering it (the
    polygons are in file order). Returns how many (centroid, attribute) values were set."""
    polygon, point = tree.query(geoms, predicate="covers")
    count = 0
    for k, name in enumerate(fields):
        value = given[polygon, k]
        free = ~np.isnan(value) & np.isnan(values[name][point])
        p, q, v = polygon[free], point[free], value[free]
        order = np.lexsort((p, q))  # by centroid, then by polygon: the first row of each centroid wins
        q, v = q[order], v[order]
        _, first = np.unique(q, return_index=True)
        values[name][q[first]] = v[first]
        count += len(first)
    return count


def _ingest_context(catalog: Catalog, sources: list[_ContextSource], base: Path,
                    records: list[tuple[int, ImageRecord, RasterInfo]]) -> None:
    """Per-observation context from the layers, exactly, image by image (see the module docstring)."""
    if not sources:
        return
    for source in sources:
        if source.entry.image is not None and not any(_matches(source.entry.image, r, base) for _, r, _ in records):
            raise ConfigError(f"context_layers: {source.path}: image {source.entry.image!r} is not among the "
                              "catalog's images")
    for image_id, record, info in reporter().track(records, task="context", message="context layers"):
        wanted = [s for s in sources if _matches(s.entry.image, record, base)
                  and (info.georeferenced or s.entry.image is not None)]
        if not wanted:
            continue
        ids, centroids = catalog.observation_centroids(image_id)
        if not len(ids):
            for source in wanted:
                source.target(info)  # the CRS checks still apply
            continue
        area = shapely.union(record.footprint_native, shapely.box(*shapely.total_bounds(centroids)))
        tree = shapely.STRtree(centroids)
        values = {name: np.full(len(ids), np.nan) for name in CONTEXT_FIELDS}
        for source in wanted:
            source.seen += len(ids)
            for geoms, given in source.chunks(info, area):
                source.hits += _first_cover(tree, values, geoms, given, source.fields)
        catalog.set_observation_context(ids, values)
    for source in sources:
        source.report()
        if source.hits == 0 and source.seen:
            reporter().warning(f"{source.source}: no polygon covers any observation's centroid")


def fill_catalog(catalog: Catalog, config: CatalogConfig, base: Path) -> dict[str, int]:
    """Ingest everything the config lists; returns counts of images and observations."""
    sources = [_ContextSource(entry, base) for entry in config.context_layers]  # a bad layer fails before the work
    records: list[tuple[int, ImageRecord, RasterInfo]] = []
    for entry in reporter().track(config.images, task="images", message="ingesting images"):
        path = _resolve(entry.path, base)
        info = raster_info(path)
        record, tiles = _image_record(entry, path, info, config.context)
        image_id = catalog.add_image(record)
        catalog.add_context_tiles(image_id, tiles)
        records.append((image_id, record, info))
    observations = sum(_ingest_labels(catalog, entry, base, records)
                       for entry in reporter().track(config.labels, task="labels", message="ingesting labels"))
    _ingest_context(catalog, sources, base, records)
    return {"images": len(records), "observations": observations}


def build_catalog(config_path: str | Path, output: str | Path) -> dict[str, int]:
    """Build a catalog from a config file into a GeoPackage (written atomically) or a PostGIS URL."""
    config_path = Path(config_path)
    config = load_config(config_path, CatalogConfig)
    base = config_path.resolve().parent
    if is_postgres(output):
        with open_catalog(output, create=True) as catalog:
            return fill_catalog(catalog, config, base)
    with atomic_path(output) as tmp, open_catalog(tmp, create=True) as catalog:
        counts = fill_catalog(catalog, config, base)
    return counts
