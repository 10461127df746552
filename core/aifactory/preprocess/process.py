"""Streamed pre-processing of one raster into a COG.

The output grid is decided first (the source grid, or a warped grid for a new CRS/GSD or for RPC
orthorectification); then the output is produced window by window: read (for a warp, GDAL's warper
fills the output window from just the source pixels it needs, through ``rasterio.warp.reproject`` on the
dataset's bands), select/reorder bands, stretch to 8 bits, write with :class:`~aifactory.io.cog.COGWriter`.
Memory is one window, whatever the raster size. (``WarpedVRT`` would do the same for plain reprojection
but ignores RPC transformer options, so one warp path serves both.)

Nodata is carried through: pixels that are nodata in the source, or fall outside it after warping, are
nodata in the output (0 for 8-bit output, whose valid values are 1..255; the source's nodata otherwise,
or 0 when it has none and warping creates empty areas). The warper's alpha band tells valid pixels apart.

RPC orthorectification uses GDAL's RPC transformer with a DEM (``RPC_DEM``) or a constant height above
the ellipsoid (``RPC_HEIGHT``); a raster without RPCs is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError
from rasterio.warp import calculate_default_transform, reproject
from rasterio.windows import Window

from aifactory.errors import InputError
from aifactory.io.cog import COGWriter
from aifactory.io.raster import check_file, open_raster, read_valid_mask, window_transform
from aifactory.preprocess.stretch import Stretch, compute_stretch, load_stretch, save_stretch, sidecar_path
from aifactory.progress import reporter

WINDOW = 1024


@dataclass
class PreprocessOptions:
    bands: list[int] | None = None
    to_8bit: bool = False
    percentiles: tuple[float, float] = (2.0, 98.0)
    stretch: Path | None = None          # reuse these statistics instead of computing them
    dst_crs: str | None = None
    resolution: float | None = None
    ortho: bool = False
    dem: Path | None = None
    height: float | None = None
    resampling: str = "bilinear"


def _crs(value: str, flag: str) -> CRS:
    try:
        return CRS.from_user_input(value)
    except CRSError as exc:
        raise InputError(f"{flag}: invalid CRS {value!r}: {exc}") from None


@dataclass
class Warp:
    """The output grid of a warp and how to fill one of its windows."""

    crs: CRS
    transform: Affine
    width: int
    height: int
    resampling: Resampling
    options: dict[str, Any] = field(default_factory=dict)  # rpcs and RPC transformer options

    def read(self, ds: Any, bands: list[int], window: Window, nodata: float) -> tuple[np.ndarray, np.ndarray]:
        """Warped (bands, h, w) data and its validity for an output window."""
        out = np.full((len(bands) + 1, int(window.height), int(window.width)), nodata, dtype=ds.dtypes[0])
        reproject(rasterio.band(ds, bands), out, src_nodata=ds.nodata, dst_crs=self.crs,
                  dst_transform=window_transform(self.transform, window), dst_nodata=nodata,
                  dst_alpha=len(bands) + 1, resampling=self.resampling, **self.options)
        return out[:-1], out[-1] > 0


def _warp(ds: Any, options: PreprocessOptions) -> Warp | None:
    """The warp asked for, or None when the source grid is kept."""
    if not (options.ortho or options.dst_crs or options.resolution):
        return None
    resampling = Resampling[options.resampling]
    if options.ortho:
        if not ds.rpcs:
            raise InputError(f"{ds.name}: raster has no RPCs; cannot orthorectify (--ortho)")
        if (options.dem is None) == (options.height is None):
            raise InputError("--ortho needs exactly one of --dem DEM or --height H")
        extras: dict[str, Any] = ({"RPC_DEM": str(check_file(options.dem, "DEM"))} if options.dem is not None
                                  else {"RPC_HEIGHT": float(options.height or 0.0)})
        dst_crs = _crs(options.dst_crs or "EPSG:4326", "--dst-crs")
        transform, width, height = calculate_default_transform(
            CRS.from_epsg(4326), dst_crs, ds.width, ds.height, rpcs=ds.rpcs, resolution=options.resolution,
            **extras)
        return Warp(dst_crs, transform, width, height, resampling, {"rpcs": ds.rpcs, **extras})
    if ds.crs is None:
        raise InputError(f"{ds.name}: raster has no CRS; it cannot be reprojected or resampled")
    dst_crs = _crs(options.dst_crs, "--dst-crs") if options.dst_crs else ds.crs
    transform, width, height = calculate_default_transform(ds.crs, dst_crs, ds.width, ds.height, *ds.bounds,
                                                           resolution=options.resolution)
    return Warp(dst_crs, transform, width, height, resampling)


def _windows(width: int, height: int) -> list[Window]:
    return [Window(col, row, min(WINDOW, width - col), min(WINDOW, height - row))
            for row in range(0, height, WINDOW) for col in range(0, width, WINDOW)]


def preprocess_raster(source: str | Path, output: str | Path, options: PreprocessOptions) -> dict[str, Any]:
    """Write ``output`` (COG) from ``source``; returns a summary (size, CRS, stretch sidecar)."""
    output = Path(output)
    with open_raster(source) as ds:
        bands = options.bands or list(range(1, ds.count + 1))
        bad = [b for b in bands if not 1 <= b <= ds.count]
        if bad:
            raise InputError(f"--bands: {source} has bands 1..{ds.count}, got {bad[0]}")
        warp = _warp(ds, options)
        stretch: Stretch | None = None
        if options.to_8bit:
            stretch = load_stretch(options.stretch) if options.stretch else compute_stretch(
                ds, bands, options.percentiles)
            if len(stretch.bands) != len(bands):
                raise InputError(f"{options.stretch}: statistics for {len(stretch.bands)} bands, "
                                 f"{len(bands)} selected")
        fill = ds.nodata if ds.nodata is not None else 0
        out_nodata = 0 if stretch is not None else (fill if warp is not None else ds.nodata)
        dtype = "uint8" if stretch is not None else ds.dtypes[bands[0] - 1]
        if warp is not None:
            crs, transform, width, height = warp.crs, warp.transform, warp.width, warp.height
        else:
            crs, transform, width, height = ds.crs, ds.transform, ds.width, ds.height
        descriptions = [ds.descriptions[b - 1] or f"band {b}" for b in bands]
        with COGWriter(output, width, height, len(bands), dtype, crs=crs, transform=transform, nodata=out_nodata,
                       band_descriptions=descriptions, progress_task="preprocess") as writer:
            for window in reporter().track(_windows(width, height), task="preprocess", message=Path(source).name):
                if warp is not None:
                    data, valid = warp.read(ds, bands, window, fill)
                else:
                    data, valid = ds.read(bands, window=window), read_valid_mask(ds, window)
                if stretch is not None:
                    data = stretch.apply(data, valid)
                elif out_nodata is not None:
                    data[:, ~valid] = out_nodata
                writer.write(data, window)
    summary: dict[str, Any] = {"output": str(output), "width": width, "height": height, "bands": len(bands),
                               "dtype": dtype, "crs": str(crs) if crs else None}
    if stretch is not None:
        summary["stretch"] = str(save_stretch(stretch, sidecar_path(output)))
    return summary
