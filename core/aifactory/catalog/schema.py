"""Catalog tables, one definition for both backends (GeoPackage through SQLite, PostGIS).

Why SQLAlchemy Core rather than GDAL's SQL or raw sqlite3: the selection filters are compiled once into
SQLAlchemy expressions and run, parameterised, on SQLite and on PostgreSQL alike; GDAL's SQL dialects
differ per driver and OGR cannot bind parameters.

Why the GeoPackage bookkeeping is written here rather than by GDAL: layers created by GDAL carry R-tree
triggers that call GDAL-only SQL functions (``ST_IsEmpty``…), so any plain SQLite insert into them fails.
The few metadata rows a GeoPackage needs (spatial reference systems, contents, geometry columns) and the
GeoPackage geometry blob (a short header in front of standard WKB) are small and fully specified
(OGC 12-128r18, §2.1.3), so the file stays a real GeoPackage that QGIS opens as layers.

Geometries are kept twice: ``geom`` in WGS 84 (the spatial column, what QGIS shows and AOI filters use;
NULL for pixel-space images) and ``geom_native`` (WKB in the image's own CRS or pixel space, what chips are
cut from). Bounding boxes in WGS 84 are plain float columns so that a box pre-filter is one indexed SQL
comparison on both backends.

Context (percent of cloud, snow, vegetation, fog) lives at three grains: per image (``images``), per computed
tile (``context_tiles``: the regular grid of :func:`aifactory.catalog.context.compute_context`) and per
observation (``observations``: the value of the context-layer polygon that covers the observation's centroid,
computed exactly at build time with the polygon's real geometry).

Schema versions (``catalog_info.schema_version``): 1 stored each context-layer polygon as a pixel rectangle in
``context_tiles`` (its bounding box), so a context selection was wrong around any non-rectangular polygon; 2 adds
the per-observation context columns and keeps only computed tiles in ``context_tiles``. A schema-1 catalog cannot
be migrated (its polygons are gone): :class:`aifactory.catalog.store.Catalog` refuses context selections on it and
asks for a rebuild.
"""

from __future__ import annotations

import struct
from typing import Any

import shapely
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.types import TypeDecorator, UserDefinedType

from aifactory.catalog.hierarchy import MAX_LEVEL
from aifactory.io.vector import GPKG_USER_VERSION

SRID = 4326
CONTEXT_FIELDS = ("cloud", "snow", "vegetation", "fog")
SCHEMA_VERSION = 2
#: the first schema whose context selections are exact (see the module docstring)
EXACT_CONTEXT_SCHEMA = 2

_ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}


def gpkg_blob(geom: shapely.Geometry, srs_id: int = SRID) -> bytes:
    """A GeoPackage geometry blob: ``GP``, version 0, flags (little endian, xy envelope), srs id, WKB."""
    if shapely.is_empty(geom):
        return b"GP\x00" + bytes([0b00010001]) + struct.pack("<i", srs_id) + shapely.to_wkb(geom, byte_order=1)
    minx, miny, maxx, maxy = shapely.bounds(geom)
    header = b"GP\x00" + bytes([0b00000011]) + struct.pack("<i4d", srs_id, minx, maxx, miny, maxy)
    return header + shapely.to_wkb(geom, byte_order=1)


def from_gpkg_blob(blob: bytes) -> shapely.Geometry:
    if blob[:2] != b"GP":
        raise ValueError("not a GeoPackage geometry blob")
    envelope = (blob[3] >> 1) & 0b111
    return shapely.from_wkb(blob[8 + _ENVELOPE_BYTES[envelope]:])


class _PostGISGeometry(UserDefinedType[Any]):
    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return f"geometry(Geometry, {SRID})"


class _GpkgGeometry(sa.types.LargeBinary):
    """A BLOB column declared as ``GEOMETRY`` (the type name GeoPackage readers look for)."""


@compiles(_GpkgGeometry, "sqlite")
def _compile_gpkg_geometry(element: Any, compiler: Any, **kw: Any) -> str:
    return "GEOMETRY"


