"""Vector I/O: any OGR format (and CSV with a WKT column) read into GeoDataFrames aligned to a raster.

Labels in another CRS than the raster are reprojected, never rejected. Pixel-space data (no CRS, the
coordinates of a non-georeferenced image) is supported: it is used as is against a raster without
georeferencing. Invalid geometries are repaired with ``make_valid`` and counted.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS

from aifactory.errors import InputError
from aifactory.io.atomic import atomic_path
from aifactory.io.output_paths import make_parent
from aifactory.io.raster import check_file
from aifactory.progress import reporter

WKT_COLUMNS = ("wkt", "WKT", "geometry", "geom", "the_geom")

#: GeoPackage version of the files we make. rasterio's and pyogrio's GDAL would write 1.4, and the GDAL under
#: QGIS 3.22 LTR on Debian (3.6) then warns, at every opening, that the file "may only be partially supported";
#: 1.2 has everything these files use and every GIS reads it.
GPKG_VERSION = "1.2"
#: the same version as SQLite's ``PRAGMA user_version`` of the file says it (1.2 -> 10200)
GPKG_USER_VERSION = 10000 * int(GPKG_VERSION.split(".")[0]) + 100 * int(GPKG_VERSION.split(".")[1])


def _read_csv(path: Path, crs: Any = None) -> gpd.GeoDataFrame:
    frame = pd.read_csv(path)
    column = next((c for c in WKT_COLUMNS if c in frame.columns), None)
    if column is None:
        raise InputError(f"{path}: CSV has no WKT column (expected one of {', '.join(WKT_COLUMNS)})")
    try:
        geometry = shapely.from_wkt(frame[column].astype(str).to_numpy())
    except shapely.errors.GEOSException as exc:
        raise InputError(f"{path}: invalid WKT in column {column!r}: {exc}") from None
    return gpd.GeoDataFrame(frame.drop(columns=[column]), geometry=geometry, crs=crs)


@contextmanager
def _ogr_errors(path: Path, what: str = "") -> Iterator[None]:
    """OGR's open/read failures as one error line naming the file; its RuntimeWarnings (a GeoPackage's
    version, a field type it maps) silenced, as nothing the user can act on."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise InputError(f"{path}: cannot read vector data{what}: {str(exc).splitlines()[0]}") from None


def _known_crs(crs: CRS | None, fallback: Any) -> CRS | None:
    """``crs`` unless missing or a GeoPackage's "Undefined" SRS, else ``fallback`` (None: no CRS)."""
    if crs is not None and crs.name.lower().startswith(UNDEFINED_CRS_PREFIX):
        crs = None
    return crs if crs is not None or fallback is None else CRS.from_user_input(fallback)


def layer_info(path: str | Path, layer: str | int | None = None, crs: Any = None) -> tuple[list[str], CRS | None]:
    """The field names and CRS of an OGR layer (``crs`` when it has none), without reading its features."""
    path = Path(path)
    check_file(path, "vector file")
    with _ogr_errors(path):
        info = pyogrio.read_info(path, layer=layer)
    if info.get("geometry_type") is None:
        raise InputError(f"{path}{f' (layer {layer})' if layer is not None else ''}: layer has no geometry column")
    known = CRS.from_user_input(info["crs"]) if info.get("crs") else None
    return [str(c) for c in info["fields"]], _known_crs(known, crs)


def read_vector(path: str | Path, layer: str | int | None = None, crs: Any = None,
                repair: bool = True, **ogr: Any) -> gpd.GeoDataFrame:
    """Read a vector layer; ``crs`` is assigned to CSVs (and to layers that have none, a GeoPackage's "Undefined"
    SRS included) when given. ``ogr``: options of ``pyogrio.read_dataframe`` (``where``, ``bbox``, ``columns``,
    ``skip_features``, ``max_features``, ``fid_as_index``) for OGR formats; a CSV takes none."""
    path = Path(path)
    check_file(path, "vector file")
    if path.suffix.lower() == ".csv":
        if ogr:
            raise InputError(f"{path}: {', '.join(sorted(ogr))} cannot apply to a CSV file; save it as a "
                             "GeoPackage first")
        frame = _read_csv(path, crs)
    else:
        with _ogr_errors(path, f" with where {ogr['where']!r}" if ogr.get("where") else ""):
            frame = pyogrio.read_dataframe(path, layer=layer, **ogr)
        if not isinstance(frame, gpd.GeoDataFrame):
            raise InputError(f"{path}: layer has no geometry column")
        known = None if frame.crs is None else CRS.from_user_input(frame.crs)
        if _known_crs(known, crs) != known:
            frame = frame.set_crs(_known_crs(known, crs), allow_override=True)
    if repair:
        frame = repair_geometries(frame, str(path))
    return frame


