"""The tile grid of a prediction: where tiles go, which tile a pixel belongs to, how tiles are batched.

Tiles are ``tile``×``tile`` windows at most ``stride = tile - overlap`` pixels apart, spread evenly so
that the first and last rows and columns are flush with the raster edges (``tile_offsets(spread=True)``):
every overlap is at least the requested one and they differ by at most a pixel, where a fixed stride
leaves one large overlap at the far edge (up to a whole tile, which the blending would have to carry
across the raster's width, see :class:`~aifactory.prediction.blending.RowBandAccumulator`). Spreading can make
the overlaps much larger than requested (1000 px in tiles of 512 with overlap 64: tiles at 0, 244 and 488, 268 px
of overlap), so the pixels of an overlap are split between its two tiles at its middle, not at half the requested
overlap from a tile's edge: every pixel then *belongs* to the tile that sees it with the most context
(:attr:`TileGrid.row_splits`), the tile whose id a detection gets, whose boxes it keeps and, with the ``crop``
blending window, whose scores it takes. With the requested overlap the two splits are the same. Tiles are
visited row by row: the blending accumulator finalizes the rows above a tile row once that row is done,
so the order is part of the memory contract. Each batch is read with one call covering the union of its
tiles, so GDAL decodes each block of a batch once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from aifactory.io.raster import tile_offsets


@dataclass(frozen=True)
class Tile:
    """One tile: its grid position and its window in raster pixels (may reach past a small raster)."""

    row: int
    col: int
    row_off: int
    col_off: int
    size: int

    @property
    def tile_id(self) -> str:
        return f"r{self.row}c{self.col}"

    @property
    def window(self) -> Window:
        return Window(self.col_off, self.row_off, self.size, self.size)

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """(col0, row0, col1, row1) in pixels."""
        return self.col_off, self.row_off, self.col_off + self.size, self.row_off + self.size


class TileGrid:
    """Tiles of ``tile`` px with ``overlap`` px between neighbours over a ``width``×``height`` raster."""

    def __init__(self, width: int, height: int, tile: int, overlap: int) -> None:
        if not 0 <= overlap < tile:
            raise ValueError(f"overlap must be in [0, {tile}), got {overlap}")
        self.width, self.height, self.tile, self.overlap = width, height, tile, overlap
        self.stride = tile - overlap
        self.row_offsets = tile_offsets(height, tile, self.stride, spread=True)
        self.col_offsets = tile_offsets(width, tile, self.stride, spread=True)
        #: Where ownership passes from each tile row (column) to the next: the middle of their overlap.
        self.row_splits = overlap_middles(self.row_offsets, tile)
        self.col_splits = overlap_middles(self.col_offsets, tile)

    def __len__(self) -> int:
        return len(self.row_offsets) * len(self.col_offsets)

    def row(self, index: int) -> list[Tile]:
        """The tiles of tile row ``index``, left to right."""
        row_off = self.row_offsets[index]
        return [Tile(index, col, row_off, col_off, self.tile) for col, col_off in enumerate(self.col_offsets)]

    def rows(self) -> Iterator[list[Tile]]:
        for index in range(len(self.row_offsets)):
            yield self.row(index)

    def final_rows(self, index: int) -> tuple[int, int]:
        """Raster rows [start, stop) that no tile after tile row ``index`` touches."""
        start = self.row_offsets[index]
        last = index == len(self.row_offsets) - 1
        stop = self.height if last else self.row_offsets[index + 1]
        return start, min(stop, self.height)

    def tile_ids(self, rows: np.ndarray, cols: np.ndarray) -> list[str]:
        """Ids of the tiles that own each point (rows, cols) (see the module docstring): the tile a detection is
        from. A point on a split belongs to the later tile."""
        ti = np.searchsorted(self.row_splits, np.asarray(rows, dtype="float64"), side="right")
        tj = np.searchsorted(self.col_splits, np.asarray(cols, dtype="float64"), side="right")
        return [f"r{i}c{j}" for i, j in zip(ti.tolist(), tj.tolist(), strict=True)]


def overlap_middles(offsets: Sequence[int], tile: int) -> np.ndarray:
    """The middle of the overlap of each pair of neighbouring tiles along one axis (pixel coordinates, where
    the pixel ``p`` spans [p, p + 1)): one value fewer than ``offsets``."""
    starts = np.asarray(offsets, dtype="float64")
    return (starts[:-1] + tile + starts[1:]) / 2


def batch_groups(tiles: Sequence[Tile], batch_size: int) -> Iterator[list[Tile]]:
    """Consecutive tiles of one tile row in groups of at most ``batch_size``."""
    for start in range(0, len(tiles), batch_size):
        yield list(tiles[start:start + batch_size])


def read_window(tiles: Sequence[Tile], width: int, height: int) -> Window:
    """The union of ``tiles`` clipped to the raster; tiles reaching past a raster smaller than a tile are
    padded by the reader.

    Not widened to the block grid: one read decodes each block it touches once either way, and the rows and
    columns beyond the tiles only cost copying (reading a batch at 20k² went 1.32 → 1.10 s per 3 tile rows).
    """
    col0 = min(t.col_off for t in tiles)
    row0 = min(t.row_off for t in tiles)
    col1 = min(width, max(t.col_off + t.size for t in tiles))
    row1 = min(height, max(t.row_off + t.size for t in tiles))
    return Window(col0, row0, col1 - col0, row1 - row0)
