"""Tile rows read so that each block of the raster is decoded once, not once per tile row that touches it.

Tile rows overlap and their height is not a multiple of the raster's block height (512-px tiles with a 64-px
overlap step 448 rows down a raster in 512-row blocks), so most block rows are touched by two tile rows, and
GDAL's block cache (64 MB, :data:`aifactory.io.GDAL_CACHE_MB`) cannot keep a block row of a wide raster
until the next tile row comes back for it: every such block was decoded twice. Measured in predict on a
20000 × 2304 crop (2 CPUs): the reader used 4.3 ms of CPU a tile, 3.2 ms with a cache large enough to keep them.

:class:`BlockRowReader` reads each batch's window down to the end of the block row holding its last row and
keeps the rows the next tile row will read again (its overlap and the rows decoded past this tile row) in a
*carry*; the next tile row takes them from there and asks GDAL only for the rows below, which start on a block
boundary. With the carry (20000 × 2304 crop): 3.0–3.3 ms a tile, the same pixels. Memory: the carry holds at
most ``overlap + block height - 1`` rows (575 for 512-px tiles overlapping by 64 in 512-row blocks) of as many
columns as :data:`CARRY_BYTES` allows (48 MB: 10 900 columns of 4 bands of uint16), columns further right being
read as before; one buffer serves both tile rows, each read's rows for the next tile row replacing the current
ones once no later read of this tile row needs them. Why not GDAL's cache made large enough: it would have to
keep two block rows (least recently used first: 128 MB at 16k wide), hold that memory for good and share it with
the writers, whose half-written blocks it keeps too. A raster resampled on the fly (a warped VRT) is read window by
window as asked: GDAL resamples each window on its own, so the same pixel read in another window may differ; so is
a raster in blocks taller than :data:`MAX_BLOCK_ROWS` (a compressed file in one strip), whose block is the raster.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import rasterio
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from aifactory.io.raster import read_window
from aifactory.prediction.tiling import TileGrid

#: Most memory the carry holds: past the columns that fit, a tile row's columns are read as before, their blocks
#: decoded again. A carry across 16k columns of 4 bands of uint16 would hold up to 76 MB (575 rows).
CARRY_BYTES = 48 << 20
#: Tallest blocks read to their end (a tiled raster's are 256–1024 rows; a compressed file in one strip is one block).
MAX_BLOCK_ROWS = 1024


class BlockRowReader:
    """Reads the windows of one tile row after another (top to bottom), keeping rows for the next tile row.

    Call :meth:`start_row` before each tile row's reads and :meth:`read` for each batch window of that row, left
    to right. Columns a tile row did not read (tiles skipped by a geofence) are read in full by the next one.
    """

    def __init__(self, ds: rasterio.io.DatasetReader | WarpedVRT, bands: Sequence[int]) -> None:
        self.ds = ds
        self.bands = list(bands)
        # A warped VRT (a raster resampled on the fly) resamples each window on its own: its pixels depend on the
        # window read, so its windows are read exactly as asked, none carried. So are rasters in blocks taller than
        # MAX_BLOCK_ROWS (a compressed file in one strip): reading to the end of such a block would hold the raster.
        block_rows = int(ds.block_shapes[0][0]) if ds.block_shapes else ds.height
        self.carries = not isinstance(ds, WarpedVRT) and block_rows <= MAX_BLOCK_ROWS
        self.block_rows = block_rows if self.carries else 1
        dtype = ds.dtypes[self.bands[0] - 1]
        self._scratch = np.empty((0, 0, len(self.bands)), dtype=dtype)  # the last read, pixel-interleaved
        # One carry for both tile rows: raster rows [carry_top, carry_bottom) of the columns flagged in _carried
        # for this tile row, rows [next_top, end) of those flagged in _next_carried for the next one. A read's rows
        # for the next tile row are moved in only once no later read of this tile row needs the columns they
        # replace (the next read starts further right): _pending is (column, width, first row in _scratch, rows).
        self._carry = np.empty((0, ds.width, len(self.bands)), dtype=dtype)
        self._carried = np.zeros(ds.width, dtype=bool)
        self._next_carried = np.zeros(ds.width, dtype=bool)
        self._carry_top = self._carry_bottom = self._next_top = self._end = 0
        self._pending: tuple[int, int, int, int] | None = None

    def start_row(self, grid: TileGrid, index: int) -> None:
        """Tile row ``index`` of ``grid`` is read next: rows down to its bottom, the next row's first ones kept."""
        offsets = grid.row_offsets
        bottom = min(offsets[index] + grid.tile, self.ds.height)
        next_top = offsets[index + 1] if index + 1 < len(offsets) else None
        self._keep_pending(self.ds.width)
        self._carried, self._next_carried = self._next_carried, self._carried
        self._next_carried[:] = False
        self._carry_top, self._carry_bottom = self._next_top, self._end
        self._end = min(self.ds.height, -(-bottom // self.block_rows) * self.block_rows)
        self._next_top = self._end if next_top is None or not self.carries else next_top
        rows = self._end - self._next_top
        if self._carry.shape[0] < rows:  # grown once or twice at the top of the raster: the carry moves along
            pixel = len(self.bands) * self._carry.dtype.itemsize
            width = min(self.ds.width, max(CARRY_BYTES, self._carry.nbytes) // (rows * pixel))
            grown = np.empty((rows, width, len(self.bands)), dtype=self._carry.dtype)
            kept = min(width, self._carry.shape[1])
            grown[:self._carry.shape[0], :kept] = self._carry[:, :kept]
            self._carried[kept:] = False
            self._carry = grown

    def read(self, window: Window) -> np.ndarray:
        """(bands, h, w) pixels of ``window`` (inside the raster, within this tile row's rows, starting right of
        the previous window's start), a view of a buffer the next call overwrites."""
        row0, col0 = int(window.row_off), int(window.col_off)
        height, width = int(window.height), int(window.width)
        self._keep_pending(col0)
        cols = slice(col0, col0 + width)
        rows_total = max(self._end - row0, height)
        if self._scratch.shape[0] < rows_total or self._scratch.shape[1] < width:
            self._scratch = np.empty((rows_total, width, len(self.bands)), dtype=self._scratch.dtype)
        scratch = self._scratch
        start = row0  # first row to ask GDAL for
        if self._carry_top <= row0 < self._carry_bottom and self._carried[cols].all():
            start = self._carry_bottom
            scratch[:start - row0, :width] = self._carry[row0 - self._carry_top:start - self._carry_top, cols]
        if start < row0 + rows_total:
            read_window(self.ds, Window(col0, start, width, row0 + rows_total - start), self.bands,
                        pixel_interleaved=True, into=scratch[start - row0:])
        kept = row0 + rows_total - self._next_top
        if kept > 0:
            self._pending = (col0, width, self._next_top - row0, kept)
        return scratch[:height, :width].transpose(2, 0, 1)

    def _keep_pending(self, until: int) -> None:
        """Move the last read's rows for the next tile row into the carry, for its columns left of ``until``."""
        if self._pending is None:
            return
        col0, width, first, rows = self._pending
        stop = min(col0 + width, until, self._carry.shape[1])
        if stop > col0:
            self._carry[:rows, col0:stop] = self._scratch[first:first + rows, :stop - col0]
            self._carried[col0:stop] = False
            self._next_carried[col0:stop] = True
        self._pending = None