class Geometry(TypeDecorator[shapely.Geometry]):
    """A WGS 84 geometry: GeoPackage blob on SQLite, PostGIS ``geometry`` (sent as EWKB) on PostgreSQL."""

    impl = sa.types.LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(_PostGISGeometry())
        return dialect.type_descriptor(_GpkgGeometry())

    def process_bind_param(self, value: shapely.Geometry | None, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return bytes(shapely.to_wkb(shapely.set_srid(value, SRID), include_srid=True))
        return gpkg_blob(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> shapely.Geometry | None:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return shapely.from_wkb(value)
        return from_gpkg_blob(bytes(value))


def _bbox_columns() -> list[sa.Column[Any]]:
    return [sa.Column(name, sa.Float, nullable=True) for name in ("minx", "miny", "maxx", "maxy")]


def _context_columns(where: str = "") -> list[sa.Column[Any]]:
    return [sa.Column(name, sa.Float, nullable=True, comment=f"% of {name}{where}") for name in CONTEXT_FIELDS]


metadata = sa.MetaData()

images = sa.Table(
    "images", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("path", sa.Text, nullable=False, unique=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("sensor", sa.Text, index=True),
    sa.Column("acquired", sa.Date, index=True),
    sa.Column("gsd", sa.Float, index=True),
    sa.Column("bands", sa.Integer, nullable=False),
    sa.Column("band_names", sa.Text, nullable=False, default=""),
    sa.Column("dtype", sa.Text, nullable=False),
    sa.Column("crs", sa.Text, comment="NULL for pixel space"),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    *_bbox_columns(),
    *_context_columns(),
    sa.Column("footprint_native", sa.LargeBinary, nullable=False),
    sa.Column("geom", Geometry()),
)

observations = sa.Table(
    "observations", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("class_path", sa.Text, nullable=False, index=True),
    *[sa.Column(f"level{level}", sa.Text, index=True) for level in range(1, MAX_LEVEL + 1)],
    sa.Column("source_layer", sa.Text, nullable=False),
    sa.Column("col", sa.Float, nullable=False, comment="centroid column in the image"),
    sa.Column("row", sa.Float, nullable=False, comment="centroid row in the image"),
    *_bbox_columns(),
    *_context_columns(" from the context layers at the centroid (NULL: no polygon gives it)"),
    sa.Column("geom_native", sa.LargeBinary, nullable=False),
    sa.Column("geom", Geometry()),
)
sa.Index("ix_observations_bbox", observations.c.minx, observations.c.maxx, observations.c.miny, observations.c.maxy)

context_tiles = sa.Table(
    "context_tiles", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("col_off", sa.Integer, nullable=False),
    sa.Column("row_off", sa.Integer, nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    *_context_columns(" computed from the pixels"),
)

catalog_info = sa.Table(
    "catalog_info", metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

_WGS84_WKT = ('GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],'
              'UNIT["degree",0.0174532925199433],AUTHORITY["EPSG","4326"]]')


def init_geopackage(conn: Connection) -> None:
    """Turn a fresh SQLite file into a GeoPackage whose catalog tables are layers, in the version of every
    GeoPackage we make (:data:`aifactory.io.vector.GPKG_VERSION` says why)."""
    conn.exec_driver_sql("PRAGMA application_id = 1196444487")  # 'GPKG'
    conn.exec_driver_sql(f"PRAGMA user_version = {GPKG_USER_VERSION}")
    conn.exec_driver_sql(
        "CREATE TABLE IF NOT EXISTS gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY, "
        "organization TEXT NOT NULL, organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL, "
        "description TEXT)")
    conn.exec_driver_sql(
        "CREATE TABLE IF NOT EXISTS gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL, "
        "identifier TEXT UNIQUE, description TEXT DEFAULT '', last_change DATETIME NOT NULL DEFAULT "
        "(strftime('%Y-%m-%dT%H:%M:%fZ','now')), min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, "
        "srs_id INTEGER REFERENCES gpkg_spatial_ref_sys(srs_id))")
    conn.exec_driver_sql(
        "CREATE TABLE IF NOT EXISTS gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL, "
        "geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL, "
        "CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name))")
    srs_rows = [("Undefined cartesian SRS", -1, "NONE", -1, "undefined"),
                ("Undefined geographic SRS", 0, "NONE", 0, "undefined"),
                ("WGS 84 geodetic", SRID, "EPSG", SRID, _WGS84_WKT)]
    for row in srs_rows:
        conn.exec_driver_sql("INSERT OR IGNORE INTO gpkg_spatial_ref_sys (srs_name, srs_id, organization, "
                             "organization_coordsys_id, definition) VALUES (?, ?, ?, ?, ?)", row)
    for table, kind in (("images", "features"), ("observations", "features"), ("context_tiles", "attributes")):
        conn.exec_driver_sql("INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, srs_id) "
                             "VALUES (?, ?, ?, ?)", (table, kind, table, SRID if kind == "features" else None))
        if kind == "features":
            conn.exec_driver_sql("INSERT OR IGNORE INTO gpkg_geometry_columns VALUES (?, 'geom', 'GEOMETRY', ?, 0, 0)",
                                 (table, SRID))


def update_gpkg_extent(conn: Connection) -> None:
    """Refresh the layer extents in ``gpkg_contents`` (QGIS zooms to them)."""
    for table in (images, observations):
        row = conn.execute(sa.select(sa.func.min(table.c.minx), sa.func.min(table.c.miny),
                                     sa.func.max(table.c.maxx), sa.func.max(table.c.maxy))).one()
        conn.exec_driver_sql("UPDATE gpkg_contents SET min_x = ?, min_y = ?, max_x = ?, max_y = ? WHERE "
                             "table_name = ?", (*row, table.name))

