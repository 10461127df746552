"""The catalog store: images, observations and context in a GeoPackage (default) or PostGIS (scale-out).

``open_catalog("catalog.gpkg")`` or ``open_catalog("postgresql+psycopg://user@host/db")`` return the same
:class:`Catalog`; both run the SQL compiled by :mod:`aifactory.catalog.selection`. The area-of-interest
test is the one place the engines differ: PostGIS evaluates ``ST_Intersects`` in the database, SQLite
pre-filters on the bounding-box columns and the exact test runs on the fetched rows with shapely (the
GeoPackage has no spatial SQL functions without SpatiaLite). Tests run the same suite on both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
import sqlalchemy as sa
from affine import Affine
from sqlalchemy.engine import Engine

from aifactory.catalog.hierarchy import MAX_LEVEL, cut, prefixes
from aifactory.catalog.schema import (
    CONTEXT_FIELDS,
    EXACT_CONTEXT_SCHEMA,
    SCHEMA_VERSION,
    SRID,
    catalog_info,
    context_tiles,
    images,
    init_geopackage,
    metadata,
    observations,
    update_gpkg_extent,
)
from aifactory.catalog.selection import Selection, where_clauses
from aifactory.errors import InputError


@dataclass
class ImageRecord:
    """One raster of the catalog; ``crs`` None means pixel space (then ``footprint_wgs84`` is None)."""

    path: str
    name: str
    bands: int
    dtype: str
    width: int
    height: int
    transform: Affine
    footprint_native: shapely.Geometry
    crs: str | None = None
    footprint_wgs84: shapely.Geometry | None = None
    sensor: str | None = None
    acquired: dt.date | None = None
    gsd: float | None = None
    band_names: list[str] = field(default_factory=list)
    context: dict[str, float] = field(default_factory=dict)


def is_postgres(target: str | Path) -> bool:
    return str(target).startswith(("postgresql:", "postgresql+", "postgres:"))


def _none_if_nan(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


class Catalog:
    """A catalog database; use :func:`open_catalog`. Close it (or use ``with``) when done."""

    def __init__(self, engine: Engine, label: str, schema_version: int = SCHEMA_VERSION) -> None:
        self.engine = engine
        self.label = label
        self.schema_version = schema_version

    @property
    def is_postgis(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writing -------------------------------------------------------------------------------
    def add_image(self, record: ImageRecord) -> int:
        """Insert an image (replacing one with the same path and its observations); returns its id."""
        values = {
            "path": record.path, "name": record.name, "sensor": record.sensor, "acquired": record.acquired,
            "gsd": record.gsd, "bands": record.bands, "band_names": ",".join(record.band_names),
            "dtype": record.dtype, "crs": record.crs, "width": record.width, "height": record.height,
            "footprint_native": shapely.to_wkb(record.footprint_native), "geom": record.footprint_wgs84,
            **{name: record.context.get(name) for name in CONTEXT_FIELDS},
        }
        if record.footprint_wgs84 is not None:
            values.update(zip(("minx", "miny", "maxx", "maxy"), shapely.bounds(record.footprint_wgs84).tolist(),
                              strict=True))
        with self.engine.begin() as conn:
            old = conn.execute(sa.select(images.c.id).where(images.c.path == record.path)).scalar()
            if old is not None:
                for table in (observations, context_tiles):
                    conn.execute(table.delete().where(table.c.image_id == old))
                conn.execute(images.delete().where(images.c.id == old))
            image_id = conn.execute(images.insert().values(**values).returning(images.c.id)).scalar_one()
            if not self.is_postgis:
                update_gpkg_extent(conn)
        return int(image_id)

    def add_observations(self, image_id: int, class_paths: Sequence[str], geoms_native: np.ndarray,
                         geoms_wgs84: np.ndarray | None, transform: Affine, source_layer: str) -> int:
        """Insert observations of one image (geometries in its CRS, and in WGS 84 unless pixel space)."""
        if len(class_paths) == 0:
            return 0
        centroids = shapely.get_coordinates(shapely.centroid(geoms_native))
        cols, rows = (~transform) * (centroids[:, 0], centroids[:, 1])
        bounds = (shapely.bounds(geoms_wgs84) if geoms_wgs84 is not None
                  else np.full((len(class_paths), 4), np.nan))
        native_wkb = shapely.to_wkb(geoms_native)
        records = []
        for i, path in enumerate(class_paths):
            record: dict[str, Any] = {
                "image_id": image_id, "class_path": path, "source_layer": source_layer,
                "col": float(cols[i]), "row": float(rows[i]), "geom_native": native_wkb[i],
                "geom": None if geoms_wgs84 is None else geoms_wgs84[i],
                **dict(zip(("minx", "miny", "maxx", "maxy"), map(_none_if_nan, bounds[i]), strict=True)),
            }
            record.update({f"level{level}": value for level, value in enumerate(prefixes(path), start=1)})
            records.append(record)
        with self.engine.begin() as conn:
            conn.execute(observations.insert(), records)
            if not self.is_postgis:
                update_gpkg_extent(conn)
        return len(records)

    def add_context_tiles(self, image_id: int, tiles: Sequence[Mapping[str, Any]]) -> None:
        """Per-tile context: dicts with col_off, row_off, width, height and any of the context fields."""
        if tiles:
            with self.engine.begin() as conn:
                conn.execute(context_tiles.insert(), [{"image_id": image_id, **tile} for tile in tiles])

    def observation_centroids(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids and centroids (points in the image's CRS or pixel space) of one image's observations, in id
        order: what the context layers are tested against. Taken from the stored native geometry, not from the
        rounded-through-the-transform ``col``/``row``, so that a centroid on a polygon's edge stays on it."""
        query = (sa.select(observations.c.id, observations.c.geom_native)
                 .where(observations.c.image_id == image_id).order_by(observations.c.id))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        ids = np.array([row[0] for row in rows], dtype="int64")
        geoms = shapely.from_wkb([bytes(row[1]) for row in rows]) if rows else np.array([], dtype=object)
        return ids, shapely.centroid(geoms)

    def set_observation_context(self, ids: np.ndarray, values: Mapping[str, np.ndarray]) -> int:
        """Store per-observation context (``values``: field → one float per id, NaN = none); returns how many
        observations got at least one value. Rows without any value are not touched (they stay NULL)."""
        fields = [name for name in CONTEXT_FIELDS if name in values]
        if not fields or len(ids) == 0:
            return 0
        table = np.column_stack([np.asarray(values[name], dtype="float64") for name in fields])
        keep = ~np.isnan(table).all(axis=1)
        rows = [{"oid": int(oid), **{f"v_{name}": _none_if_nan(v) for name, v in zip(fields, row, strict=True)}}
                for oid, row in zip(ids[keep], table[keep], strict=True)]
        if rows:
            update = (observations.update().where(observations.c.id == sa.bindparam("oid"))
                      .values({name: sa.bindparam(f"v_{name}") for name in fields}))
            with self.engine.begin() as conn:
                conn.execute(update, rows)
        return len(rows)

    # ---- reading -------------------------------------------------------------------------------
    def images(self, ids: Sequence[int] | None = None) -> pd.DataFrame:
        """Image rows (without geometry blobs), optionally only ``ids``."""
        columns = [c for c in images.c if c.name not in ("geom", "footprint_native")]
        query = sa.select(*columns).order_by(images.c.id)
        if ids is not None:
            query = query.where(images.c.id.in_([int(i) for i in ids]))
        with self.engine.connect() as conn:
            return pd.DataFrame(conn.execute(query).mappings().all(), columns=[c.name for c in columns])

    def select(self, selection: Selection, aoi: shapely.Geometry | None = None) -> pd.DataFrame:
        """Selected observations: id, image_id, class_path, source_layer and ``geometry`` (native)."""
        if selection.context and self.schema_version < EXACT_CONTEXT_SCHEMA:
            raise InputError(f"catalog {self.label} is schema {self.schema_version}: it counted each context polygon "
                             "as its bounding box, so selecting by context would be wrong; rebuild it with aifactory "
                             f"catalog build CONFIG -o {self.label}")
        columns = [observations.c.id, observations.c.image_id, observations.c.class_path,
                   observations.c.source_layer, observations.c.geom_native]
        query = sa.select(*columns).select_from(observations.join(images)).where(*where_clauses(selection, aoi))
        if aoi is not None:
            if self.is_postgis:
                query = query.where(sa.func.ST_Intersects(
                    observations.c.geom,
                    sa.func.ST_GeomFromWKB(sa.bindparam("aoi", shapely.to_wkb(aoi), type_=sa.LargeBinary), SRID)))
            else:
                query = query.add_columns(observations.c.geom)
        query = query.order_by(observations.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        if aoi is not None and not self.is_postgis:
            wgs84 = np.array([row[-1] for row in rows], dtype=object)
            rows = [row for row, hit in zip(rows, shapely.intersects(wgs84, aoi), strict=True) if hit]
        frame = pd.DataFrame([row[:4] for row in rows], columns=["id", "image_id", "class_path", "source_layer"])
        frame["geometry"] = shapely.from_wkb([row[4] for row in rows]) if rows else []
        return frame

    def counts(self, selection: Selection, aoi: shapely.Geometry | None = None) -> pd.DataFrame:
        """Objects and images per class at ``selection.level``, sorted by class."""
        chosen = self.select(selection, aoi)
        chosen["class"] = [cut(path, selection.level) for path in chosen["class_path"]]
        grouped = chosen.groupby("class").agg(objects=("id", "size"), images=("image_id", "nunique"))
        return grouped.reset_index().sort_values("class").reset_index(drop=True)

    def class_paths(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(observations.c.class_path).distinct()
                                     .order_by(observations.c.class_path)).scalars())