def repair_geometries(frame: gpd.GeoDataFrame, source: str = "") -> gpd.GeoDataFrame:
    """Drop empty geometries and ``make_valid`` invalid ones, reporting how many of each."""
    geometry = frame.geometry.array
    missing = shapely.is_missing(geometry) | shapely.is_empty(geometry)
    if missing.any():
        reporter().warning(f"{source}: dropped {int(missing.sum())} empty or missing geometries")
        frame = frame.loc[~missing].copy()
    invalid = ~shapely.is_valid(frame.geometry.array)
    if invalid.any():
        frame = frame.copy()
        frame.loc[invalid, frame.geometry.name] = shapely.make_valid(frame.geometry.array[invalid])
        reporter().warning(f"{source}: repaired {int(invalid.sum())} invalid geometries")
    return frame


def raster_crs_for(vector_crs: Any, target_crs: Any, source: str = "", warn: bool = True) -> CRS | None:
    """The CRS vector data in ``vector_crs`` is brought to for a raster in ``target_crs`` (None = pixel space of a
    non-georeferenced raster): refused when the data has a CRS and the raster none; a warning (``warn``) when the
    data has none and is taken to be in the raster's."""
    if target_crs is None:
        if vector_crs is not None:
            raise InputError(f"{source}: vector data has a CRS ({CRS.from_user_input(vector_crs).to_string()}) but "
                             "the raster has no georeferencing; give pixel coordinates without a CRS")
        return None
    target = CRS.from_user_input(target_crs)
    if vector_crs is None and warn:
        reporter().warning(f"{source}: vector data has no CRS; assuming the raster's ({target.to_string()})")
    return target


def align_to_crs(frame: gpd.GeoDataFrame, target_crs: Any, source: str = "") -> gpd.GeoDataFrame:
    """Reproject ``frame`` into ``target_crs`` (None = pixel space of a non-georeferenced raster)."""
    target = raster_crs_for(frame.crs, target_crs, source)
    if target is None:
        return frame
    if frame.crs is None:
        return frame.set_crs(target)
    if CRS.from_user_input(frame.crs) == target:
        return frame
    return frame.to_crs(target)


#: how GDAL names the CRS of a GeoPackage layer declared with srs_id 0 or -1 ("Undefined geographic SRS"):
#: no CRS at all, not degrees
UNDEFINED_CRS_PREFIX = "undefined "

#: the vector formats an output's name may ask for, by suffix
VECTOR_DRIVERS = {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON", ".fgb": "FlatGeobuf"}

#: formats whose dataset is several files next to each other (written in a folder, then moved)
MULTI_FILE_SUFFIXES = (".shp",)


def write_vector(frame: gpd.GeoDataFrame, path: str | Path, layer: str | None = None) -> Path:
    """Write a GeoDataFrame atomically (GeoPackage unless the suffix says otherwise).

    Multi-file formats (Shapefile) are written into a temporary folder beside ``path``, then their side
    files are moved into place first and the main file last, so it never appears without them.
    """
    path = Path(path)
    driver = VECTOR_DRIVERS.get(path.suffix.lower())
    if driver is None:  # GDAL would guess, e.g. a folder of Shapefile parts for a name without a suffix
        raise InputError(f"{path}: not a vector file name: end it in {', '.join(VECTOR_DRIVERS)}")
    if path.suffix.lower() not in MULTI_FILE_SUFFIXES:
        with atomic_path(path) as tmp:
            write_frame(frame, tmp, layer=layer or path.stem, driver=driver)  # not the temporary file's name
        return path
    make_parent(path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.") as folder:
        write_frame(frame, Path(folder) / path.name, driver=driver)
        for part in sorted(Path(folder).iterdir(), key=lambda p: p.name == path.name):
            os.replace(part, path.parent / part.name)
    return path


def write_frame(frame: gpd.GeoDataFrame, path: str | Path, **options: Any) -> None:
    """Write ``frame`` through pyogrio, in place (callers that own their temporary file); ``options`` go to
    ``pyogrio.write_dataframe`` (``layer``, ``driver``, ``append``…). Pixel-space frames pass without a warning.
    A new GeoPackage is made in version :data:`GPKG_VERSION`."""
    # pyogrio warns at every write of a frame without a CRS; here such a layer is a non-georeferenced image's pixel
    # space, on purpose (the demo's scene is one). A process-wide filter narrowed to that message, not
    # catch_warnings (not thread-safe: detections are written from a writer thread); set at each call, not at
    # import, so that it also holds inside a caller's catch_warnings (pytest's, a notebook's). It is idempotent.
    warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning, module="pyogrio")
    if (options.get("driver") == "GPKG" or Path(path).suffix.lower() == ".gpkg") and not Path(path).exists():
        options.setdefault("VERSION", GPKG_VERSION)
    frame.to_file(path, engine="pyogrio", **options)


def geopackage_user_version(path: str | Path) -> int:
    """The version a GeoPackage file says it is in, as ``PRAGMA user_version`` (see :data:`GPKG_USER_VERSION`)."""
    with closing(sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def list_layers(path: str | Path) -> list[str]:
    """Names of the layers of a vector data source."""
    check_file(path, "vector file")
    try:
        return [str(name) for name, _ in pyogrio.list_layers(path)]
    except pyogrio.errors.DataSourceError as exc:
        raise InputError(f"{path}: cannot read vector data: {str(exc).splitlines()[0]}") from None
