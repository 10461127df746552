"""Overviews streamed with the rows (aifactory.io.overviews) against GDAL's own average overviews."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from aifactory.io.cog import COGWriter
from aifactory.io.overviews import halve, overview_sizes
from rasterio.windows import Window


def scores_and_mask(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth and noisy 8-bit scores with masked holes at odd offsets (edge cases of the averaging)."""
    rng = np.random.default_rng(7)
    rows, cols = np.mgrid[0:height, 0:width]
    smooth = (127.5 + 127.5 * np.sin(rows / 37.0) * np.cos(cols / 23.0)).astype("uint8")
    noisy = rng.integers(0, 256, size=(height, width), dtype="uint8")
    mask = rng.random((height, width)) > 0.03  # scattered invalid pixels
    mask[101:240, 33:517] = False  # a hole with odd edges
    mask[:, -1] = False  # the last (odd) column masked
    mask[-3:, :] = rng.random((3, width)) > 0.5
    values = np.where(mask, np.stack([smooth, noisy]), 0).astype("uint8")
    values[:, 300:340, 600:700] = 0  # valid pixels scored 0: a mask read from the values would drop them
    mask[300:340, 600:700] = True
    return values, mask


def write(path, values, mask, strips, stream):
    height, width = mask.shape
    with COGWriter(path, width, height, 2, "uint8", crs="EPSG:32631", blocksize=128, mask=True, predictor=1,
                   band_descriptions=["building", "tree"], stream_overviews=stream) as writer:
        row = 0
        for rows in strips:
            if stream:
                writer.write_rows(row, values[:, row:row + rows], mask[row:row + rows])
            else:
                where = Window(0, row, width, rows)
                writer.write(values[:, row:row + rows], where)
                writer.write_mask(mask[row:row + rows], where)
            row += rows
        writer.update_tags(AIFACTORY_CLASSES='["building", "tree"]')


def levels(path):
    with rasterio.open(path) as ds:
        count = len(ds.overviews(1))
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.descriptions == ("building", "tree") and ds.tags()["AIFACTORY_CLASSES"]
    out = []
    for level in range(count):
        with rasterio.open(path, overview_level=level) as ds:
            out.append((ds.read(), ds.dataset_mask()))
    return out


@pytest.mark.parametrize("strips", [[1, 7, 64, 63, 128, 200, 49], [128] * 4])
def test_streamed_overviews_equal_gdals_average_to_the_bit(tmp_path, strips):
    """Strips of any height, a single row, odd heights (rows left unpaired until the next strip), masked holes
    at odd offsets: every level equals the COG driver's own average overviews, values and masks."""
    values, mask = scores_and_mask(1024, 512)
    write(tmp_path / "streamed.tif", values, mask, strips, stream=True)
    write(tmp_path / "gdal.tif", values, mask, strips, stream=False)
    streamed, gdal = levels(tmp_path / "streamed.tif"), levels(tmp_path / "gdal.tif")
    assert len(streamed) == len(gdal) == len(overview_sizes(1024, 512, 128)) == 3
    for (ours, our_mask), (theirs, their_mask) in zip(streamed, gdal, strict=True):
        assert not their_mask.all() and their_mask.any()
        assert np.array_equal(our_mask, their_mask)
        assert np.array_equal(ours, theirs)
    with rasterio.open(tmp_path / "streamed.tif") as a, rasterio.open(tmp_path / "gdal.tif") as b:
        assert np.array_equal(a.read(), b.read()) and np.array_equal(a.dataset_mask(), b.dataset_mask())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gdal.tif", "streamed.tif"]  # no level file left


def test_odd_sizes_round_up_and_the_last_row_and_column_average_what_they_cover(tmp_path):
    """1037 × 611 in odd strips: levels of ceil(size / 2), each equal to halving the whole level above at once."""
    values, mask = scores_and_mask(1037, 611)
    write(tmp_path / "odd.tif", values, mask, [1, 7, 64, 63, 128, 200, 148], stream=True)
    above = values, mask
    for (ours, our_mask), (width, height) in zip(levels(tmp_path / "odd.tif"), overview_sizes(1037, 611, 128),
                                                 strict=True):
        expected, expected_mask = halve(*above)
        assert ours.shape == (2, height, width) == expected.shape
        assert np.array_equal(ours, expected) and np.array_equal(our_mask > 0, expected_mask)
        above = expected, expected_mask
    # by hand: a 3 × 3 corner with one masked pixel
    block = np.array([[[10, 20, 30], [40, 50, 61], [70, 80, 91]]], dtype="uint8")
    valid = np.array([[True, True, True], [True, False, True], [True, True, True]])
    halved, halved_mask = halve(block, valid)
    assert halved.tolist() == [[[23, 46], [75, 91]]] and halved_mask.all()  # (10+20+40+1)//3, (30+61+1)//2, …


def test_rows_out_of_order_are_refused_and_an_aborted_writer_leaves_nothing(tmp_path):
    values, mask = scores_and_mask(300, 200)
    with pytest.raises(ValueError, match="expected rows from 10"), \
            COGWriter(tmp_path / "s.tif", 300, 200, 2, "uint8", blocksize=64, mask=True, stream_overviews=True) as w:
        w.write_rows(0, values[:, :10], mask[:10])
        w.write_rows(20, values[:, 20:30], mask[20:30])
    assert list(tmp_path.iterdir()) == []


def test_streamed_overviews_need_an_8bit_cog_with_a_mask(tmp_path):
    with pytest.raises(ValueError, match="8-bit COG with a mask"):
        COGWriter(tmp_path / "f.tif", 300, 200, 1, "float32", mask=True, stream_overviews=True)
    assert list(tmp_path.iterdir()) == []
