"""Selections (the Kibana replacement): YAML filters compiled to parameterised SQL.

A selection picks observations by class (a path matches at its own level, so ``vehicle/aircraft`` selects
every aircraft subtype), context ranges (see :func:`context_value`: the context-layer polygon under the
observation, else its computed tile, else its image),
an area of interest, a date range, sensors, a GSD range and image names. Every value reaches the database
as a bound parameter; nothing is formatted into SQL text.

Context and range semantics: a range is ``[min, max]`` with ``null`` for an open end, both ends inclusive;
an image (or tile) whose value is unknown does not pass a range on that attribute. A reversed range, an
empty list of classes (sensors, images) and a class the catalog does not hold are refused: each would
otherwise silently select nothing, or everything.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import shapely
import sqlalchemy as sa
from pydantic import AfterValidator, Field, field_validator, model_validator

from aifactory.catalog.hierarchy import MAX_LEVEL, config_path, depth, prefixes
from aifactory.catalog.schema import CONTEXT_FIELDS, context_tiles, images, observations
from aifactory.config import CrsText, StrictModel, WktText, load_config
from aifactory.errors import ConfigError

BoundT = TypeVar("BoundT", float, dt.date)


def _ordered(bounds: tuple[BoundT | None, BoundT | None]) -> tuple[BoundT | None, BoundT | None]:
    """A reversed range selects nothing: almost always swapped ends, so it is refused."""
    low, high = bounds
    if low is not None and high is not None and low > high:
        raise ValueError(f"[{low}, {high}] is reversed: a range is [min, max]")
    return bounds


Range = Annotated[tuple[float | None, float | None], AfterValidator(_ordered)]
DateRange = Annotated[tuple[dt.date | None, dt.date | None], AfterValidator(_ordered)]


class Aoi(StrictModel):
    """An area of interest: inline WKT, or a vector file (all its features, unioned)."""

    wkt: WktText | None = None
    path: Path | None = None
    layer: str | None = None
    crs: CrsText = Field(default="EPSG:4326", description="CRS of the WKT (a file's own CRS wins)")

    @model_validator(mode="after")
    def _one_source(self) -> Aoi:
        if (self.wkt is None) == (self.path is None):
            raise ValueError("give exactly one of wkt or path")
        return self

    def to_wgs84(self, base: Path | None = None) -> shapely.Geometry:
        """The AOI as one WGS 84 geometry."""
        import geopandas as gpd

        from aifactory.io.vector import read_vector

        if self.wkt is not None:
            frame = gpd.GeoDataFrame(geometry=[shapely.from_wkt(self.wkt)], crs=self.crs)
        else:
            path = self.path if self.path is None or self.path.is_absolute() or base is None else base / self.path
            assert path is not None
            frame = read_vector(path, layer=self.layer, crs=self.crs)
        return shapely.union_all(frame.to_crs(4326).geometry.array)


class Selection(StrictModel):
    """Which observations to use. Every key is optional; an empty selection selects everything."""

    classes: list[str] = Field(default_factory=list, description="class paths; each matches its subtree")
    exclude_classes: list[str] = Field(default_factory=list)
    level: int | None = Field(default=None, ge=1, le=MAX_LEVEL, description="hierarchy level for the counts")
    context: dict[str, Range] = Field(default_factory=dict, description="e.g. cloud: [null, 20]")
    aoi: Aoi | None = None
    dates: DateRange | None = None
    sensors: list[str] = Field(default_factory=list)
    gsd: Range | None = None
    images: list[str] = Field(default_factory=list, description="image names or paths")

    @field_validator("classes", "sensors", "images")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value:  # the key given with nothing in it: ``[]`` reads as "none", but would select all
            raise ValueError("empty list: leave the key out to select all")
        return value

    @field_validator("classes", "exclude_classes")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        return [config_path(path) for path in value]

    @field_validator("context")
    @classmethod
    def _context_keys(cls, value: dict[str, Range]) -> dict[str, Range]:
        unknown = sorted(set(value) - set(CONTEXT_FIELDS))
        if unknown:
            raise ValueError(f"unknown context attribute {unknown[0]!r}; expected one of {', '.join(CONTEXT_FIELDS)}")
        return value


def load_selection(path: str | Path) -> Selection:
    return load_config(path, Selection)


def check_classes(selection: Selection, known: Iterable[str], catalog: str, where: str) -> None:
    """Refuse a class (to select or exclude) that no observation of the catalog has at any level: a typo
    would otherwise select nothing (or exclude nothing). ``known`` are the class paths of the ``catalog``;
    ``where`` names the selection (its file, or the key path above it) for the error line."""
    levels = sorted({prefix for path in known for prefix in prefixes(path) if prefix is not None})
    for key in ("classes", "exclude_classes"):
        for path in getattr(selection, key):
            if path not in levels:
                close = difflib.get_close_matches(path, levels, n=3)
                hint = f"did you mean {' or '.join(close)}? " if close else ""
                listing = ", ".join(levels[:20]) + (f", … ({len(levels)} in all)" if len(levels) > 20 else "")
                raise ConfigError(f"{where}{key}: {path!r} is not a class of {catalog} ({hint}known: "
                                  f"{listing or 'none'})")


def _in_range(column: Any, bounds: tuple[Any, Any]) -> Any:
    low, high = bounds
    clauses = [column.is_not(None)]
    if low is not None:
        clauses.append(column >= low)
    if high is not None:
        clauses.append(column <= high)
    return sa.and_(*clauses)


def context_value(field: str) -> Any:
    """The context attribute of an observation, most specific first: the value a context-layer polygon covering
    its centroid gave it at build time (exact geometry, stored on the observation), else the value computed for
    the tile holding its centroid, else its image's. Imported values beat computed ones at the same place, as
    they do for images (:func:`aifactory.catalog.build._image_record`)."""
    tile = context_tiles.alias("tile")
    obs = observations
    per_tile = (sa.select(tile.c[field])
                .where(tile.c.image_id == obs.c.image_id, tile.c[field].is_not(None),
                       obs.c.col >= tile.c.col_off, obs.c.col < tile.c.col_off + tile.c.width,
                       obs.c.row >= tile.c.row_off, obs.c.row < tile.c.row_off + tile.c.height)
                .order_by(tile.c.id).limit(1).scalar_subquery())
    return sa.func.coalesce(obs.c[field], per_tile, images.c[field])


def _class_clause(paths: list[str]) -> Any:
    return sa.or_(*[observations.c[f"level{depth(path)}"] == path for path in paths])


def _not_class_clause(paths: list[str]) -> Any:
    """Observations outside every subtree of ``paths``. A path shallower than an excluded one has NULL in that
    level column, and ``NOT (NULL = 'x')`` is NULL in SQL, which would drop it: so NULL counts as "not under"."""
    return sa.and_(*[sa.or_(observations.c[f"level{depth(path)}"].is_(None),
                            observations.c[f"level{depth(path)}"] != path) for path in paths])


def where_clauses(selection: Selection, aoi: shapely.Geometry | None = None) -> list[Any]:
    """SQL conditions on ``observations JOIN images`` (the AOI only as a bounding-box pre-filter)."""
    clauses: list[Any] = []
    if selection.classes:
        clauses.append(_class_clause(selection.classes))
    if selection.exclude_classes:
        clauses.append(_not_class_clause(selection.exclude_classes))
    for field, bounds in selection.context.items():
        clauses.append(_in_range(context_value(field), bounds))
    if selection.dates is not None:
        start, end = selection.dates
        clauses.append(_in_range(images.c.acquired, (start, end)))
    if selection.sensors:
        clauses.append(images.c.sensor.in_(selection.sensors))
    if selection.gsd is not None:
        clauses.append(_in_range(images.c.gsd, selection.gsd))
    if selection.images:
        clauses.append(sa.or_(images.c.name.in_(selection.images), images.c.path.in_(selection.images)))
    if aoi is not None:
        minx, miny, maxx, maxy = shapely.bounds(aoi)
        clauses.extend([observations.c.minx <= maxx, observations.c.maxx >= minx,
                        observations.c.miny <= maxy, observations.c.maxy >= miny])
    return clauses
