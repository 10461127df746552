"""`aifactory preprocess` on bad input: one line, exit 2, nothing written, before the work where it can be told.

Broken rasters (truncated, a block that does not decode midway), a DEM that is no raster or gives no height over
the image, a binary stretch file, a resolution in the wrong units, absurd heights, options that would be ignored,
an output that is its own input, and a warp that ends with no valid pixel.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_bounds, from_origin
from test_preprocess import rpc_raster  # noqa: F401  (fixture)

#: the lon/lat extent of the ``rpc_raster`` fixture's image at height 0
RPC_BOUNDS = (2.99, 44.99, 3.01, 45.01)


def refused(cli, *args: str, output, message: str) -> str:
    """Run ``aifactory preprocess ARGS -o OUTPUT``; assert one error line holding ``message``, nothing written."""
    result = cli("preprocess", *args, "-o", str(output), "--events", "none", timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not output.exists() and not list(output.parent.glob(f".{output.stem}*"))
    return lines[0]


def write_dem(path, bounds=RPC_BOUNDS, nodata_only: bool = False, size: int = 512):
    """A float32 DEM in EPSG:4326, heights 0..1 m (noise, so that its 128-px deflate tiles take room and cutting
    the file loses whole tiles), or nodata everywhere."""
    heights = np.random.default_rng(1).random((1, size, size), "float32")
    if nodata_only:
        heights[:] = -9999
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="float32",
                       crs="EPSG:4326", transform=from_bounds(*bounds, size, size), nodata=-9999, tiled=True,
                       blockxsize=128, blockysize=128, compress="deflate") as ds:
        ds.write(heights)
    return path


def corrupt_block(path, col: int, row: int) -> None:
    """Overwrite one compressed block with garbage (its zlib header first): the file opens, that block does not
    decode."""
    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=1))
        size = int(ds.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=1))
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * size)


def test_truncated_source_is_one_line(cli, small_scene, tmp_path):
    truncated = tmp_path / "trunc.tif"
    truncated.write_bytes(small_scene[0].read_bytes()[:300_000])
    line = refused(cli, str(truncated), output=tmp_path / "out.tif", message="truncated or corrupt")
    assert str(truncated) in line


@pytest.mark.parametrize("args", [[], ["--dst-crs", "EPSG:4326"], ["--to-8bit"]])
def test_block_failing_midway_is_one_line(cli, tmp_path, args):
    """First and last blocks decode (the cheap check passes): the failure comes while streaming."""
    source = tmp_path / "mid.tif"
    data = np.random.default_rng(0).integers(1, 4000, (2, 768, 768)).astype("uint16")
    with rasterio.open(source, "w", driver="GTiff", width=768, height=768, count=2, dtype="uint16",
                       crs="EPSG:32631", transform=from_origin(500000, 5000000, 0.5, 0.5), nodata=0, tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate") as ds:
        ds.write(data)
    corrupt_block(source, 1, 1)
    line = refused(cli, str(source), *args, output=tmp_path / "out.tif", message=str(source))
    assert "IReadBlock" in line


@pytest.mark.parametrize("kind", ["text", "geopackage"])
def test_dem_that_is_no_raster_is_one_line(cli, rpc_raster, small_scene, tmp_path, kind):  # noqa: F811
    dem = tmp_path / "text.tif"
    if kind == "text":
        dem.write_text("not a raster\n")
    else:
        dem = small_scene[1]
    line = refused(cli, str(rpc_raster), "--ortho", "--dem", str(dem), output=tmp_path / "o.tif",
                   message="not a raster")
    assert line.startswith(f"aifactory: error: --dem: {dem}")


@pytest.mark.parametrize("case, message", [
    ("elsewhere", "DEM does not cover the image's ground extent"),
    ("nodata", "DEM is nodata all over"),
    ("truncated", "truncated or corrupt"),
    ("corrupt", "truncated or corrupt"),
])
def test_dem_without_heights_over_the_image_is_refused(cli, rpc_raster, tmp_path, case, message):  # noqa: F811
    dem = write_dem(tmp_path / "dem.tif", nodata_only=case == "nodata",
                    bounds=(3.5, 45.5, 3.52, 45.52) if case == "elsewhere" else RPC_BOUNDS)
    if case == "truncated":
        dem.write_bytes(dem.read_bytes()[: dem.stat().st_size // 2])
    if case == "corrupt":  # first and last tiles intact
        corrupt_block(dem, 2, 1)
    refused(cli, str(rpc_raster), "--ortho", "--dem", str(dem), output=tmp_path / "o.tif", message=message)


def test_dem_over_part_of_the_image_works_with_a_warning(cli, rpc_raster, tmp_path):  # noqa: F811
    dem = write_dem(tmp_path / "half.tif", bounds=(3.0, 44.98, 3.04, 45.02))
    out = tmp_path / "o.tif"
    result = cli("preprocess", str(rpc_raster), "-o", str(out), "--ortho", "--dem", str(dem), "--events", "jsonl")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert any("of the image's ground extent only" in event.get("message", "") for event in events)
    with rasterio.open(out) as ds:
        assert 0.3 < (ds.dataset_mask() > 0).mean() < 0.7


@pytest.mark.parametrize("height", ["nan", "inf", "1e12", "-1000", "9500"])
def test_implausible_height_is_refused(cli, rpc_raster, tmp_path, height):  # noqa: F811
    refused(cli, str(rpc_raster), "--ortho", "--height", height, output=tmp_path / "o.tif",
            message="expected a ground height above the WGS 84 ellipsoid in metres, between -500 and 9000")


def test_binary_stretch_file_is_one_line(cli, small_scene, tmp_path):
    line = refused(cli, str(small_scene[0]), "--to-8bit", "--stretch", str(small_scene[1]),
                   output=tmp_path / "out.tif", message="not a text file")
    assert str(small_scene[1]) in line


@pytest.mark.parametrize("args, size, units", [
    (["--resolution", "0.001"], "320000 x 240000 px", "0.5 metre (EPSG:32631): 500× finer"),
    (["--dst-crs", "EPSG:4326", "--resolution", "10"], "1 x 1 px", "coarser than the input; give --resolution "
                                                                    "in degree of EPSG:4326"),
])
def test_resolution_in_the_wrong_units_is_refused_before_writing(cli, small_scene, tmp_path, args, size, units):
    """Degrees given for metres asked for 77 gigapixels, written for hours; metres given to a degree CRS, 1 px."""
    line = refused(cli, str(small_scene[0]), *args, output=tmp_path / "out.tif", message=size)
    assert units in line and "640 x 480 px" in line


def test_orthorectification_resolution_in_metres_is_refused(cli, rpc_raster, tmp_path):  # noqa: F811
    refused(cli, str(rpc_raster), "--ortho", "--height", "0", "--resolution", "10", output=tmp_path / "o.tif",
            message="degree in EPSG:4326")


@pytest.mark.parametrize("args, message", [
    (["--bands", ""], "--bands: expected comma-separated numbers, got ''"),
    (["--percentiles", "98,2"], "--percentiles only applies with --to-8bit"),
    (["--stretch", "s.stretch.json"], "--stretch only applies with --to-8bit"),
    (["--resampling", "nearest"], "--resampling only applies with --dst-crs, --resolution or --ortho"),
    (["--to-8bit", "--stretch", "s.stretch.json", "--percentiles", "1,99"], "--percentiles only applies without"),
    (["--dst-crs", ""], "--dst-crs: not a CRS"),
])
def test_options_that_would_be_ignored_are_errors(cli, small_scene, tmp_path, args, message):
    refused(cli, str(small_scene[0]), *args, output=tmp_path / "out.tif", message=message)


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
def test_output_that_is_the_input_is_refused(cli, small_scene, tmp_path, link):
    source = tmp_path / "x.tif"
    shutil.copy(small_scene[0], source)
    before = source.read_bytes()
    output = {"same": source, "symlink": tmp_path / "sym.tif", "hardlink": tmp_path / "hard.tif"}[link]
    if link == "symlink":
        output.symlink_to(source)
    elif link == "hardlink":
        os.link(source, output)
    result = cli("preprocess", str(source), "-o", str(output), "--bands", "1", "--events", "none")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "is the input raster" in lines[0], result.stderr
    assert source.read_bytes() == before


def test_dem_given_as_output_is_refused(cli, rpc_raster, tmp_path):  # noqa: F811
    dem = write_dem(tmp_path / "dem.tif")
    before = dem.read_bytes()
    result = cli("preprocess", str(rpc_raster), "-o", str(dem), "--ortho", "--dem", str(dem), "--events", "none")
    assert result.returncode == 2 and "is the --dem" in result.stderr and dem.read_bytes() == before


@pytest.mark.parametrize("args", [["--ortho", "--height", "0"], ["--dst-crs", "EPSG:32631"]])
def test_warp_with_no_valid_pixel_is_not_published(cli, rpc_raster, tmp_path, args):  # noqa: F811
    """An image that is nodata everywhere: GDAL warps it without complaint into an empty COG."""
    source = tmp_path / "empty.tif"
    shutil.copy(rpc_raster, source)
    with rasterio.open(source, "r+") as ds:
        ds.write(np.zeros((ds.count, ds.height, ds.width), "uint16"))
        if "--dst-crs" in args:
            ds.crs, ds.transform = "EPSG:4326", from_bounds(*RPC_BOUNDS, ds.width, ds.height)
    refused(cli, str(source), *args, output=tmp_path / "o.tif", message="holds no valid pixel")
