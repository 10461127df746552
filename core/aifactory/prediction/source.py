"""The raster side of prediction: input checks against the model cards and the batch reader.

GSD policy (:func:`resample_factor`): a raster within 5 % of the model's GSD is used as is; within a
factor of 2 either way it is resampled on the fly through a GDAL warped VRT (bilinear) to the model's
GSD, with a warning (the scores raster is then on that grid); further apart it is refused, because a
model seeing objects at a quarter of their trained size does not predict anything meaningful.
Rasters without georeferencing have no GSD and are used as they are.

The reader runs in a thread (GDAL releases the GIL while decoding) and feeds batches through a short
queue, so reading overlaps with the model. Each batch is one read of the union of its tiles, through a
:class:`~aifactory.prediction.blockrows.BlockRowReader` that decodes each block once; tiles with
no valid pixel (nodata, per-dataset mask or alpha) never reach the model.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
from pyproj import CRS, Geod
from rasterio.enums import MaskFlags, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from aifactory.errors import InputError
from aifactory.io.raster import RasterInfo, differs_from_nodata
from aifactory.models.card import ModelCard
from aifactory.prediction.blockrows import BlockRowReader
from aifactory.prediction.geofence import Geofence
from aifactory.prediction.tiling import Tile, TileGrid, batch_groups
from aifactory.prediction.tiling import read_window as union_window
from aifactory.progress import reporter

GSD_TOLERANCE = 0.05
MAX_RESAMPLE_FACTOR = 2.0


def raster_gsd_m(info: RasterInfo) -> float | None:
    """Ground sample distance in metres (geographic CRSs measured at the raster's centre), or None."""
    if not info.georeferenced or info.crs is None:
        return None
    crs = CRS.from_user_input(info.crs)
    if crs.is_geographic:
        left, bottom, right, top = info.bounds
        lon, lat = (left + right) / 2, (bottom + top) / 2
        geod = Geod(ellps="WGS84")
        dx = geod.inv(lon, lat, lon + info.res[0], lat)[2]
        dy = geod.inv(lon, lat, lon, lat + info.res[1])[2]
        return float(math.sqrt(dx * dy))
    unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    return float(math.sqrt(info.res[0] * info.res[1]) * unit)


def resample_factor(info: RasterInfo, card: ModelCard) -> float:
    """Model GSD / raster GSD: 1.0 to use the raster as is (see the module docstring for the policy)."""
    raster_gsd = raster_gsd_m(info)
    if card.gsd is None or raster_gsd is None:
        return 1.0
    factor = card.gsd / raster_gsd
    if abs(factor - 1.0) <= GSD_TOLERANCE:
        return 1.0
    if 1 / MAX_RESAMPLE_FACTOR <= factor <= MAX_RESAMPLE_FACTOR:
        reporter().warning(f"{info.path}: GSD {raster_gsd:.3g} m differs from the model's {card.gsd:.3g} m; "
                           f"resampling on the fly by {factor:.3g}")
        return factor
    raise InputError(f"{info.path}: GSD {raster_gsd:.3g} m is more than {MAX_RESAMPLE_FACTOR:g}x away from the "
                     f"model's {card.gsd:.3g} m; resample the raster first (aifactory preprocess)")


def check_bands(info: RasterInfo, card: ModelCard, run: str) -> None:
    """A raster must have every band the model reads."""
    if not card.bands:
        raise InputError(f"{run}: model card lists no input bands")
    if max(card.bands) > info.count or min(card.bands) < 1:
        raise InputError(f"{info.path}: has {info.count} band(s) but model {run} reads bands "
                         f"{', '.join(map(str, card.bands))}")


@contextlib.contextmanager
def open_source(path: str, factor: float,
                decode_threads: str = "ALL_CPUS") -> Iterator[rasterio.io.DatasetReader | WarpedVRT]:
    """The raster, or a warped VRT resampling it by ``factor`` (output GSD = raster GSD × factor).

    ``decode_threads``: GDAL's threads for decoding its blocks (``GDAL_NUM_THREADS``, which GDAL reads when
    the file opens). ``"1"`` when the model runs on the CPU: the cores are the model's, and spreading the
    decoding over them cost CPU time (thread hand-offs) without saving any: reading the 20000 × 2304 crop
    as predict does took 0.57 s of CPU per 100 tiles with all CPUs and 0.54 with one (2 CPUs).
    """
    from aifactory.io.raster import open_raster

    with contextlib.ExitStack() as stack:
        with rasterio.Env(GDAL_NUM_THREADS=decode_threads):
            ds = stack.enter_context(open_raster(path))
        if factor == 1.0:
            yield ds
            return
        width = max(1, round(ds.width / factor))
        height = max(1, round(ds.height / factor))
        transform = ds.transform * ds.transform.scale(ds.width / width, ds.height / height)
        with WarpedVRT(ds, crs=ds.crs, transform=transform, width=width, height=height,
                       resampling=Resampling.bilinear, src_nodata=ds.nodata, nodata=ds.nodata) as vrt:
            yield vrt


class BatchBuffers:
    """Batch arrays that the consumer gives back (:meth:`Batch.release`) for the reader to fill again.

    Under the lean heap policy (:mod:`aifactory.heap`) a fresh batch of 8 tiles (32 MB) is a fresh mapping
    whose pages the kernel zeroes on first touch: filling one cost 1.9 ms per tile (1.5 of it in the
    kernel), filling a reused one 0.4 ms. A batch never given back is simply not reused.
    """

    def __init__(self, keep: int = 3) -> None:
        self._free: list[np.ndarray] = []
        self._keep = keep
        self._lock = threading.Lock()

    def take(self, count: int, size: int, bands: int) -> np.ndarray:
        """An (at least ``count``, size, size, bands) float32 array, reused when one was given back."""
        with self._lock:
            for index, array in enumerate(self._free):
                if array.shape[0] >= count and array.shape[1:] == (size, size, bands):
                    return self._free.pop(index)
        return np.empty((count, size, size, bands), dtype="float32")

    def give(self, array: np.ndarray) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(array)


@dataclass
class Batch:
    """Tiles of one tile row with their pixels (N, bands, T, T) float32 and valid masks (N, T, T).

    ``data`` is laid out channels-last (a view of an (N, T, T, bands) buffer), the layout the models run in:
    the model source normalises it where it lies instead of transposing it (see :func:`_batch`). Call
    :meth:`release` once ``data`` is no longer needed: its buffer then goes to the next batch.
    """

    tiles: list[Tile]
    data: np.ndarray
    valid: np.ndarray
    buffer: np.ndarray | None = None
    pool: BatchBuffers | None = None

    def release(self) -> None:
        if self.pool is not None and self.buffer is not None:
            self.pool.give(self.buffer)
        self.pool = self.buffer = None


@dataclass
class RowDone:
    """Marks the end of a tile row (after its last batch)."""

    row: int


@dataclass
class ReadStats:
    tiles_total: int = 0
    tiles_outside: int = 0
    tiles_nodata: int = 0
    tiles_predicted: int = 0

    def add(self, other: ReadStats) -> None:
        """Count ``other``'s tiles too (the parts of a fanned-out prediction)."""
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)