def open_catalog(target: str | Path, create: bool = False) -> Catalog:
    """Open (or with ``create`` make) a catalog: a GeoPackage path or a ``postgresql://`` URL."""
    if is_postgres(target):
        url = str(target).replace("postgresql://", "postgresql+psycopg://", 1).replace(
            "postgres://", "postgresql+psycopg://", 1)
        engine = sa.create_engine(url, future=True)
        label = engine.url.render_as_string(hide_password=True)
    else:
        path = Path(target)
        if not create and not path.is_file():
            raise InputError(f"{path}: catalog not found")
        engine = sa.create_engine(f"sqlite:///{path}", future=True)
        sa.event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA foreign_keys = ON"))
        label = str(path)
    catalog = Catalog(engine, label)
    try:
        with engine.begin() as conn:
            if create:
                old = _schema_version(conn, label)
                if old is not None and old != SCHEMA_VERSION:  # create_all would keep its tables as they are
                    raise InputError(f"{label}: holds a schema-{old} catalog; build schema {SCHEMA_VERSION} into an "
                                     f"empty database, or drop its tables ({', '.join(metadata.tables)}) first")
                if not catalog.is_postgis:
                    init_geopackage(conn)
                metadata.create_all(conn)
                conn.execute(catalog_info.delete())
                conn.execute(catalog_info.insert(), [{"key": "schema_version", "value": str(SCHEMA_VERSION)},
                                                     {"key": "max_level", "value": str(MAX_LEVEL)}])
            else:
                version = _schema_version(conn, label)
                if version is None:
                    raise InputError(f"{label}: not an aifactory catalog (no catalog_info table)")
                if version > SCHEMA_VERSION:
                    raise InputError(f"{label}: catalog schema {version} was written by a newer aifactory (this one "
                                     f"reads up to schema {SCHEMA_VERSION}); upgrade aifactory")
                catalog.schema_version = version
    except sa.exc.OperationalError as exc:
        engine.dispose()
        raise InputError(f"{label}: cannot open catalog: {str(exc.orig).strip().splitlines()[0]}") from None
    except sa.exc.DatabaseError as exc:
        engine.dispose()
        raise InputError(f"{label}: cannot open catalog: {str(exc.orig).strip().splitlines()[0]}") from None
    except BaseException:
        engine.dispose()
        raise
    return catalog


def _schema_version(conn: sa.Connection, label: str) -> int | None:
    """The catalog's schema version; None where there is no catalog. A catalog_info without the key predates
    versioning (schema 1)."""
    if not sa.inspect(conn).has_table(catalog_info.name):
        return None
    value = conn.execute(sa.select(catalog_info.c.value).where(catalog_info.c.key == "schema_version")).scalar()
    try:
        return int(value) if value is not None else 1
    except ValueError:
        raise InputError(f"{label}: catalog_info: schema_version {value!r} is not a number") from None
