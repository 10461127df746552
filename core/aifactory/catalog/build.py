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
    context_layers:                            # optional: polygons with cloud/snow/... fields → tile context;
      # each polygon counts as its bounding box for now (the catalog stores pixel rectangles): draw rectangles
      - path: clouds.gpkg
    context:
      compute: [vegetation, snow]
      tile_size: 512                           # also compute per tile
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import shapely
from pydantic import Field

from aifactory.catalog.context import compute_context
from aifactory.catalog.labels import load_labels, raster_footprint, to_wgs84
from aifactory.catalog.schema import CONTEXT_FIELDS
from aifactory.catalog.store import Catalog, ImageRecord, is_postgres, open_catalog
from aifactory.config import CrsText, StrictModel, load_config
from aifactory.errors import ConfigError, InputError
from aifactory.io.atomic import atomic_path
from aifactory.io.raster import RasterInfo, gsd, raster_info
from aifactory.io.vector import align_to_crs, read_vector
from aifactory.progress import reporter


class ImageEntry(StrictModel):
    path: Path
    name: str | None = Field(default=None, description="defaults to the file name without suffix")
    sensor: str | None = None
    date: dt.date | None = None
    band_names: list[str] = Field(default_factory=list, description="defaults to the raster's band descriptions")
    context: dict[Literal["cloud", "snow", "vegetation", "fog"], float] = Field(default_factory=dict)


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


def _ingest_context_layer(catalog: Catalog, entry: ContextLayer, base: Path,
                          records: list[tuple[int, ImageRecord, RasterInfo]]) -> None:
    path = _resolve(entry.path, base)
    frame = read_vector(path, layer=entry.layer, crs=entry.crs)
    fields = [f for f in CONTEXT_FIELDS if f in frame.columns]
    if not fields:
        raise InputError(f"{path}: a context layer needs at least one of the fields {', '.join(CONTEXT_FIELDS)}")
    for image_id, record, info in records:
        if not _matches(entry.image, record, base) or (not info.georeferenced and entry.image is None):
            continue
        local = align_to_crs(frame, info.crs if info.georeferenced else None, str(path))
        local = local.loc[shapely.intersects(local.geometry.array, record.footprint_native)]
        tiles = []
        inverse = ~info.transform
        for geom, values in zip(local.geometry.array, local[fields].itertuples(index=False), strict=True):
            minx, miny, maxx, maxy = shapely.bounds(geom)
            cols, rows = inverse * (np.array([minx, maxx]), np.array([miny, maxy]))
            c0, c1 = max(0, int(np.floor(cols.min()))), min(info.width, int(np.ceil(cols.max())))
            r0, r1 = max(0, int(np.floor(rows.min()))), min(info.height, int(np.ceil(rows.max())))
            if c1 > c0 and r1 > r0:
                tiles.append({"col_off": c0, "row_off": r0, "width": c1 - c0, "height": r1 - r0,
                              **{f: None if pd.isna(v) else float(v) for f, v in zip(fields, values, strict=True)}})
        catalog.add_context_tiles(image_id, tiles)


def fill_catalog(catalog: Catalog, config: CatalogConfig, base: Path) -> dict[str, int]:
    """Ingest everything the config lists; returns counts of images and observations."""
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
    for layer in config.context_layers:
        _ingest_context_layer(catalog, layer, base, records)
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
