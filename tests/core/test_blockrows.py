"""The tile-row reader that decodes each block once: the same pixels as direct reads, each raster row asked of
GDAL once per column, and columns skipped by a geofence read in full by the next tile row."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from aifactory.prediction import blockrows
from aifactory.prediction.blockrows import BlockRowReader
from aifactory.prediction.tiling import TileGrid, batch_groups, read_window
from rasterio.windows import Window


def write_raster(path, width, height, block):
    pixels = np.random.default_rng(5).integers(0, 60000, size=(3, height, width)).astype("uint16")
    options = {"tiled": True, "blockxsize": block, "blockysize": block} if block else {}
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint16",
                       **options) as ds:
        ds.write(pixels)
    return pixels


def reads(reader, grid, skip=False):
    """(tile row, window, pixels read) for each batch of 3 tiles, row by row as predict reads them; ``skip``: every
    third tile row reads every other tile only (a geofence), and the next row the other columns in full."""
    for index in range(len(grid.row_offsets)):
        row = grid.row(index)
        if skip and index % 3 == 1:
            row = row[::2]
        reader.start_row(grid, index)
        for group in batch_groups(row, 3):
            window = read_window(group, grid.width, grid.height)
            yield index, window, reader.read(window)


@pytest.mark.parametrize(("width", "height", "tile", "overlap", "block", "skip"), [
    (900, 1000, 128, 16, 64, False),   # blocks smaller than a tile
    (900, 1000, 128, 32, 256, False),  # blocks taller than a tile: rows decoded for the row after next
    (900, 1000, 128, 16, 256, True),   # columns some tile rows skip (a geofence)
    (500, 300, 96, 0, 64, False),      # no overlap
    (500, 301, 128, 16, None, False),  # a striped raster
])
def test_every_window_holds_its_pixels_and_each_row_is_read_once(tmp_path, monkeypatch, width, height, tile,
                                                                   overlap, block, skip):
    check_reads(tmp_path, monkeypatch, width, height, tile, overlap, block, skip)


def test_a_carry_over_its_budget_holds_the_left_columns_and_the_others_are_read_again(tmp_path, monkeypatch):
    """Over budget, the columns past the carry's are read whole again: the same pixels, the left ones read once."""
    monkeypatch.setattr(blockrows, "CARRY_BYTES", 300 * 6 * 250)  # 300 columns of up to 250 rows of 3 × uint16
    asked = check_reads(tmp_path, monkeypatch, 900, 1000, 128, 16, 256, skip=True)
    later = [w for w in asked if w.row_off >= 112]
    assert any(int(w.row_off) % 256 for w in later) and any(int(w.row_off) % 256 == 0 for w in later)


def check_reads(tmp_path, monkeypatch, width, height, tile, overlap, block, skip):
    pixels = write_raster(tmp_path / "r.tif", width, height, block)
    asked: list[Window] = []
    real_read = blockrows.read_window

    def recording_read(ds, window, *args, **kwargs):
        asked.append(window)
        return real_read(ds, window, *args, **kwargs)

    monkeypatch.setattr(blockrows, "read_window", recording_read)
    grid = TileGrid(width, height, tile, overlap)
    with rasterio.open(tmp_path / "r.tif") as ds:
        reader = BlockRowReader(ds, [3, 1])
        block_rows = ds.block_shapes[0][0]
        for index, window, got in reads(reader, grid, skip):
            rows, cols = window.toslices()
            assert np.array_equal(got, pixels[[2, 0], rows, cols]), (index, window)
    times_read = np.zeros((height, width), dtype=int)
    for window in asked:
        rows, cols = window.toslices()
        times_read[rows, cols] += 1
    if skip:
        return asked
    # a pixel is read twice only where batches of one tile row overlap (the columns they share)
    for window in asked:
        rows, cols = window.toslices()
        neighbours = [v for v in asked if v is not window and v.row_off == window.row_off]
        shared = np.zeros(width, dtype=bool)
        for v in neighbours:
            shared[v.toslices()[1]] = True
        alone = cols.start + np.flatnonzero(~shared[cols])
        assert times_read[rows][:, alone].max(initial=1) == 1, window
    # and every read after the first tile row's starts on a block boundary: no block is decoded twice
    assert all(int(w.row_off) % block_rows == 0 for w in asked if w.row_off >= grid.row_offsets[1])
    return asked


def test_a_file_in_one_strip_is_read_window_by_window_as_asked(tmp_path):
    """Reading to the end of a block is no gain when the block is the whole raster: windows are read as asked."""
    pixels = np.arange(3 * 2000 * 300, dtype="uint32").astype("uint16").reshape(3, 2000, 300)
    with rasterio.open(tmp_path / "strip.tif", "w", driver="GTiff", width=300, height=2000, count=3, dtype="uint16",
                       blockysize=2000, compress="deflate") as ds:  # uncompressed, GDAL would split the strip
        ds.write(pixels)
    grid = TileGrid(300, 2000, 128, 16)
    with rasterio.open(tmp_path / "strip.tif") as ds:
        assert ds.block_shapes[0][0] == 2000
        reader = BlockRowReader(ds, [1, 2, 3])
        assert not reader.carries
        for _, window, got in reads(reader, grid):
            assert np.array_equal(got, pixels[(slice(None), *window.toslices())])
            assert reader._scratch.shape[0] == 128  # never more rows than a tile's


def test_a_raster_resampled_on_the_fly_is_read_window_by_window_as_asked(tmp_path):
    """A warped VRT resamples each window on its own (a pixel's value depends on the window read): its windows are
    read exactly as asked, the same pixels as reading them directly."""
    from aifactory.prediction.source import open_source

    write_raster(tmp_path / "r.tif", 700, 650, 64)
    with rasterio.open(tmp_path / "r.tif") as plain:
        plain_reader = BlockRowReader(plain, [1])
        assert plain_reader.carries
    with open_source(str(tmp_path / "r.tif"), 1.37) as ds:
        reader = BlockRowReader(ds, [1, 2])
        assert not reader.carries
        grid = TileGrid(ds.width, ds.height, 128, 16)
        for _, window, got in reads(reader, grid):
            assert np.array_equal(got, ds.read([1, 2], window=window)), window
