"""Average overviews built while rows are streamed, so that closing a COG does not compute them.

GDAL's COG driver computes overviews after the last row, reading the whole raster back; for a prediction's
scores that was three quarters of closing the file, after the model had finished and with nothing to
overlap it (scores of 20000 × 2304, two classes and a mask: 0.94 s to convert, 0.24 s without overviews).
Rows that arrive top to bottom across the full width can be reduced as they come instead: every level
keeps at most one pending row and one row of blocks waiting to be complete (:class:`BlockRowBuffer`), so
memory is a strip. Each level goes to its own tiled GeoTIFF with its own mask, tiled and compressed as the COG
will be, and :func:`aifactory.io.cog_assembly.assemble_cog` copies their tiles into the COG as they are.

Why our own code: GDAL builds overviews only from a finished raster and rasterio cannot write into
overview levels. The arithmetic is GDAL's ``AVERAGE`` for 8-bit bands with a mask: each level from the one
below, the mean of the valid pixels of each 2 × 2 block rounded half up, 0 and masked where none is valid
(equal to the COG driver's own overviews, values and masks, to the bit wherever a level halves an even size:
the tests compare them). A level has ``ceil(size / 2)`` pixels (as ``gdaladdo`` makes them), the last row or
column of an odd size averaging the pixels it covers (the COG driver rounds such sizes down and spreads the
remainder over its averaging windows instead). Levels are added until the largest side fits in one block,
as it does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from aifactory.io.atomic import remove_path


def overview_sizes(width: int, height: int, blocksize: int) -> list[tuple[int, int]]:
    """(width, height) of each level, halving (rounded up) until the largest side fits in a block."""
    sizes = []
    while max(width, height) > blocksize:
        width, height = (width + 1) // 2, (height + 1) // 2
        sizes.append((width, height))
    return sizes


def halve(values: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """One level down: (bands, h, w) uint8 ``values`` and their (h, w) ``mask`` (None: all valid) to
    (bands, ceil(h / 2), ceil(w / 2)) and its mask (see the module docstring for the arithmetic)."""
    for axis in (1, 2):  # a last row or column stands for itself: doubled, its average is its own
        if values.shape[axis] % 2:
            values = np.concatenate([values, values.take([-1], axis=axis)], axis=axis)
            mask = None if mask is None else np.concatenate([mask, mask.take([-1], axis=axis - 1)], axis=axis - 1)
    if mask is not None and mask.all():
        mask = None
    if mask is not None:
        values = values * mask  # masked pixels count for nothing
    rows = values[:, 0::2].astype("uint16")
    rows += values[:, 1::2]
    sums = rows[:, :, 0::2] + rows[:, :, 1::2]
    if mask is None:  # four valid pixels everywhere: (sum + 2) // 4
        sums += 2
        sums >>= 2
        return sums.astype("uint8"), None
    count = mask[0::2].astype("uint8") + mask[1::2]
    count = count[:, 0::2] + count[:, 1::2]
    sums += count >> 1
    sums //= np.maximum(count, 1)
    return sums.astype("uint8"), count > 0


def _join(first: np.ndarray | None, second: np.ndarray | None, rows: tuple[int, int], width: int) -> np.ndarray | None:
    """Two masks stacked (None: all valid, and stays None when both are)."""
    if first is None and second is None:
        return None
    return np.concatenate([np.ones((rows[0], width), dtype=bool) if first is None else first,
                           np.ones((rows[1], width), dtype=bool) if second is None else second])


RowsWriter = Callable[[int, np.ndarray, np.ndarray | None], None]  # (first row, values, mask or None: all valid)


class BlockRowBuffer:
    """Rows held until they fill a row of blocks (or reach the raster's end), then written together.

    GDAL compresses a block when it leaves its block cache; a block written in several pieces while other
    blocks pass through the cache (prediction reads its input meanwhile) left it half written, to be read back,
    decoded and compressed again with its next rows (20000 × 2304 predict, alternated: 13.5 against 14.0 s).
    Memory: one row of blocks, a byte a band and pixel, one more for the mask once a pixel is invalid.
    """

    def __init__(self, bands: int, width: int, height: int, block_rows: int, write: RowsWriter) -> None:
        self.height, self._write = height, write
        self._values = np.empty((bands, min(block_rows, height), width), dtype="uint8")
        self._mask: np.ndarray | None = None  # made at the first invalid pixel: none where all are valid
        self._top = self._filled = 0

    def add(self, values: np.ndarray, mask: np.ndarray | None) -> None:
        """The next rows: (bands, h, width) ``values`` and their (h, width) mask (None: all valid)."""
        done = 0
        while done < values.shape[1]:
            take = min(self._values.shape[1] - self._filled, values.shape[1] - done)
            rows = np.s_[self._filled:self._filled + take]
            self._values[:, rows] = values[:, done:done + take]
            if mask is not None and self._mask is None:
                self._mask = np.ones(self._values.shape[1:], dtype=bool)
            if self._mask is not None:
                self._mask[rows] = True if mask is None else mask[done:done + take]
            self._filled += take
            done += take
            if self._filled == self._values.shape[1] or self._top + self._filled == self.height:
                self.flush()

    def flush(self) -> None:
        """Write the rows held (a last, partial row of blocks)."""
        if self._filled:
            mask = None if self._mask is None else self._mask[:self._filled]
            self._write(self._top, self._values[:, :self._filled], None if mask is None or mask.all() else mask)
            self._top += self._filled
            self._filled = 0


@dataclass
class _Level:
    """One overview level: its file, the rows written to it, and a row of the level above waiting for a pair."""

    path: Path
    dataset: Any  # an open rasterio dataset in write mode
    rows: BlockRowBuffer
    pending: tuple[np.ndarray, np.ndarray | None] | None = None

    def reduce(self, values: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None] | None:
        """This level's rows from the next rows of the level above (None: not a whole pair yet)."""
        if self.pending is not None:
            held, held_mask = self.pending
            mask = _join(held_mask, mask, (held.shape[1], values.shape[1]), values.shape[2])
            values = np.concatenate([held, values], axis=1)
            self.pending = None
        even = values.shape[1] // 2 * 2
        if even < values.shape[1]:
            self.pending = values[:, even:].copy(), None if mask is None else mask[even:].copy()
        if not even:
            return None
        return halve(values[:, :even], None if mask is None else mask[:even])

    def last_row(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The last row of an odd height, on its own (None when the height was even)."""
        if self.pending is None:
            return None
        last, self.pending = self.pending, None
        return halve(*last)


class RowPyramid:
    """Overview levels of a raster whose rows are given top to bottom, full width (see the module docstring).

    ``prefix``: where the level files go (``{prefix}.ovr{factor}.tif``); ``profile``: the GeoTIFF creation
    options of the levels (size, transform, band count and type are set here; tiled in ``blocksize`` squares).
    """

    def __init__(self, prefix: Path, width: int, height: int, bands: int, blocksize: int, transform: Affine,
                 profile: dict[str, Any]) -> None:
        self.bands = bands
        self.levels: list[_Level] = []
        try:
            for index, (level_width, level_height) in enumerate(overview_sizes(width, height, blocksize), start=1):
                path = prefix.with_name(f"{prefix.name}.ovr{2 ** index}.tif")
                scale = Affine.scale(width / level_width, height / level_height)
                dataset = rasterio.open(path, "w", **{**profile, "width": level_width, "height": level_height,
                                                      "count": bands, "dtype": "uint8", "tiled": True,
                                                      "blockxsize": blocksize, "blockysize": blocksize,
                                                      "transform": transform * scale})
                writer = rows_writer(dataset, bands)
                self.levels.append(_Level(path, dataset, BlockRowBuffer(bands, level_width, level_height,
                                                                        blocksize, writer)))
        except BaseException:
            self.remove()
            raise

    def add(self, values: np.ndarray, mask: np.ndarray | None) -> None:
        """The next rows: (bands, h, width) uint8 ``values`` and their (h, width) mask (None: all valid)."""
        self._push(0, values, mask)

    def finish(self) -> None:
        """Flush the rows left unpaired at the bottom of each level, then close the level files."""
        for index, level in enumerate(self.levels):
            last = level.last_row()
            if last is not None:
                level.rows.add(*last)
                self._push(index + 1, *last)
        for level in self.levels:
            level.rows.flush()
            level.dataset.close()

    @property
    def paths(self) -> list[Path]:
        """The level files, largest first."""
        return [level.path for level in self.levels]

    def remove(self) -> None:
        """Close and delete the level files."""
        for level in self.levels:
            if not level.dataset.closed:
                level.dataset.close()
            remove_path(level.path)

    def _push(self, start: int, values: np.ndarray, mask: np.ndarray | None) -> None:
        for level in self.levels[start:]:
            produced = level.reduce(values, mask)
            if produced is None:
                return
            level.rows.add(*produced)
            values, mask = produced


def rows_writer(dataset: Any, bands: int) -> RowsWriter:
    """Writes rows and their mask (None: all valid) into an open rasterio dataset, full width."""
    def write(row0: int, values: np.ndarray, mask: np.ndarray | None) -> None:
        where = Window(0, row0, values.shape[2], values.shape[1])
        dataset.write(values, indexes=list(range(1, bands + 1)), window=where)
        valid = np.full(values.shape[1:], 255, "uint8") if mask is None else np.where(mask, np.uint8(255), np.uint8(0))
        dataset.write_mask(valid, window=where)
    return write
