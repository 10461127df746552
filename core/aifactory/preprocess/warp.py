"""The output grid of a reprojection, resampling or RPC orthorectification, checked before any pixel is written.

GDAL's ``calculate_default_transform`` gives the grid; a grid far finer or coarser than the input is refused:
it is what a resolution in the wrong units gives (degrees for metres: ``--resolution 0.001`` on a 0.5 m scene
asks for 256000² px and fills the disk for hours; metres to a degree CRS: ``--dst-crs EPSG:4326 --resolution
10`` gives a single pixel), never an output anyone wants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import CRSError, RasterioError
from rasterio.transform import array_bounds
from rasterio.warp import calculate_default_transform, reproject
from rasterio.windows import Window

from aifactory.config import parse_crs as checked_crs
from aifactory.errors import InputError
from aifactory.io.raster import crs_string, gdal_message, window_transform

#: Outputs up to this size are never refused (``synth``'s cap, the size prediction is benchmarked at)...
MAX_QUIET_PIXELS = 20000 ** 2
#: ... larger ones when their pixels are more than this many times finer than the input's: resampling adds no
#: detail, and a 10× finer grid already holds 100× the pixels
MAX_FINER = 10.0
#: Pixels more than this many times coarser than the input's keep one value per million input pixels: not an
#: aggregation but metres given to a degree CRS (1° ≈ 111 km), whatever the input's size
MAX_COARSER = 1000.0


@dataclass
class Warp:
    """The output grid of a warp and how to fill one of its windows."""

    crs: CRS
    transform: Affine
    width: int
    height: int
    resampling: Resampling
    options: dict[str, Any] = field(default_factory=dict)  # rpcs and RPC transformer options

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """West, south, east, north of the output grid, in its CRS."""
        west, south, east, north = array_bounds(self.height, self.width, self.transform)
        return west, south, east, north

    def read(self, ds: Any, bands: list[int], window: Window, nodata: float) -> tuple[np.ndarray, np.ndarray]:
        """Warped (bands, h, w) data and its validity for an output window; ``nodata`` fills what no valid source
        pixel reaches, in each band.

        Each distinct band is warped once, into a masked array of exactly that many bands: rasterio then maps
        the i-th source band to the i-th destination band and turns the warper's alpha into the mask. (A plain
        array with one more band for the alpha makes rasterio write source band ``b`` into destination band
        ``b``: any selection but ``1..n`` came out in the wrong bands, or failed.)

        rasterio gives the warper one source nodata for every band (the dataset's first band's) and has it treat
        a pixel as nodata only when all bands are (``UNIFIED_SRC_NODATA=YES``): a band whose own nodata differs
        (a VRT's) had its nodata warped as values, and valid. Bands are therefore warped in groups of one source
        nodata; when the bands have several, each band's nodata is its own (``UNIFIED_SRC_NODATA=NO``, as
        ``gdalwarp -wo UNIFIED_SRC_NODATA=NO``): it becomes ``nodata`` in that band only, and a pixel is valid
        where any band is. One nodata for all bands (the common case) is one group, warped as before."""
        distinct = list(dict.fromkeys(bands))
        groups = source_nodata_groups(ds, distinct, nodata)
        options = dict(self.options, UNIFIED_SRC_NODATA="NO") if len(groups) > 1 else self.options
        shape = (int(window.height), int(window.width))
        planes: dict[int, np.ndarray] = {}
        valid = np.zeros(shape, dtype=bool)
        for src_nodata, members in groups:
            out: np.ma.MaskedArray = np.ma.masked_array(
                np.full((len(members), *shape), nodata, dtype=ds.dtypes[bands[0] - 1]))
            try:
                warped, _ = reproject(rasterio.band(ds, members), out, src_nodata=src_nodata, dst_crs=self.crs,
                                      dst_transform=window_transform(self.transform, window), dst_nodata=nodata,
                                      resampling=self.resampling, src_alpha=alpha_band(ds) if src_nodata is None
                                      else 0, **options)
            except RasterioError as exc:
                raise InputError(f"{ds.name}: cannot read the pixels of output window {window}: "
                                 f"{gdal_message(exc)}") from None
            group_valid = ~np.ma.getmaskarray(warped)[0]
            valid |= group_valid
            for band, plane in zip(members, np.ma.getdata(warped), strict=True):
                if len(groups) > 1:  # where this group is nodata, the warper leaves source values
                    plane[~group_valid] = nodata
                    if src_nodata is not None:
                        plane[holds(plane, src_nodata)] = nodata
                planes[band] = plane
        return np.stack([planes[band] for band in bands]), valid


def holds(plane: np.ndarray, value: float) -> np.ndarray:
    """Where ``plane`` holds ``value``, NaN included (NaN equals nothing, itself neither)."""
    return np.isnan(plane) if math.isnan(value) else plane == value


def alpha_band(ds: Any) -> int:
    """The 1-based index of the source's alpha band, 0 without one. The warper honours a source's internal mask by
    itself, but an alpha band only when told: without it, what the alpha hides came out valid."""
    return next((index for index, interp in enumerate(ds.colorinterp, start=1) if interp == ColorInterp.alpha), 0)


def source_nodata_groups(ds: Any, bands: list[int], fill: float) -> list[tuple[float | None, list[int]]]:
    """``bands`` grouped by their source nodata, in order of first appearance: (nodata, bands).

    A band that declares none, among bands that do, gets ``fill`` (the output's nodata, which it cannot hold as a
    valid value anyway). NaN nodata values are one group."""
    values = [ds.nodatavals[band - 1] for band in bands]
    if all(value is None for value in values):
        return [(None, bands)]
    groups: dict[str, tuple[float | None, list[int]]] = {}
    for band, value in zip(bands, values, strict=True):
        value = fill if value is None else value
        groups.setdefault(repr(float(value)), (value, []))[1].append(band)
    return list(groups.values())


def parse_crs(value: str, flag: str) -> CRS:
    """The CRS an option gives, as rasterio takes it (a wrong one is :func:`aifactory.config.parse_crs`'s line)."""
    return CRS.from_user_input(checked_crs(value, flag))


def plan_warp(ds: Any, dst_crs: CRS, resolution: float | None, resampling: str,
              rpc_options: dict[str, Any] | None = None) -> Warp:
    """The grid of ``ds`` warped to ``dst_crs`` at ``resolution`` (None: GDAL's choice, about the input's pixel
    count); through its RPCs with ``rpc_options`` (``rpcs`` and ``RPC_*`` transformer options), else its CRS."""
    rpc = rpc_options or {}
    transform, width, height = _grid(ds, dst_crs, resolution, rpc)
    if resolution is not None:
        natural = _grid(ds, dst_crs, None, rpc)[0]
        _check_scale(ds, None if rpc_options else ds.crs, dst_crs, resolution, abs(natural.a), (width, height))
    return Warp(dst_crs, transform, width, height, Resampling[resampling], rpc)


def _grid(ds: Any, dst_crs: CRS, resolution: float | None, rpc: dict[str, Any]) -> tuple[Affine, int, int]:
    """GDAL's grid for the warp; one line when the input's georeferencing does not reach ``dst_crs``."""
    src_crs = CRS.from_epsg(4326) if rpc else ds.crs
    bounds = () if rpc else tuple(ds.bounds)
    try:
        return calculate_default_transform(src_crs, dst_crs, ds.width, ds.height, *bounds, resolution=resolution,
                                           **rpc)
    except (CPLE_BaseError, RasterioError) as exc:
        what = "RPCs" if rpc else f"CRS {crs_string(src_crs)} and bounds"
        raise InputError(f"{ds.name}: cannot be warped to {crs_string(dst_crs)} (are its {what} right?): "
                         f"{gdal_message(exc)}") from None


def _check_scale(ds: Any, src_crs: CRS | None, dst_crs: CRS, resolution: float, natural: float,
                 size: tuple[int, int]) -> None:
    """Refuse an output grid far finer (and large) or far coarser than the input's ``natural`` resolution (the
    input's pixel size in ``dst_crs`` units)."""
    finer = natural / resolution
    if size[0] * size[1] > MAX_QUIET_PIXELS and finer > MAX_FINER:
        why = f"{finer:.3g}× finer than the input and over {MAX_QUIET_PIXELS ** 0.5:.0f}² px"
    elif finer < 1 / MAX_COARSER:
        why = f"{1 / finer:.3g}× coarser than the input"
    else:
        return
    at = f"at {ds.res[0]:.3g} {_units(src_crs)} ({crs_string(src_crs)})" if src_crs is not None else ""
    if src_crs != dst_crs:
        at = f"{at}{', ' if at else 'at '}≈ {natural:.3g} {_units(dst_crs)} in {crs_string(dst_crs)}"
    raise InputError(f"--resolution {resolution:g}: the output would be {size[0]} x {size[1]} px from {ds.name}'s "
                     f"{ds.width} x {ds.height} px {at}: {why}; give --resolution in {_units(dst_crs)} "
                     f"of {crs_string(dst_crs)}")


def _units(crs: CRS) -> str:
    """The CRS's axis unit, e.g. ``metre`` or ``degree``."""
    try:
        return str(crs.units_factor[0])
    except CRSError:
        return "CRS units"
