"""Checks of an RPC orthorectification's terrain before the work: the DEM or the constant height.

GDAL's RPC transformer does not fail on bad terrain: where the DEM cannot be read, has no value or does not
reach, the pixel's transformation fails and the output pixel is nodata. A truncated DEM, one of the wrong place
or one that is nodata everywhere thus gives an all-nodata image and a success. So the DEM is opened and its
heights over the output's ground extent are read (decimated) before the work, and absurd constant heights are
refused. The extent is GDAL's output grid, computed with the DEM: where the RPCs depend on height, the image
lies where the DEM's heights put it, not where the RPCs' mean height does.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rasterio.crs import CRS
from rasterio.errors import RasterioError, WindowError
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from aifactory.errors import InputError
from aifactory.io.raster import check_readable, crs_string, gdal_message, is_georeferenced, open_raster
from aifactory.progress import reporter

#: RPCs map longitude/latitude (WGS 84) to image coordinates; GDAL also takes a DEM without a CRS as WGS 84
WGS84 = CRS.from_epsg(4326)
#: Heights above the WGS 84 ellipsoid where imaged ground can be: the Dead Sea shore (-430 m above the geoid,
#: which lies ~+20 m there) is the lowest land, Everest (8849 m, geoid ~-30 m) the highest; the geoid stays
#: within -106..+85 m of the ellipsoid, so ground outside -500..9000 m is a typing or unit mistake (feet, km).
HEIGHT_RANGE = (-500.0, 9000.0)
#: DEM pixels read to check its heights over the ground extent (a decimated read, like the stretch statistics)
DEM_SAMPLE_PIXELS = 1 << 20
#: below this share of the ground extent with heights, say so (the rest of the output will be nodata)
FULL_COVER = 0.99


def terrain_options(ds: Any, dem: Path | None, height: float | None) -> dict[str, Any]:
    """GDAL's RPC transformer options for ``ds`` (RPCs, and ``RPC_DEM`` or ``RPC_HEIGHT``), checked (a DEM's
    heights over the image are checked once the output grid is known: :func:`check_dem_cover`)."""
    if not ds.rpcs:
        raise InputError(f"{ds.name}: raster has no RPCs; cannot orthorectify (--ortho)")
    if dem is not None and height is None:
        with _dem(dem):
            return {"rpcs": ds.rpcs, "RPC_DEM": str(dem)}
    if height is not None and dem is None:
        check_height(height)
        return {"rpcs": ds.rpcs, "RPC_HEIGHT": float(height)}
    raise InputError("--ortho needs exactly one of --dem DEM or --height H")


def check_height(height: float) -> None:
    low, high = HEIGHT_RANGE
    if not (math.isfinite(height) and low <= height <= high):
        raise InputError(f"--height {height:g}: expected a ground height above the WGS 84 ellipsoid in metres, "
                         f"between {low:g} and {high:g}")


@contextlib.contextmanager
def _dem(path: Path) -> Iterator[Any]:
    """The DEM, open, proved readable and georeferenced; its errors say ``--dem``."""
    try:
        with open_raster(path) as dem:
            check_readable(dem)
            if not is_georeferenced(dem):
                raise InputError(f"{path}: raster has no georeferencing, it cannot give heights on the ground")
            yield dem
    except InputError as exc:
        raise InputError(f"--dem: {exc}") from None


def check_dem_cover(path: Path, crs: CRS, bounds: tuple[float, float, float, float]) -> None:
    """Refuse a DEM without heights over ``bounds`` (the output's ground extent, in ``crs``); warn when it has
    them over part of it only (the share of the extent it reaches × its valid pixels there, decimated)."""
    with _dem(path) as dem:
        where = (f"the image's ground extent ({', '.join(f'{v:.6g}' for v in bounds)} in {crs_string(crs)}; "
                 f"DEM bounds {', '.join(f'{v:.6g}' for v in dem.bounds)} in {crs_string(dem.crs) or 'EPSG:4326'})")
        wanted = from_bounds(*transform_bounds(crs, dem.crs or WGS84, *bounds), transform=dem.transform)
        try:
            inside = wanted.intersection(Window(0, 0, dem.width, dem.height))
        except WindowError:
            raise InputError(f"{path}: DEM does not cover {where}") from None
        factor = max(1.0, math.sqrt(inside.width * inside.height / DEM_SAMPLE_PIXELS))
        shape = (max(1, round(inside.height / factor)), max(1, round(inside.width / factor)))
        try:
            valid = dem.dataset_mask(window=inside, out_shape=shape) > 0
        except RasterioError as exc:
            raise InputError(f"{path}: DEM is truncated or corrupt: {gdal_message(exc)}") from None
        if not valid.any():
            raise InputError(f"{path}: DEM is nodata all over {where}")
        share = inside.width * inside.height / (wanted.width * wanted.height) * float(valid.mean())
    if share < FULL_COVER:
        reporter().warning(f"--dem {path}: heights over {share:.0%} of the image's ground extent only: the rest "
                           "of the output will be nodata")
