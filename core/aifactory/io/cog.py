"""Streamed Cloud-Optimized GeoTIFF writer.

Windows are written as they are produced into a tiled temporary GeoTIFF; closing the writer converts it
with GDAL's COG driver (overviews, block layout) into a second temporary file and renames that into
place. Memory is bounded by the window being written plus GDAL's block cache, never by the raster; a
writer that fails or is interrupted removes its temporary files and leaves no partial output. Overviews
are averages, as for a tiled GeoTIFF (the COG driver's cubic default took 2.5× longer to convert).

The temporary file is only read back once, so it is compressed for speed (ZSTD level 1: streamed writes
of prediction scores 3× cheaper than at GDAL's default level 9); the final file gets ``level`` (GDAL's
default when None). The conversion runs after the last window, when the writer has the CPUs to itself,
so it compresses on all of them; streamed writes of a writer with a mask stay in one thread (see
:class:`COGWriter`).

A writer fed whole rows in order (:meth:`COGWriter.write_rows`, prediction's scores) converts nothing: it builds
its overviews as the rows come (:mod:`aifactory.io.overviews`), writes every level tiled and compressed as the
COG will be, and closing assembles the COG from their compressed tiles (:mod:`aifactory.io.cog_assembly`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from aifactory.io import GDAL_CACHE_MB
from aifactory.io.atomic import AtomicWriter, remove_path, temporary_sibling
from aifactory.io.cog_assembly import assemble_cog
from aifactory.io.gdal_copy import copy_raster
from aifactory.io.output_paths import file_output
from aifactory.io.overviews import BlockRowBuffer, RowPyramid, rows_writer
from aifactory.progress import reporter

#: Block height of the temporary file a COG is streamed into (the COG gets ``blocksize`` blocks): windows of
#: 128 rows fill its blocks in one or two writes, so few partly written blocks wait in the GDAL cache, where the
#: blocks read meanwhile (prediction's input) would evict them and have them recompressed.
STREAM_BLOCK_ROWS = 128
#: GDAL's creation option for the compression level of each codec a streamed-overview COG may use (its tiles are
#: compressed once, at the final level)
LEVEL_OPTIONS = {"ZSTD": "zstd_level", "DEFLATE": "zlevel"}


def gdal_env(**options: Any) -> rasterio.Env:
    """A rasterio environment with a bounded block cache and all-CPU compression threads."""
    # rasterio hands an integer GDAL_CACHEMAX to GDAL in bytes
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB << 20, GDAL_NUM_THREADS="ALL_CPUS", **options)


class COGWriter(AtomicWriter):
    """Write a raster window by window, finalize it as a COG (or tiled GeoTIFF) atomically.

    Use as a context manager: the output appears at ``path`` only if the block exits without error.
    """

    def __init__(self, path: str | os.PathLike[str], width: int, height: int, count: int, dtype: str,
                 crs: Any = None, transform: Affine | None = None, nodata: float | None = None,
                 blocksize: int = 512, compress: str = "ZSTD", cog: bool = True,
                 band_descriptions: list[str] | None = None, predictor: int | None = None,
                 progress_task: str | None = None, mask: bool = False, level: int | None = None,
                 stream_overviews: bool = False) -> None:
        """``predictor``: GDAL's TIFF predictor for the temporary and the final file (default: 2 for integers,
        3 for floats; 1 for none, which suits smooth 8-bit scores: smaller and faster). ``stream_overviews``
        (8-bit COGs with a mask, written with :meth:`write_rows` only): overviews built while streaming and
        the COG assembled from compressed tiles, ZSTD or DEFLATE."""
        if stream_overviews and not (cog and mask and np.dtype(dtype) == np.uint8):
            raise ValueError("streamed overviews need an 8-bit COG with a mask")
        if stream_overviews and compress.upper() not in LEVEL_OPTIONS:
            raise ValueError(f"streamed overviews compress with {' or '.join(LEVEL_OPTIONS)}, not {compress}")
        self.path = file_output(path)
        # With an internal mask, GDAL 3.10's multithreaded compression raced between a band's and its mask's
        # jobs during streamed writes ("Bad value 1 for ExtraSamples"): such a writer streams in one thread.
        # The final conversion reads a closed file and was verified exact with all CPUs (65 conversions).
        self._threads = "1" if mask else "ALL_CPUS"
        self.cog = cog
        self.compress = compress
        self.level = level
        self.blocksize = blocksize
        self.progress_task = progress_task
        self._tmp = temporary_sibling(self.path, "stream")
        if predictor is None:
            predictor = 3 if np.dtype(dtype).kind == "f" else 2
        self._profile = {
            "driver": "GTiff", "width": width, "height": height, "count": count, "dtype": dtype,
            "crs": crs, "transform": transform or Affine.identity(), "nodata": nodata, "tiled": True,
            "blockxsize": blocksize, "blockysize": blocksize if stream_overviews or not cog
            else min(blocksize, STREAM_BLOCK_ROWS), "compress": compress, "predictor": predictor,
            "BIGTIFF": "IF_SAFER", "interleave": "pixel" if count <= 4 else "band", "num_threads": self._threads,
            # GDAL makes the 4th of 4 bytes an alpha band by default: an NIR band (or a 4th class's scores) then
            # became the dataset's mask, every pixel with 0 in it invalid. Validity is carried by nodata or a mask.
            "alpha": "UNSPECIFIED",
        }
        if stream_overviews:  # these tiles are the COG's
            if level is not None:
                self._profile[LEVEL_OPTIONS[compress.upper()]] = level
        elif compress.upper() == "ZSTD" and cog:
            self._profile["zstd_level"] = 1  # read back once by the conversion: speed over size
        self._closed = True  # until the temporary is open: abort() then removes only the file
        self._next_row = 0
        self._pyramid: RowPyramid | None = None
        self._rows: BlockRowBuffer | None = None  # rows waiting for whole blocks (streamed overviews only)
        self._env: rasterio.Env | None = gdal_env()
        self._env.__enter__()
        self._owner = threading.get_ident()  # the thread whose rasterio environment self._env is
        try:  # a stop (Ctrl-C, SIGTERM) may land as soon as the temporary exists: it must not outlive this
            with warnings.catch_warnings():  # pixel-space rasters (identity transform, no CRS) are legitimate
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._ds = rasterio.open(self._tmp, "w", **self._profile)
            self._closed = False
            for index, description in enumerate(band_descriptions or [], start=1):
                self._ds.set_band_description(index, description)
            if stream_overviews:
                self._rows = BlockRowBuffer(count, width, height, blocksize, rows_writer(self._ds, count))
                # the levels have masks too: compressed in one thread like the image (see above)
                level_profile = {key: value for key, value in self._profile.items()
                                 if key not in ("nodata", "interleave")}
                self._pyramid = RowPyramid(self._tmp, width, height, count, blocksize, self._profile["transform"],
                                           level_profile)
        except BaseException:
            self.abort()
            raise

    @property
    def width(self) -> int:
        return int(self._profile["width"])

    @property
    def height(self) -> int:
        return int(self._profile["height"])

    def write(self, array: np.ndarray, window: Window) -> None:
        """Write a (bands, h, w) or (h, w) array at ``window`` (clipped to the raster)."""
        if array.ndim == 2:
            array = array[np.newaxis]
        self._ds.write(array, window=window)

    def write_mask(self, mask: np.ndarray, window: Window) -> None:
        """Write an internal validity mask (True = valid) for ``window`` (create the writer with ``mask=True``)."""
        self._ds.write_mask(np.where(mask, np.uint8(255), np.uint8(0)), window=window)  # uint8, no int64 temporary

    def write_rows(self, row0: int, values: np.ndarray, mask: np.ndarray) -> None:
        """Rows from ``row0``, full width, top to bottom: (bands, h, width) ``values`` and their (h, width) mask."""
        if values.shape[2] != self.width or row0 != self._next_row:
            raise ValueError(f"write_rows: expected rows from {self._next_row} across {self.width} columns, "
                             f"got rows from {row0} across {values.shape[2]}")
        all_valid = mask.all()
        if self._rows is None:
            rows_writer(self._ds, values.shape[0])(row0, values, None if all_valid else mask)
        else:
            self._rows.add(values, None if all_valid else mask)
        self._next_row += values.shape[1]
        if self._pyramid is not None:
            self._pyramid.add(values, None if all_valid else mask)

    def update_tags(self, **tags: str) -> None:
        self._ds.update_tags(**tags)

    def close(self) -> Path:
        """Finalize: convert to COG (or keep tiled GeoTIFF with overviews) and rename into place."""
        if self._closed:
            self._leave_env()
            return self.path
        self._closed = True
        try:
            if self._rows is not None:
                self._rows.flush()
        finally:
            self._ds.close()
        final_tmp = temporary_sibling(self.path, "final")
        # rasterio keeps one environment per thread: another thread finishing the file gets the same settings
        here = contextlib.nullcontext() if threading.get_ident() == self._owner else gdal_env()
        try:
            with here:
                self._finish(final_tmp)
            os.replace(final_tmp, self.path)
        except BaseException:
            remove_path(final_tmp)
            raise
        finally:
            self._remove_temporaries()
            self._leave_env()
        if self.progress_task:
            reporter().artifact("raster", self.path)
        return self.path

    def _finish(self, final_tmp: Path) -> None:
        """The closed temporary file made into ``final_tmp``: a COG, or a tiled GeoTIFF with its overviews."""
        if self._pyramid is not None and self._next_row == self.height:
            self._pyramid.finish()
            assemble_cog(self._tmp, self._pyramid.paths, final_tmp)
        elif self.cog:
            level = {} if self.level is None else {"LEVEL": self.level}
            copy_raster(self._tmp, final_tmp, "COG", {
                "COMPRESS": self.compress, "BLOCKSIZE": self.blocksize, "OVERVIEWS": "AUTO", "BIGTIFF": "IF_SAFER",
                "NUM_THREADS": "ALL_CPUS", "OVERVIEW_RESAMPLING": "AVERAGE",
                "PREDICTOR": "NO" if self._profile["predictor"] == 1 else "YES", **level})
        else:
            with rasterio.open(self._tmp, "r+") as ds:
                factors = overview_factors(ds.width, ds.height, self.blocksize)
                if factors:
                    ds.build_overviews(factors, rasterio.enums.Resampling.average)
            os.replace(self._tmp, final_tmp)

    def abort(self) -> None:
        """Drop everything written so far (a file another thread already finished stays: it is complete)."""
        if not self._closed:
            self._closed = True
            self._ds.close()
        self._leave_env()
        self._remove_temporaries()

    def _leave_env(self) -> None:
        """Exit the environment entered when the writer was made, in the thread that made it (once)."""
        if self._env is not None and threading.get_ident() == self._owner:
            self._env.__exit__(None, None, None)
            self._env = None

    def _remove_temporaries(self) -> None:
        if self._pyramid is not None:
            self._pyramid.remove()
        remove_path(self._tmp)


def overview_factors(width: int, height: int, blocksize: int) -> list[int]:
    """Powers of two until the smallest overview fits in one block."""
    factors = []
    factor = 2
    while max(width, height) / factor >= blocksize / 2 and factor <= 4096:
        factors.append(factor)
        factor *= 2
    return factors
