"""COGs assembled from compressed tiles (aifactory.io.cog_assembly): GDAL's validator, tiles copied as they are,
pixels and masks read back through GDAL, classic TIFF and BigTIFF on either side, bad sources refused."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from aifactory.io import cog_assembly
from aifactory.io.cog import COGWriter
from aifactory.io.cog_assembly import assemble_cog, read_images
from aifactory.io.overviews import BlockRowBuffer

VALIDATOR = ["/usr/bin/python3", "-m", "osgeo_utils.samples.validate_cloud_optimized_geotiff", "--full-check=yes"]


def tiled(path: Path, values: np.ndarray, mask: np.ndarray | None, **options: object) -> Path:
    """A tiled (128 px), ZSTD GeoTIFF as GDAL writes one, with an internal mask unless ``mask`` is None."""
    profile = {"driver": "GTiff", "width": values.shape[2], "height": values.shape[1], "count": values.shape[0],
               "dtype": "uint8", "crs": "EPSG:32631", "transform": rasterio.Affine(0.5, 0, 500000, 0, -0.5, 5e6),
               "tiled": True, "blockxsize": 128, "blockysize": 128, "compress": "ZSTD", **options}
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as ds:
        ds.write(values)
        if mask is not None:
            ds.write_mask(np.where(mask, np.uint8(255), np.uint8(0)))
        ds.update_tags(AIFACTORY_CLASSES='["building", "tree"]')
        ds.set_band_description(1, "building")
    return path


def pyramid(tmp_path: Path, mask: bool = True, **options: object) -> tuple[Path, list[Path]]:
    """A 600 × 400 image and two smaller levels standing for its overviews (any pixels will do here)."""
    rng = np.random.default_rng(3)
    sources = []
    for level, (width, height) in enumerate([(600, 400), (300, 200), (150, 100)]):
        values = rng.integers(0, 256, size=(2, height, width), dtype="uint8")
        valid = rng.random((height, width)) > 0.1 if mask else None
        sources.append(tiled(tmp_path / f"level{level}.tif", values, valid, **options))
    return sources[0], sources[1:]


def read_levels(path: Path, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for level in range(count):
        with rasterio.open(path, **({"overview_level": level - 1} if level else {})) as ds:
            out.append((ds.read(), ds.dataset_mask()))
    return out


def assert_levels_read_back(cog: Path, sources: list[Path]) -> None:
    """Each level of ``cog`` (full resolution, then overviews) reads as its source: pixels and mask."""
    for (values, mask), path in zip(read_levels(cog, len(sources)), sources, strict=True):
        with rasterio.open(path) as source:
            assert np.array_equal(values, source.read()) and np.array_equal(mask, source.dataset_mask())


def tile_bytes(path: Path) -> list[list[bytes]]:
    """The compressed bytes of every tile of every image of a TIFF, image by image in file order."""
    with open(path, "rb") as stream:
        data = stream.read()
    return [[data[offset:offset + size] for offset, size in zip(image.tile_offsets, image.tile_sizes, strict=True)]
            for image in read_images(path)]


def validate(path: Path) -> str:
    run = subprocess.run([*VALIDATOR, str(path)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@pytest.mark.parametrize("bigtiff_source", [False, True])
def test_tiles_are_copied_as_they_are_and_read_back_equal(tmp_path, bigtiff_source):
    """Every tile of the COG is a source tile byte for byte (imagery and masks, smallest overview first); GDAL
    reads the same pixels, masks, tags and georeferencing; its validator finds the COG layout, leaders and
    trailers right. Sources in BigTIFF (as GDAL writes big temporaries) give a classic TIFF all the same."""
    image, overviews = pyramid(tmp_path, BIGTIFF="YES" if bigtiff_source else "NO")
    assemble_cog(image, overviews, tmp_path / "cog.tif")
    assert validate(tmp_path / "cog.tif").startswith(f"{tmp_path / 'cog.tif'} is a valid cloud optimized GeoTIFF")
    assert (tmp_path / "cog.tif").read_bytes()[:4] == b"II*\0"
    ours = tile_bytes(tmp_path / "cog.tif")  # image, mask, overviews, their masks
    sources = [tile_bytes(path) for path in (image, *overviews)]  # each: image, mask
    assert ours == [sources[0][0], sources[0][1], sources[1][0], sources[2][0], sources[1][1], sources[2][1]]
    with rasterio.open(tmp_path / "cog.tif") as cog, rasterio.open(image) as source:
        assert cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert (cog.crs, cog.transform, cog.tags(), cog.descriptions) == \
            (source.crs, source.transform, source.tags(), source.descriptions)
        assert cog.overviews(1) == [2, 4]
    assert_levels_read_back(tmp_path / "cog.tif", [image, *overviews])


def test_past_4_gib_the_cog_is_a_bigtiff(tmp_path, monkeypatch):
    """Offsets past 32 bits need BigTIFF: with the limit lowered, the same sources give a valid BigTIFF COG."""
    monkeypatch.setattr(cog_assembly, "TIFF_LIMIT", 1 << 16)
    image, overviews = pyramid(tmp_path)
    assemble_cog(image, overviews, tmp_path / "big.tif")
    assert (tmp_path / "big.tif").read_bytes()[:4] == b"II+\0"
    validate(tmp_path / "big.tif")
    assert tile_bytes(tmp_path / "big.tif")[0] == tile_bytes(image)[0]
    assert_levels_read_back(tmp_path / "big.tif", [image, *overviews])


def test_without_masks(tmp_path):
    image, overviews = pyramid(tmp_path, mask=False)
    assemble_cog(image, overviews, tmp_path / "cog.tif")
    validate(tmp_path / "cog.tif")
    with rasterio.open(tmp_path / "cog.tif") as cog, rasterio.open(image) as source:
        assert np.array_equal(cog.read(), source.read()) and cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"


def test_sources_it_cannot_copy_are_refused(tmp_path):
    image, _ = pyramid(tmp_path)
    values = np.zeros((2, 200, 300), dtype="uint8")
    striped = tiled(tmp_path / "striped.tif", values, None, tiled=False)
    unmasked = tiled(tmp_path / "unmasked.tif", values, None)
    big_endian = tiled(tmp_path / "big_endian.tif", values, None, ENDIANNESS="BIG")
    with pytest.raises(ValueError, match="not tiled"):
        assemble_cog(striped, [], tmp_path / "out.tif")
    with pytest.raises(ValueError, match="must all have a mask, or none"):
        assemble_cog(image, [unmasked], tmp_path / "out.tif")
    with pytest.raises(ValueError, match="not a little-endian TIFF"):
        assemble_cog(big_endian, [], tmp_path / "out.tif")
    looping = tmp_path / "loop.tif"  # one IFD (a tile at byte 0) whose next IFD is itself
    looping.write_bytes(b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 2) + struct.pack("<HHII", 324, 4, 1, 0)
                        + struct.pack("<HHII", 325, 4, 1, 0) + struct.pack("<I", 8))
    with pytest.raises(ValueError, match="its IFDs loop"):
        read_images(looping)
    with_overviews = tiled(tmp_path / "ovr.tif", np.zeros((1, 400, 400), dtype="uint8"), None)
    with rasterio.open(with_overviews, "r+") as ds:
        ds.build_overviews([2])
    with pytest.raises(ValueError, match="without overviews"):
        assemble_cog(with_overviews, [], tmp_path / "out.tif")
    assert not (tmp_path / "out.tif").exists()


def test_block_row_buffer_writes_whole_rows_of_blocks_and_the_last_rows():
    """Rows come in pieces of any height; they leave in rows of blocks (the raster's last rows on their own), in
    order and unchanged; the mask is None where every pixel of the written rows is valid."""
    height, width = 300, 7
    values = np.arange(2 * height * width, dtype="int64").reshape(2, height, width).astype("uint8")
    mask = np.ones((height, width), dtype=bool)
    mask[150, 3] = False
    written: list[tuple[int, np.ndarray, np.ndarray | None]] = []
    buffer = BlockRowBuffer(2, width, height, 128, lambda row0, v, m: written.append(
        (row0, v.copy(), None if m is None else m.copy())))
    row = 0
    for rows in (1, 60, 100, 3, 136):
        buffer.add(values[:, row:row + rows], None if mask[row:row + rows].all() else mask[row:row + rows])
        row += rows
    assert [(row0, v.shape[1]) for row0, v, _ in written] == [(0, 128), (128, 128), (256, 44)]
    assert np.array_equal(np.concatenate([v for _, v, _ in written], axis=1), values)
    assert written[0][2] is None and written[2][2] is None and np.array_equal(written[1][2], mask[128:256])


def test_a_streamed_cog_is_assembled_and_its_temporaries_removed(tmp_path):
    """COGWriter's streamed path end to end: a COG that GDAL's validator accepts, the pixels and mask written,
    the writer's tiles at every level, and nothing else left behind."""
    rng = np.random.default_rng(5)
    values = rng.integers(0, 256, size=(2, 700, 900), dtype="uint8")
    mask = rng.random((700, 900)) > 0.05
    with COGWriter(tmp_path / "scores.tif", 900, 700, 2, "uint8", crs="EPSG:32631", blocksize=128, mask=True,
                   predictor=1, level=3, stream_overviews=True) as writer:
        for row in range(0, 700, 90):
            writer.write_rows(row, values[:, row:row + 90], mask[row:row + 90])
    validate(tmp_path / "scores.tif")
    assert os.listdir(tmp_path) == ["scores.tif"]
    with rasterio.open(tmp_path / "scores.tif") as ds:
        assert np.array_equal(ds.read(), values) and np.array_equal(ds.dataset_mask() > 0, mask)
        assert len(ds.overviews(1)) == 3 and ds.block_shapes[0] == (128, 128)
    with rasterio.open(tmp_path / "scores.tif", overview_level=0) as level:
        assert level.block_shapes[0] == (128, 128)


def test_every_file_with_a_mask_is_compressed_in_one_thread(tmp_path, monkeypatch):
    """GDAL 3.10's multithreaded compression races between a band's and its mask's jobs ("Bad value 1 for
    ExtraSamples", seen on the overview levels of 20000-wide scores): the image and every level are written with
    NUM_THREADS=1, whatever GDAL_NUM_THREADS says."""
    opened: list[dict[str, object]] = []
    real_open = rasterio.open

    def spy(path, mode="r", **profile):
        if mode == "w":
            opened.append(profile)
        return real_open(path, mode, **profile)

    monkeypatch.setattr(rasterio, "open", spy)
    COGWriter(tmp_path / "scores.tif", 2000, 1500, 2, "uint8", blocksize=256, mask=True, level=3,
              stream_overviews=True).abort()
    assert len(opened) == 4 and all(profile.get("num_threads") == "1" for profile in opened)
