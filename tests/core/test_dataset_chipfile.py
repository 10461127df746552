"""Chip GeoTIFFs from patched templates: byte-identical to GDAL's own file, hashed as written, GDAL fallbacks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from aifactory.datasets.chipfile import encode_gdal, write_chip
from blake3 import blake3
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning

UTM = Affine(0.5, 0, 500_000, 0, -0.5, 5_000_000)
RNG = np.random.default_rng(5)

LAYOUTS = {
    "image": (RNG.integers(0, 4000, (4, 64, 48), dtype="uint16"), CRS.from_epsg(32631), 0.0),
    "mask": (RNG.integers(0, 6, (64, 48), dtype="uint8"), CRS.from_epsg(32631), None),
    "pixel_space": (RNG.integers(0, 255, (3, 64, 48), dtype="uint8"), None, None),
    "float": (RNG.random((2, 64, 48), dtype="float32"), CRS.from_epsg(4326), -9999.0),
}
POSITIONS = [Affine.translation(0, 0), Affine.translation(96, 128), Affine.translation(-16, 4096)]


def read_back(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.read(), ds.transform, ds.crs, ds.nodata, ds.compression, ds.interleaving.value


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_chips_are_the_files_gdal_writes_and_hash_as_written(layout, tmp_path):
    array, crs, nodata = LAYOUTS[layout]
    base = Affine.identity() if crs is None else UTM
    for number, position in enumerate(POSITIONS):
        transform = base * position
        path = tmp_path / f"{number}.tif"
        digest = write_chip(path, array, crs, transform, nodata)
        data = path.read_bytes()
        assert digest == blake3(data).hexdigest()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            assert data == encode_gdal(array, crs, transform, nodata, interleave="band", blockysize=array.shape[-2])
        pixels, got_transform, got_crs, got_nodata, compression, interleave = read_back(path)
        assert (pixels.reshape(array.shape) == array).all() and got_transform == transform
        assert got_crs == crs and got_nodata == nodata and compression is None and interleave == "BAND"


def test_rotated_pixels_patch_the_transformation_matrix(tmp_path):
    array = RNG.integers(0, 9, (32, 32), dtype="uint8")
    rotated = Affine(0.5, 0.1, 300_000, 0.1, -0.5, 4_000_000)
    for number, position in enumerate(POSITIONS):
        write_chip(tmp_path / f"{number}.tif", array, CRS.from_epsg(32617), rotated * position)
        assert read_back(tmp_path / f"{number}.tif")[1] == rotated * position


def test_compressed_chips_and_unprovable_layouts_are_written_by_gdal(tmp_path):
    array, crs, nodata = LAYOUTS["image"]
    digest = write_chip(tmp_path / "z.tif", array, crs, UTM, nodata, "deflate")
    assert digest == blake3((tmp_path / "z.tif").read_bytes()).hexdigest()
    pixels, transform, _, _, compression, _ = read_back(tmp_path / "z.tif")
    assert compression.value == "DEFLATE" and (pixels == array).all() and transform == UTM
    # NaN nodata never compares equal, so its template cannot prove itself: GDAL writes those chips
    floats = RNG.random((2, 16, 16), dtype="float32")
    write_chip(tmp_path / "nan.tif", floats, CRS.from_epsg(4326), UTM, float("nan"))
    pixels, _, _, got_nodata, _, interleave = read_back(tmp_path / "nan.tif")
    assert np.isnan(got_nodata) and (pixels == floats).all() and interleave == "PIXEL"  # GDAL's default layout
    # a byte-swapped or strided array cannot be copied as is: GDAL writes it too
    swapped = array.astype(">u2")
    write_chip(tmp_path / "be.tif", swapped, crs, UTM, nodata)
    write_chip(tmp_path / "strided.tif", array[:, ::2], crs, UTM, nodata)
    for name, expected in (("be.tif", array), ("strided.tif", array[:, ::2])):
        pixels, *_, interleave = read_back(tmp_path / name)
        assert (pixels == expected).all() and interleave == "PIXEL"