def valid_mask(ds: rasterio.io.DatasetReader | WarpedVRT, data: np.ndarray, window: Window) -> np.ndarray:
    """(h, w) valid pixels of ``data`` read at ``window`` (inside the raster): nodata, masks, alpha honoured.

    With a nodata value a pixel is valid when any band read differs from it (GDAL's per-dataset rule,
    applied to the bands the models use); otherwise the per-dataset mask or alpha band decides.
    """
    flags = ds.mask_flag_enums[0] if ds.count else [MaskFlags.all_valid]
    if ds.nodata is not None and MaskFlags.nodata in flags:
        return differs_from_nodata(data, ds.nodata)
    if MaskFlags.per_dataset in flags or MaskFlags.alpha in flags:
        return ds.dataset_mask(window=window) > 0
    return np.ones(data.shape[1:], dtype=bool)


def iter_batches(ds: rasterio.io.DatasetReader | WarpedVRT, grid: TileGrid, bands: Sequence[int],
                 fence: Geofence, batch_size: int, stats: ReadStats,
                 rows: range | None = None, keep: int = 3) -> Iterator[Batch | RowDone]:
    """Batches of tiles in grid order, each tile row closed by a :class:`RowDone`; ``rows``: the tile rows
    to read (all by default). Each read goes into one buffer kept for the next, each batch into an array
    of ``buffers`` (see :class:`BatchBuffers`; ``keep``: how many batches are in use at once)."""
    size = grid.tile
    buffers = BatchBuffers(keep)
    reader = BlockRowReader(ds, bands)
    for index in rows if rows is not None else range(len(grid.row_offsets)):
        row = grid.row(index)
        stats.tiles_total += len(row)
        inside = [tile for tile in row if fence.touches(tile)]
        stats.tiles_outside += len(row) - len(inside)
        reader.start_row(grid, index)
        for group in batch_groups(inside, batch_size):
            window = union_window(group, ds.width, ds.height)
            raw = reader.read(window)
            valid = valid_mask(ds, raw, window)
            places = [(tile, tile.row_off - int(window.row_off), tile.col_off - int(window.col_off))
                      for tile in group]
            places = [(tile, r, c) for tile, r, c in places if valid[r:r + size, c:c + size].any()]
            stats.tiles_nodata += len(group) - len(places)
            batch = _batch(raw, valid, places, size, buffers) if places else None
            del raw, valid  # not held while the generator waits for room in the queue
            if batch is not None:
                stats.tiles_predicted += len(places)
                yield batch
                del batch
        yield RowDone(row[0].row)


def _batch(raw: np.ndarray, valid: np.ndarray, places: list[tuple[Tile, int, int]], size: int,
           buffers: BatchBuffers) -> Batch:
    """The tiles at (row, col) ``places`` of a pixel-interleaved union read, converted to float32 in one pass
    into a channels-last batch, zero-padded where a tile reaches past a raster smaller than a tile.

    Read pixel-interleaved, copied as such and normalised in place by the model source, 8 tiles of 4 bands
    cost 2.5 ms per tile here (1.8 + 0.7; 1.0 with a reused batch array); a band-sequential batch that torch
    transposed into channels-last while normalising cost 4.7 ms per tile. The copy converts to float32 only:
    normalising here as well took a core from the model when it ran as one batch over both CPUs (20000 × 2304
    crop: 25.5 against 24.9 s), and again made no difference with two passes (18.08 against 18.23 s), where the
    model source's row-wise normalisation costs 0.2 ms per tile (:meth:`aifactory.prediction.runtime.Runner._inputs`).
    """
    pixels = raw.transpose(1, 2, 0)
    buffer = buffers.take(len(places), size, raw.shape[0])
    data = buffer[:len(places)]
    masks = np.zeros((len(places), size, size), dtype=bool)
    for index, (_, r, c) in enumerate(places):
        piece = pixels[r:r + size, c:c + size]
        if piece.shape[:2] != (size, size):
            data[index] = 0
        data[index, :piece.shape[0], :piece.shape[1]] = piece
        masks[index, :piece.shape[0], :piece.shape[1]] = valid[r:r + size, c:c + size]
    return Batch([tile for tile, _, _ in places], data.transpose(0, 3, 1, 2), masks, buffer, buffers)
