"""Pre-processing: band composition, 16 → 8 bit with a reusable sidecar, reprojection, RPC orthorectification."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
from aifactory.preprocess.process import PreprocessOptions, preprocess_raster
from aifactory.preprocess.stretch import load_stretch
from rasterio.rpc import RPC
from rasterio.warp import transform_bounds

RPC_TERMS = ["1", "L", "P", "H", "LP", "LH", "PH", "L2", "P2", "H2", "PLH", "L3", "LP2", "LH2", "L2P", "P3", "PH2",
             "L2H", "P2H", "H3"]


def coefficients(**terms: float) -> list[float]:
    values = [0.0] * 20
    for name, value in terms.items():
        values[RPC_TERMS.index(name.lstrip("_"))] = value
    return values


@pytest.fixture()
def rpc_raster(tmp_path):
    """A 200 × 160 raster without geotransform whose made-up RPCs map it onto 0.02° × 0.02° around (3 E, 45 N).

    sample = f(lon, height), line = f(lat): north up; a height of 1000 m moves the ground by -0.001° in lon.
    """
    width, height = 200, 160
    rpc = RPC(height_off=0, height_scale=500, lat_off=45.0, lat_scale=0.01, long_off=3.0, long_scale=0.01,
              line_off=height / 2, line_scale=height / 2, samp_off=width / 2, samp_scale=width / 2,
              line_num_coeff=coefficients(P=-1.0), line_den_coeff=coefficients(_1=1.0),
              samp_num_coeff=coefficients(L=1.0, H=0.05), samp_den_coeff=coefficients(_1=1.0))
    data = np.random.default_rng(0).integers(100, 4000, (3, height, width)).astype("uint16")
    data[:, :, :20] = 0  # a nodata stripe on the west edge
    path = tmp_path / "rpc.tif"
    with warnings.catch_warnings():  # no geotransform until the RPCs are attached: expected
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        ds = rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint16",
                           nodata=0)
    with ds:
        ds.write(data)
        ds.rpcs = rpc
    return path


def test_to_8bit_keeps_georeferencing_and_yields_uint8(cli, small_scene, tmp_path):
    out = tmp_path / "rgb8.tif"
    result = cli("preprocess", str(small_scene[0]), "-o", str(out), "--bands", "3,2,1", "--to-8bit",
                 "--percentiles", "2,98", "--events", "none")
    assert result.returncode == 0, result.stderr
    with rasterio.open(out) as dst, rasterio.open(small_scene[0]) as src:
        assert dst.dtypes == ("uint8",) * 3 and dst.count == 3
        assert dst.crs == src.crs and dst.transform == src.transform and (dst.width, dst.height) == (640, 480)
        assert dst.nodata == 0
        out_data, valid = dst.read(), dst.dataset_mask() > 0
        src_valid = src.dataset_mask() > 0
        red = src.read(3).astype("float64")
    assert (valid == src_valid).all()  # nodata propagated
    assert out_data[:, valid].min() >= 1
    stretch = json.loads((tmp_path / "rgb8.stretch.json").read_text())
    assert stretch["bands"] == [3, 2, 1] and stretch["percentiles"] == [2.0, 98.0]
    low, high = np.percentile(red[src_valid], [2, 98])
    assert stretch["low"][0] == pytest.approx(low, rel=0.02) and stretch["high"][0] == pytest.approx(high, rel=0.02)
    # output band 1 is the source's band 3 stretched between the sidecar's low and high
    expected = np.rint(np.clip((red - stretch["low"][0]) / (stretch["high"][0] - stretch["low"][0]), 0, 1) * 254 + 1)
    assert np.abs(out_data[0][valid] - expected[valid]).max() <= 1


def test_stretch_sidecar_is_reused(small_scene, tmp_path):
    first = preprocess_raster(small_scene[0], tmp_path / "a.tif", PreprocessOptions(to_8bit=True, bands=[1, 2]))
    stretch = load_stretch(first["stretch"])
    stretch_file = tmp_path / "fixed.stretch.json"
    stretch_file.write_text(stretch.model_copy(update={"low": [0.0, 0.0], "high": [10000.0, 10000.0]})
                            .model_dump_json())
    preprocess_raster(small_scene[0], tmp_path / "b.tif",
                      PreprocessOptions(to_8bit=True, bands=[1, 2], stretch=stretch_file))
    with rasterio.open(tmp_path / "b.tif") as ds, rasterio.open(small_scene[0]) as src:
        expected = np.rint(np.clip(src.read(1) / 10000.0, 0, 1) * 254 + 1)
        valid = src.dataset_mask() > 0
        assert (ds.read(1)[valid] == expected[valid]).all()


def test_reproject_and_resample(small_scene, tmp_path):
    out = tmp_path / "wgs84.tif"
    preprocess_raster(small_scene[0], out, PreprocessOptions(dst_crs="EPSG:4326"))
    half = tmp_path / "half.tif"
    preprocess_raster(small_scene[0], half, PreprocessOptions(resolution=1.0, resampling="average"))
    with rasterio.open(small_scene[0]) as src, rasterio.open(out) as dst, rasterio.open(half) as low:
        assert dst.crs.to_epsg() == 4326 and dst.dtypes[0] == "uint16"
        expected = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        assert np.allclose(dst.bounds, expected, atol=2 * dst.res[0])
        assert low.res == (1.0, 1.0) and (low.width, low.height) == (320, 240) and low.crs == src.crs
        block = src.read(1, window=((200, 202), (400, 402))).astype(float).mean()
        assert low.read(1, window=((100, 101), (200, 201)))[0, 0] == pytest.approx(block, abs=1)


def test_rpc_orthorectification_with_height_and_dem(cli, rpc_raster, tmp_path):
    at_zero, at_1000 = tmp_path / "h0.tif", tmp_path / "h1000.tif"
    for out, height in ((at_zero, "0"), (at_1000, "1000")):
        result = cli("preprocess", str(rpc_raster), "-o", str(out), "--ortho", "--height", height,
                     "--events", "none")
        assert result.returncode == 0, result.stderr
    dem = tmp_path / "dem.tif"
    with rasterio.open(dem, "w", driver="GTiff", width=40, height=40, count=1, dtype="float32", crs="EPSG:4326",
                       transform=rasterio.transform.from_bounds(2.95, 44.95, 3.05, 45.05, 40, 40)) as ds:
        ds.write(np.full((1, 40, 40), 1000, "float32"))
    with_dem = tmp_path / "dem_ortho.tif"
    preprocess_raster(rpc_raster, with_dem, PreprocessOptions(ortho=True, dem=dem))
    with rasterio.open(at_zero) as h0, rasterio.open(at_1000) as h1, rasterio.open(with_dem) as hd:
        assert h0.crs.to_epsg() == 4326
        assert h0.bounds.left == pytest.approx(2.99, abs=3e-4) and h0.bounds.right == pytest.approx(3.01, abs=3e-4)
        assert h0.bounds.bottom == pytest.approx(44.99, abs=3e-4) and h0.bounds.top == pytest.approx(45.01, abs=3e-4)
        assert h1.bounds.left - h0.bounds.left == pytest.approx(-0.001, abs=1e-4)  # the height term of the RPCs
        assert hd.bounds.left == pytest.approx(h1.bounds.left, abs=1e-6)
        # the nodata stripe (first 20 columns ≈ 0.002°) stays nodata after orthorectification
        valid = h0.dataset_mask() > 0
        stripe_cols = int(0.0018 / h0.res[0])
        assert not valid[:, :stripe_cols].any() and valid[:, stripe_cols + 3:].mean() > 0.95
        assert np.allclose(h1.read(1), hd.read(1))


@pytest.mark.parametrize("args, message", [
    (["--ortho", "--height", "0"], "has no RPCs"),
    (["--bands", "9"], "--bands"),
    (["--dst-crs", "EPSG:999999"], "--dst-crs: not a CRS: crs not found"),
    (["--to-8bit", "--percentiles", "98,2"], "--percentiles"),
])
def test_bad_preprocess_inputs_exit_2(cli, small_scene, tmp_path, args, message):
    out = tmp_path / "out.tif"
    result = cli("preprocess", str(small_scene[0]), "-o", str(out), *args, "--events", "none")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".out*"))
