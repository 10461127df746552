from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from aifactory.errors import InputError
from aifactory.io.raster import (
    open_raster,
    raster_info,
    read_valid_mask,
    read_window,
    tile_offsets,
    tile_windows,
)
from PIL import Image
from rasterio.windows import Window


def write_png(path, height=50, width=70):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype="uint8")).save(path)
    return path


def test_info_of_georeferenced_cog(small_scene):
    meta = raster_info(small_scene[0])
    assert (meta.width, meta.height, meta.count) == (640, 480, 4)
    assert meta.dtypes == ("uint16",) * 4
    assert meta.crs == "EPSG:32631" and meta.georeferenced
    assert meta.res == (0.5, 0.5)
    assert meta.block_shape == (512, 512)
    assert meta.nodata == 0


def test_png_without_georeferencing_is_pixel_space(tmp_path):
    meta = raster_info(write_png(tmp_path / "drone.png"))
    assert not meta.georeferenced
    assert meta.crs is None
    assert meta.transform == Affine.identity()
    assert (meta.width, meta.height, meta.count) == (70, 50, 3)


@pytest.mark.parametrize("content, message", [
    (None, "not found"), (b"", "empty"), (b"not an image at all", "cannot open raster"),
])
def test_bad_files_raise_one_line(tmp_path, content, message):
    path = tmp_path / "bad.tif"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as excinfo:
        raster_info(path)
    assert "\n" not in str(excinfo.value)
    assert str(path) in str(excinfo.value)


def test_truncated_file_is_detected(small_scene, tmp_path):
    data = small_scene[0].read_bytes()
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"truncated or corrupt|cannot open"):
        raster_info(truncated)


def test_tile_offsets_cover_and_end_flush():
    assert tile_offsets(1000, 256, 192) == [0, 192, 384, 576, 744]
    assert tile_offsets(100, 256, 192) == [0]
    windows = tile_windows(600, 500, 256, 64)
    covered = np.zeros((500, 600), bool)
    for w in windows:
        covered[w.row_off:w.row_off + 256, w.col_off:w.col_off + 256] = True
    assert covered.all()
    with pytest.raises(ValueError):
        tile_windows(10, 10, 8, 8)


def test_read_window_pads_outside_with_nodata(small_scene):
    with open_raster(small_scene[0]) as ds:
        inside = read_window(ds, Window(0, 0, 32, 32))
        edge = read_window(ds, Window(620, 470, 32, 32))
        direct = ds.read(window=Window(620, 470, 20, 10))
    assert inside.shape == edge.shape == (4, 32, 32)
    np.testing.assert_array_equal(edge[:, :10, :20], direct)
    assert (edge[:, 10:, :] == 0).all() and (edge[:, :, 20:] == 0).all()


def test_valid_mask_honours_nodata_and_edges(tmp_path):
    from aifactory.io.synthetic import SceneSpec, generate_scene

    raster = tmp_path / "corner.tif"
    generate_scene(SceneSpec(width=256, height=256, nodata_corner=0.2, density=0), raster)
    with rasterio.open(raster) as ds:
        mask = read_valid_mask(ds, Window(-16, -16, 128, 128))
    assert not mask[:16].any() and not mask[:, :16].any()  # outside the raster
    assert not mask[16, 16]  # nodata corner
    assert mask[-1, -1]
