"""Tiling, blending, the row-band accumulator, TTA and ensembling, without models or rasters."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import rasterio
import torch
from aifactory.errors import ConfigError
from aifactory.io.raster import tile_offsets
from aifactory.prediction.blending import RowBandAccumulator, blend_to_uint8, blend_weights
from aifactory.prediction.ensemble import check_weights, combine, weighted_box_fusion
from aifactory.prediction.tiling import TileGrid, read_window
from aifactory.prediction.tta import predict_tta, transforms
from rasterio.windows import Window


@pytest.mark.parametrize("kind", ["cosine", "hann", "crop"])
def test_blend_windows_are_symmetric_positive_and_peak_in_the_middle(kind):
    w = blend_weights(64, 16, kind)
    assert w.shape == (64, 64) and w.dtype == np.float32
    assert (w > 0).all() and w.max() == pytest.approx(1.0, abs=2e-3)
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert w[32, 32] > w[0, 32] and w[32, 32] > w[32, 0]
    if kind == "cosine":
        assert (w[16:48, 16:48] == 1).all()  # flat outside the overlap ramp
    if kind == "crop":
        assert w[3, 32] < 0.01 and w[8, 32] == 1


def test_grid_covers_the_raster_and_final_rows_partition_it():
    grid = TileGrid(1000, 700, 256, 32)
    assert grid.row_offsets[-1] == 700 - 256 and grid.col_offsets[-1] == 1000 - 256
    spans = [grid.final_rows(i) for i in range(len(grid.row_offsets))]
    assert spans[0][0] == 0 and spans[-1][1] == 700
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    small = TileGrid(100, 60, 256, 32)
    assert len(small) == 1 and small.final_rows(0) == (0, 60)


def test_read_windows_are_the_union_of_the_batch_inside_the_raster():
    grid = TileGrid(1500, 1300, 256, 32)
    tiles = grid.row(2)[1:4]
    window = read_window(tiles, 1500, 1300)
    assert (window.col_off, window.row_off) == (tiles[0].col_off, tiles[0].row_off)
    assert (window.width, window.height) == (tiles[-1].col_off + 256 - tiles[0].col_off, 256)
    small = TileGrid(100, 60, 256, 32)
    assert read_window(small.row(0), 100, 60) == Window(0, 0, 100, 60)  # the reader pads the rest


@pytest.mark.parametrize("kind", ["cosine", "hann", "crop"])
def test_blending_a_smooth_field_reproduces_it_row_by_row(kind):
    """Tiles that all see the same field blend back into exactly that field, tile row by tile row."""
    width, height, tile = 230, 190, 64
    yy, xx = np.mgrid[0:height, 0:width]
    field = np.stack([np.sin(xx / 17.0) * 0.5 + 0.5, (yy / height)]).astype("float32")
    grid = TileGrid(width, height, tile, 16)
    weights = blend_weights(tile, 16, kind)
    acc = RowBandAccumulator(grid, 2)
    rows = []
    for row in grid.rows():
        for t in row:
            acc.add(t, field[:, t.row_off:t.row_off + tile, t.col_off:t.col_off + tile], weights)
        rows.append(acc.finish_row())
    assert [r[0] for r in rows] == [grid.final_rows(i)[0] for i in range(len(rows))]
    scores = np.concatenate([r[1] for r in rows], axis=1)
    predicted = np.concatenate([r[2] for r in rows], axis=0)
    assert predicted.all()
    expected = np.rint(field * 255).astype(int)
    assert np.abs(scores.astype(int) - expected).max() <= 1  # float rounding at .5 only
    assert np.mean(scores == expected) > 0.99


def whole_raster_blend(grid, scores, weights, skipped):
    """Reference: every tile summed into whole-raster float planes in grid order, then made uint8."""
    sums = np.zeros((scores.shape[1], grid.height, grid.width), dtype="float32")
    total = np.zeros((grid.height, grid.width), dtype="float32")
    for t in (t for row in grid.rows() for t in row if t.tile_id not in skipped):
        h, w = min(grid.tile, grid.height - t.row_off), min(grid.tile, grid.width - t.col_off)
        piece = scores[t.row * len(grid.col_offsets) + t.col]
        sums[:, t.row_off:t.row_off + h, t.col_off:t.col_off + w] += piece[:, :h, :w] * weights[:h, :w]
        total[t.row_off:t.row_off + h, t.col_off:t.col_off + w] += weights[:h, :w]
    values = np.empty(sums.shape, dtype="uint8")
    predicted = blend_to_uint8(sums, total, out=values)
    return values, predicted


@pytest.mark.parametrize(("width", "height", "tile", "overlap"),
                         [(230, 190, 64, 16), (300, 150, 64, 40), (100, 40, 64, 8), (257, 700, 128, 8)])
def test_column_finished_blending_equals_whole_raster_sums_to_the_bit(width, height, tile, overlap):
    """Random scores, tiles missing (nodata) and a grid where three tile rows overlap (tile 64, overlap 40):
    the streamed accumulator gives the very uint8 values of summing whole-raster planes in the same order,
    and holds far less than a band of tile rows across the width."""
    rng = np.random.default_rng(3)
    grid = TileGrid(width, height, tile, overlap)
    scores = rng.random((len(grid), 2, tile, tile), dtype="float32")
    weights = blend_weights(tile, overlap, "cosine")
    skipped = {"r0c1", "r1c0", f"r{len(grid.row_offsets) - 1}c{len(grid.col_offsets) - 1}"}
    acc = RowBandAccumulator(grid, 2)
    pieces, masks = [], []
    for row in grid.rows():
        for t in row:
            if t.tile_id not in skipped:
                acc.add(t, scores[t.row * len(grid.col_offsets) + t.col], weights)
        top, values, predicted = acc.finish_row()
        assert top == grid.final_rows(row[0].row)[0]
        pieces.append(values)
        masks.append(predicted)
    expected, expected_mask = whole_raster_blend(grid, scores, weights, skipped)
    assert np.array_equal(np.concatenate(masks), expected_mask)
    assert np.array_equal(np.concatenate(pieces, axis=1), expected)
    if overlap < tile // 4:
        assert acc.nbytes < 3 * 4 * tile * width  # not a band of `tile` float rows: overlap rows + one tile


def test_accumulator_refuses_tiles_out_of_order():
    grid = TileGrid(300, 200, 64, 16)
    acc = RowBandAccumulator(grid, 1)
    second, first = grid.row(0)[1], grid.row(0)[0]
    acc.add(second, np.zeros((1, 64, 64), "float32"), np.ones((64, 64), "float32"))
    with pytest.raises(ValueError, match="out of order"):
        acc.add(first, np.zeros((1, 64, 64), "float32"), np.ones((64, 64), "float32"))


def test_tiles_are_spread_evenly_and_flush_with_both_edges():
    for size in (512, 513, 1000, 4096, 8192, 16384, 20000):
        offsets = tile_offsets(size, 512, 448, spread=True)
        steps = np.diff(offsets)
        assert offsets[0] == 0 and offsets[-1] == max(size - 512, 0)
        assert len(offsets) == (1 if size <= 512 else -(-(size - 512) // 448) + 1)  # fewest tiles
        if len(steps):
            assert steps.max() <= 448 and steps.max() - steps.min() <= 1


def test_uint8_scores_are_zero_where_not_predicted_and_rounding_past_one_stays_255():
    weights = np.array([[0.3, 0.7, 0.0, 0.9]], dtype="float32")
    sums = np.array([[[0.0, 0.42, 0.2, np.nextafter(np.float32(0.9), np.float32(2))]]], dtype="float32")
    out = np.empty(sums.shape, dtype="uint8")
    predicted = blend_to_uint8(sums, weights, out=out)
    assert out.tolist() == [[[0, 153, 0, 255]]] and predicted.tolist() == [[True, True, False, True]]


@pytest.mark.parametrize("mode", ["flips", "d4"])
def test_tta_inverts_every_transform(mode):
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    for t in transforms(mode):
        assert torch.equal(t.inverse(t.forward(x)), x)
    assert len({(t.rot, t.flip) for t in transforms(mode)}) == (4 if mode == "flips" else 8)
    # a pixel-wise model is equivariant: TTA must give exactly the plain prediction
    assert torch.allclose(predict_tta(torch.sigmoid, x / 100, mode), torch.sigmoid(x / 100))
    # a model that only looks left averages to a left-right symmetric answer under TTA
    def look_left(t: torch.Tensor) -> torch.Tensor:
        return torch.roll(t, 1, dims=-1)

    out = predict_tta(look_left, x, mode)
    assert torch.allclose(out, (torch.roll(x, 1, -1) + torch.roll(x, -1, -1) + (
        torch.roll(x, 1, -2) + torch.roll(x, -1, -2) if mode == "d4" else 0)) / (2 if mode == "flips" else 4))


def test_tta_mode_errors():
    assert len(transforms(False)) == 1 and len(transforms(True)) == 8
    with pytest.raises(ConfigError, match="tta"):
        transforms("everything")


def test_ensemble_modes():
    a = torch.tensor([[[[0.8]], [[0.2]]]])  # (1, 2, 1, 1): model A says class 0
    b = torch.tensor([[[[0.4]], [[0.6]]]])
    c = torch.tensor([[[[0.3]], [[0.7]]]])
    equal = check_weights("mean", None, 3)
    assert combine([a, b, c], "mean", equal)[0, :, 0, 0].tolist() == pytest.approx([0.5, 0.5])
    weighted = check_weights("weighted", [2, 1, 1], 3)
    assert combine([a, b, c], "weighted", weighted)[0, :, 0, 0].tolist() == pytest.approx([0.575, 0.425])
    assert combine([a, b, c], "max", equal)[0, :, 0, 0].tolist() == pytest.approx([0.8, 0.7])
    assert combine([a, b, c], "vote", equal)[0, :, 0, 0].tolist() == pytest.approx([1 / 3, 2 / 3])
    sigmoid = [torch.tensor([[[[v]]]]) for v in (0.7, 0.2, 0.6)]
    assert combine(sigmoid, "vote", equal).item() == pytest.approx(2 / 3)
    with pytest.raises(ConfigError, match="one weight per model"):
        check_weights("weighted", [1.0], 3)
    with pytest.raises(ConfigError, match="ensemble"):
        check_weights("median", None, 2)


def test_weighted_box_fusion():
    m1 = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float)
    m2 = np.array([[2, 0, 12, 10], [100, 100, 110, 110]], float)
    boxes, scores, labels = weighted_box_fusion([m1, m2], [np.array([0.9, 0.8]), np.array([0.3, 0.5])],
                                                [np.array([1, 1]), np.array([1, 2])])
    assert len(boxes) == 3
    fused = boxes[0]
    np.testing.assert_allclose(fused, [0.5, 0, 10.5, 10])  # (0.9·0 + 0.3·2) / 1.2
    assert scores[0] == pytest.approx(0.6)  # both models agree: mean score
    single = {int(lab): s for lab, s in zip(labels[1:], scores[1:], strict=True)}
    assert single[1] == pytest.approx(0.4) and single[2] == pytest.approx(0.25)  # one of two models
    # boxes of different labels never fuse
    b, _, _ = weighted_box_fusion([m1[:1], m1[:1]], [np.array([0.5]), np.array([0.5])],
                                  [np.array([1]), np.array([2])])
    assert len(b) == 2


@pytest.mark.parametrize(("dtype", "nodata"), [("uint16", 0), ("uint16", 65535), ("int16", -9999), ("uint8", 7),
                                               ("uint8", 300), ("float32", -1.5)])
@pytest.mark.parametrize("bands", [1, 2, 3, 4])
@pytest.mark.parametrize("pixel_interleaved", [False, True])
def test_nodata_rule_matches_any_band_differs(dtype, nodata, bands, pixel_interleaved):
    """The XOR/OR and one-word shortcuts for integer rasters are GDAL's per-dataset rule: valid where any band
    differs (a value the type cannot hold, or a float type, takes the plain comparison), whatever the layout."""
    from aifactory.io.raster import differs_from_nodata

    rng = np.random.default_rng(5)
    data = rng.integers(0, 3, size=(bands, 60, 70)).astype(dtype)
    held = np.array(nodata).astype(dtype)  # what a raster of this type stores for it
    data[data == 1] = held  # many pixels with some bands at nodata, some with all
    data[:, :10, :10] = held
    if pixel_interleaved:  # the layout of a pixel-interleaved read: (bands, h, w) over an (h, w, bands) buffer
        data = np.ascontiguousarray(data.transpose(1, 2, 0)).transpose(2, 0, 1)
    expected = (data != nodata).any(axis=0)
    assert np.array_equal(differs_from_nodata(data, nodata), expected)
    assert expected.any() and (expected[:10, :10].all() if held != nodata else not expected[:10, :10].any())


def test_nan_nodata_rule_is_any_band_not_nan():
    from aifactory.io.raster import differs_from_nodata

    data = np.ones((3, 4, 5), dtype="float32")
    data[:, 0, 0] = np.nan
    data[1, 1, 1] = np.nan  # one band NaN: still valid
    valid = differs_from_nodata(data, float("nan"))
    assert not valid[0, 0] and valid[1, 1] and valid.sum() == 19


@pytest.mark.parametrize(("width", "height", "tile"), [(700, 530, 128), (90, 70, 128)])
def test_reader_batches_hold_each_tiles_pixels_while_buffers_are_reused(tmp_path, width, height, tile):
    """Channels-last batches from pixel-interleaved reads, their arrays given back and refilled batch after
    batch: every tile holds exactly its raster pixels (zero-padded past a raster smaller than a tile), bands
    in the order asked, nodata tiles dropped."""
    from aifactory.prediction.geofence import Geofence
    from aifactory.prediction.source import Batch, ReadStats, iter_batches

    rng = np.random.default_rng(11)
    pixels = rng.integers(1, 5000, size=(3, height, width)).astype("uint16")
    pixels[:, :, :min(130, width // 2)] = 0  # a nodata strip: tiles wholly inside it are skipped
    path = tmp_path / "r.tif"
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint16", nodata=0,
                       tiled=True, blockxsize=64, blockysize=64) as ds:
        ds.write(pixels)
    grid = TileGrid(width, height, tile, 16)
    seen = 0
    with rasterio.open(path) as ds:
        fence = Geofence.load(width, height, None, ds.transform, None, None, "keep")
        for item in iter_batches(ds, grid, [3, 1], fence, 3, ReadStats()):
            if not isinstance(item, Batch):
                continue
            assert item.data.shape[1] == 2 and torch.from_numpy(item.data).is_contiguous(
                memory_format=torch.channels_last)
            for tile, data in zip(item.tiles, item.data, strict=True):
                expected = np.zeros((2, tile.size, tile.size), dtype="float32")
                piece = pixels[[2, 0], tile.row_off:tile.row_off + tile.size, tile.col_off:tile.col_off + tile.size]
                expected[:, :piece.shape[1], :piece.shape[2]] = piece
                assert np.array_equal(data, expected), tile.tile_id
                seen += 1
            item.data[:] = -1  # what an in-place normalisation leaves behind
            item.release()
    valid_tiles = [t for row in grid.rows() for t in row
                   if pixels[:, t.row_off:t.row_off + t.size, t.col_off:t.col_off + t.size].any()]
    assert seen == len(valid_tiles) == len(grid) - (width > 400) * len(grid.row_offsets)


@pytest.mark.parametrize("band_index", [[0, 1, 2, 3], [2, 0], [1, 0, 3, 2]])
def test_inputs_are_the_cards_normalisation_to_the_bit_in_place_or_copied(band_index):
    """The model source normalises channels-last rows against mean and std repeated along them: the floats of
    (x - mean) / std, in the reader's buffer when one model reads all its bands in their order, in a new one
    otherwise (a subset, or bands listed out of order: they must be picked, not taken as they come)."""
    from aifactory.prediction.runtime import LoadedModel, Runner

    mean = torch.tensor([4000.0, 3900.0, 3800.0, 3700.0])[band_index][None, :, None, None]
    std = torch.tensor([2500.0, 2400.0, 2300.0, 2200.0])[band_index][None, :, None, None]
    model = LoadedModel("run", torch.nn.Identity(), None, band_index, mean, std)  # type: ignore[arg-type]
    runner = Runner([model], torch.device("cpu"), precision="fp32")
    pixels = np.random.default_rng(3).integers(0, 10000, size=(3, 40, 56, 4)).astype("float32")
    data = torch.from_numpy(pixels).permute(0, 3, 1, 2)  # a channels-last batch, as the reader makes them
    expected = (data[:, band_index] - mean) / std

    copied = runner._inputs(model, data)
    assert torch.equal(copied, expected) and copied.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(data, torch.from_numpy(pixels).permute(0, 3, 1, 2))  # the batch is left as it was
    in_place = runner._inputs(model, data, in_place=True)
    assert torch.equal(in_place, expected)
    assert (in_place.data_ptr() == data.data_ptr()) == (band_index == [0, 1, 2, 3])
