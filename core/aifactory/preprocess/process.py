"""Streamed pre-processing of one raster into a COG.

The output grid is decided first (the source grid, or a warped grid for a new CRS/GSD or for RPC
orthorectification); then the output is produced window by window: read (for a warp, GDAL's warper
fills the output window from just the source pixels it needs, through ``rasterio.warp.reproject`` on the
dataset's bands), select/reorder bands, stretch to 8 bits, write with :class:`~aifactory.io.cog.COGWriter`.
Memory is one window, whatever the raster size. (``WarpedVRT`` would do the same for plain reprojection
but ignores RPC transformer options, so one warp path serves both.)

Nodata is carried through: pixels that are nodata in the source, or fall outside it after warping, are
nodata in the output (0 for 8-bit output, whose valid values are 1..255; the source's nodata otherwise).
The warper's alpha band tells valid pixels apart. A band whose own nodata differs from the others' (a VRT's)
has its nodata pixels written as the output's nodata, in that band only: a GeoTIFF holds one nodata value.
A source without a nodata value has no value to spare: every value, 0 included, is valid, so validity (what a
warp leaves empty, the source's own mask or alpha band) goes in an internal mask rather than in a nodata value
(nodata 0 made a valid 0 nodata, and GDAL 3.10.1's warper moved valid 0s to 1 to keep them apart).

RPC orthorectification uses GDAL's RPC transformer with a DEM (``RPC_DEM``) or a constant height above
the ellipsoid (``RPC_HEIGHT``); a raster without RPCs is refused, and so is bad terrain (:mod:`.ortho`).
A warped output left without a single valid pixel is refused rather than published: GDAL's transformers
fail quietly, pixel by pixel, so an empty image is the only sign that the warp went wrong.

Everything a user can get wrong is checked before the first window (:mod:`.warp` for the output grid): a
truncated source, an output that would replace one of the inputs; a block that fails to decode midway is one
line as well, and the writer leaves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from aifactory.errors import InputError
from aifactory.io.cog import COGWriter
from aifactory.io.output_paths import refuse_inputs_as_output
from aifactory.io.raster import check_readable, open_raster, read_valid_mask, read_window
from aifactory.preprocess.ortho import WGS84, check_dem_cover, terrain_options
from aifactory.preprocess.stretch import Stretch, compute_stretch, load_stretch, save_stretch, sidecar_path
from aifactory.preprocess.warp import Warp, holds, parse_crs, plan_warp
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


def _warp(ds: Any, options: PreprocessOptions) -> Warp | None:
    """The warp asked for, or None when the source grid is kept."""
    if not options.ortho and options.dst_crs is None and options.resolution is None:
        return None
    if options.ortho:
        rpc_options = terrain_options(ds, options.dem, options.height)
        dst_crs = parse_crs(options.dst_crs, "--dst-crs") if options.dst_crs is not None else WGS84
        warp = plan_warp(ds, dst_crs, options.resolution, options.resampling, rpc_options)
        if options.dem is not None:
            check_dem_cover(options.dem, warp.crs, warp.bounds)
        return warp
    if ds.crs is None:
        raise InputError(f"{ds.name}: raster has no CRS; it cannot be reprojected or resampled")
    dst_crs = parse_crs(options.dst_crs, "--dst-crs") if options.dst_crs is not None else ds.crs
    return plan_warp(ds, dst_crs, options.resolution, options.resampling)


def _bands(ds: Any, options: PreprocessOptions, reused: Stretch | None) -> list[int]:
    """The 1-based source bands, in output order: ``--bands``, else those of a reused stretch, else all.

    A reused stretch holds the statistics of its own source bands, in its order: applied to other bands (or in
    another order) it writes values that the model trained on that sidecar never saw, so that is refused."""
    bands = options.bands or (list(reused.bands) if reused is not None else list(range(1, ds.count + 1)))
    bad = [b for b in bands if not 1 <= b <= ds.count]
    if bad:
        flag = "--bands" if options.bands else f"--stretch {options.stretch}"
        raise InputError(f"{flag}: {ds.name} has bands 1..{ds.count}, got {bad[0]}")
    if reused is not None and bands != list(reused.bands):
        raise InputError(f"--stretch {options.stretch}: statistics of bands {','.join(map(str, reused.bands))}, "
                         f"--bands selects {','.join(map(str, bands))}")
    return bands


def _windows(width: int, height: int) -> list[Window]:
    return [Window(col, row, min(WINDOW, width - col), min(WINDOW, height - row))
            for row in range(0, height, WINDOW) for col in range(0, width, WINDOW)]


def preprocess_raster(source: str | Path, output: str | Path, options: PreprocessOptions) -> dict[str, Any]:
    """Write ``output`` (COG) from ``source``; returns a summary (size, CRS, stretch sidecar)."""
    output = Path(output)
    with open_raster(source) as ds:
        check_readable(ds)
        refuse_inputs_as_output(output, {"input raster": source, "--dem": options.dem, "--stretch": options.stretch})
        reused = load_stretch(options.stretch) if options.to_8bit and options.stretch else None
        bands = _bands(ds, options, reused)
        warp = _warp(ds, options)
        stretch: Stretch | None = None
        if options.to_8bit:
            stretch = reused or compute_stretch(ds, bands, options.percentiles)
        nodatas: list[float | None] = [ds.nodatavals[b - 1] for b in bands]
        source_nodata = next((value for value in nodatas if value is not None), None)
        fill = source_nodata if source_nodata is not None else 0
        out_nodata = 0 if stretch is not None else source_nodata
        # no value to spare for nodata: validity goes in a mask when some pixel may be invalid
        mask = out_nodata is None and stretch is None and (warp is not None or _has_mask(ds))
        dtype = "uint8" if stretch is not None else ds.dtypes[bands[0] - 1]
        if warp is not None:
            crs, transform, width, height = warp.crs, warp.transform, warp.width, warp.height
        else:
            crs, transform, width, height = ds.crs, ds.transform, ds.width, ds.height
        descriptions = [ds.descriptions[b - 1] or f"band {b}" for b in bands]
        with COGWriter(output, width, height, len(bands), dtype, crs=crs, transform=transform, nodata=out_nodata,
                       band_descriptions=descriptions, progress_task="preprocess", mask=mask) as writer:
            any_valid = False
            for window in reporter().track(_windows(width, height), task="preprocess", message=Path(source).name):
                if warp is not None:  # every band's nodata pixels now hold ``source_nodata`` (None: ``valid`` says)
                    data, valid = warp.read(ds, bands, window, fill)
                    band_nodata: list[float | None] = [source_nodata] * len(bands)
                else:
                    data, valid = read_window(ds, window, bands), read_valid_mask(ds, window)
                    band_nodata = nodatas
                any_valid = any_valid or bool(valid.any())
                if stretch is not None:
                    data = stretch.apply(data, valid, band_nodata)
                elif out_nodata is not None:
                    _own_nodata_to(data, band_nodata, out_nodata)
                    data[:, ~valid] = out_nodata
                elif warp is not None:  # under the mask: 0 rather than what the warper left there
                    data[:, ~valid] = 0
                writer.write(data, window)
                if mask:
                    writer.write_mask(valid, window)
            if warp is not None and not any_valid:
                raise InputError(_empty_warp_message(source, options))
    summary: dict[str, Any] = {"output": str(output), "width": width, "height": height, "bands": len(bands),
                               "dtype": dtype, "crs": str(crs) if crs else None}
    if stretch is not None:
        summary["stretch"] = str(save_stretch(stretch, sidecar_path(output)))
    return summary


def _has_mask(ds: Any) -> bool:
    """Whether some pixel of ``ds`` may be invalid without a nodata value: a mask or an alpha band."""
    return any(flags != [MaskFlags.all_valid] for flags in ds.mask_flag_enums)


def _own_nodata_to(data: np.ndarray, nodatas: list[float | None], out_nodata: float) -> None:
    """Write ``out_nodata`` where a (bands, h, w) band holds its own, different, nodata value (in place)."""
    for plane, value in zip(data, nodatas, strict=True):
        if value is not None and not holds(np.asarray(value), out_nodata):  # already the output's nodata
            plane[holds(plane, value)] = out_nodata


def _empty_warp_message(source: str | Path, options: PreprocessOptions) -> str:
    """Why a warped output holds no valid pixel, as far as can be told."""
    if options.ortho:
        terrain = (f"are the heights of --dem {options.dem}" if options.dem is not None
                   else f"is --height {options.height:g}")
        return (f"{source}: the orthorectified image holds no valid pixel (is the source all nodata, or {terrain} "
                "wrong?): nothing written")
    return f"{source}: the warped image holds no valid pixel (is the source all nodata?): nothing written"
