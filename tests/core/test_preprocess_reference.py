"""Pre-processing values against references: numpy for the 8-bit stretch, the GDAL command line for warps.

The stretch's statistics and mapping are recomputed with numpy on the full array; warped and orthorectified
pixels are compared with ``gdalwarp`` (the same warper, another process) on the same output grid.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import rasterio
from aifactory.errors import InputError
from aifactory.preprocess.process import PreprocessOptions, preprocess_raster
from aifactory.preprocess.stretch import load_stretch
from rasterio.transform import from_origin
from test_preprocess import rpc_raster  # noqa: F401  (fixture)

needs_gdalwarp = pytest.mark.skipif(shutil.which("gdalwarp") is None, reason="GDAL command line not installed")


def write(path, data: np.ndarray, nodata: float | None = None, res: float = 10.0):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs="EPSG:32631", transform=from_origin(500000, 5000000, res, res),
                       nodata=nodata) as ds:
        ds.write(data)
    return path


def numpy_stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.rint(np.clip((values.astype("float64") - low) / max(high - low, 1e-12), 0, 1) * 254 + 1)


def gdalwarp_like(out, source, reference, *extra: str) -> np.ndarray:
    """``gdalwarp`` of ``source`` onto the grid of ``out``; its pixels."""
    with rasterio.open(out) as ds:
        t, w, h, crs = ds.transform, ds.width, ds.height, ds.crs
    subprocess.run(["gdalwarp", "-q", "-overwrite", *extra, "-t_srs", crs.to_wkt(), "-te", repr(t.c),
                    repr(t.f + t.e * h), repr(t.c + t.a * w), repr(t.f), "-ts", str(w), str(h), str(source),
                    str(reference)], check=True, capture_output=True)
    with rasterio.open(reference) as ds:
        return ds.read()


def test_stretch_matches_numpy_on_skewed_and_constant_bands(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.lognormal(5, 1.5, (3, 120, 150)).clip(1, 65535).astype("uint16")
    data[1] = 777  # constant band: low == high, every pixel still valid (1), none becomes nodata (0)
    write(tmp_path / "skew.tif", data)
    summary = preprocess_raster(tmp_path / "skew.tif", tmp_path / "out.tif", PreprocessOptions(to_8bit=True))
    stretch = load_stretch(summary["stretch"])
    low, high = np.percentile(data.reshape(3, -1).astype("float64"), [2, 98], axis=1)
    assert np.allclose(stretch.low, low) and np.allclose(stretch.high, high)
    with rasterio.open(tmp_path / "out.tif") as ds:
        out = ds.read()
    for band in range(3):
        assert (out[band] == numpy_stretch(data[band], low[band], high[band])).all()
    assert out.min() >= 1


def test_stretch_is_exact_in_float64(tmp_path):
    """float32 arithmetic moved 1e8-offset values by up to 8 units (several output levels)."""
    values = (1e8 + np.arange(100 * 128, dtype="float64") * 0.37).reshape(1, 100, 128)
    write(tmp_path / "f64.tif", values)
    summary = preprocess_raster(tmp_path / "f64.tif", tmp_path / "out.tif", PreprocessOptions(to_8bit=True))
    stretch = load_stretch(summary["stretch"])
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert (ds.read(1) == numpy_stretch(values[0], stretch.low[0], stretch.high[0])).all()


def test_stretch_leaves_out_a_bands_own_nodata(tmp_path):
    """Band 1 is nodata on the west where band 2 is valid: the pixels stay in the dataset mask, but band 1's
    statistics must not see its nodata value, and its nodata must stay 0 (not become the valid value 1)."""
    data = np.random.default_rng(1).integers(1000, 5000, (2, 80, 100)).astype("uint16")
    data[0, :, :30] = 0
    write(tmp_path / "nd.tif", data, nodata=0)
    summary = preprocess_raster(tmp_path / "nd.tif", tmp_path / "out.tif", PreprocessOptions(to_8bit=True))
    stretch = load_stretch(summary["stretch"])
    assert np.allclose([stretch.low[0], stretch.high[0]], np.percentile(data[0][:, 30:], [2, 98]))
    with rasterio.open(tmp_path / "out.tif") as ds:
        out = ds.read()
    assert (out[0, :, :30] == 0).all() and out[0, :, 30:].min() >= 1 and out[1].min() >= 1


def test_stretch_of_a_float_band_with_nan_and_no_nodata(tmp_path):
    """NaN was a pydantic traceback (NaN percentiles); it is left out of the statistics and written as 0."""
    data = np.random.default_rng(2).normal(0, 1, (1, 60, 60)).astype("float32")
    data[0, :10] = np.nan
    write(tmp_path / "nan.tif", data)
    summary = preprocess_raster(tmp_path / "nan.tif", tmp_path / "out.tif", PreprocessOptions(to_8bit=True))
    stretch = load_stretch(summary["stretch"])
    assert np.allclose([stretch.low[0], stretch.high[0]], np.percentile(data[0, 10:], [2, 98]))
    with rasterio.open(tmp_path / "out.tif") as ds:
        out = ds.read(1)
    assert (out[:10] == 0).all() and out[10:].min() >= 1
    data[0] = np.nan
    write(tmp_path / "allnan.tif", data)
    with pytest.raises(InputError, match="band 1 has no valid pixel"):
        preprocess_raster(tmp_path / "allnan.tif", tmp_path / "none.tif", PreprocessOptions(to_8bit=True))


def test_reused_stretch_keeps_its_bands(cli, tmp_path):
    data = np.random.default_rng(3).integers(1, 5000, (4, 40, 50)).astype("uint16") + \
        (np.arange(4, dtype="uint16") * 10000)[:, None, None]
    source = write(tmp_path / "four.tif", data)
    first = preprocess_raster(source, tmp_path / "a.tif", PreprocessOptions(to_8bit=True, bands=[3, 1]))
    # without --bands, a reused stretch applies to its own bands, in its order
    preprocess_raster(source, tmp_path / "b.tif", PreprocessOptions(to_8bit=True, stretch=first["stretch"]))
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert b.count == 2 and (a.read() == b.read()).all()
    bad = tmp_path / "bad.stretch.json"
    bad.write_text(load_stretch(first["stretch"]).model_dump_json().replace('"high":[', '"high":[1,'))
    for args, message in ((["--bands", "1,3"], "statistics of bands 3,1, --bands selects 1,3"),
                          (["--stretch", str(bad)], "one low and one high per band")):
        out = tmp_path / "c.tif"
        stretch = [] if "--stretch" in args else ["--stretch", first["stretch"]]
        result = cli("preprocess", str(source), "-o", str(out), "--to-8bit", *stretch, *args, "--events", "none")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
        assert not out.exists()


def test_warp_keeps_the_selected_bands(tmp_path):
    """Selecting bands other than 1..n with a warp wrote source band b into output band b (or failed with
    'Invalid destination shape'): each output band must be its own source band, duplicates included."""
    data = np.random.default_rng(4).integers(1, 5000, (6, 50, 60)).astype("uint16") + \
        (np.arange(6, dtype="uint16") * 10000)[:, None, None]
    source = write(tmp_path / "six.tif", data, nodata=0)
    options = {"resolution": 20.0, "resampling": "nearest"}
    preprocess_raster(source, tmp_path / "all.tif", PreprocessOptions(**options))
    with rasterio.open(tmp_path / "all.tif") as ds:
        every = ds.read()
    for bands in ([4, 2, 2], [6], [5, 1]):
        preprocess_raster(source, tmp_path / "some.tif", PreprocessOptions(bands=bands, **options))
        with rasterio.open(tmp_path / "some.tif") as ds:
            assert (ds.read() == every[[b - 1 for b in bands]]).all(), bands


@needs_gdalwarp
@pytest.mark.parametrize("resampling", ["nearest", "bilinear", "cubic", "average"])
def test_warp_matches_gdalwarp(tmp_path, resampling):
    y, x = np.mgrid[0:90, 0:80]
    data = np.stack([x * 7 + y * 3 + 10, (x * y) % 4000 + 1]).astype("uint16")
    data[:, 40:50, 20:35] = 0  # a nodata hole
    source = write(tmp_path / "src.tif", data, nodata=0)
    out = tmp_path / "out.tif"
    preprocess_raster(source, out, PreprocessOptions(dst_crs="EPSG:3857", resolution=17.0, resampling=resampling))
    reference = gdalwarp_like(out, source, tmp_path / "ref.tif", "-r", resampling)
    with rasterio.open(out) as ds:
        assert ds.dtypes == ("uint16", "uint16") and ds.nodata == 0
        assert (ds.read() == reference).all()


@needs_gdalwarp
def test_orthorectification_matches_gdalwarp_rpc(rpc_raster, tmp_path):  # noqa: F811
    dem = tmp_path / "dem.tif"
    with rasterio.open(dem, "w", driver="GTiff", width=40, height=40, count=1, dtype="float32", crs="EPSG:4326",
                       transform=rasterio.transform.from_bounds(2.95, 44.95, 3.05, 45.05, 40, 40)) as ds:
        yy, xx = np.mgrid[0:40, 0:40]
        ds.write((xx * 30 + yy * 10).astype("float32")[None])
    for options, to in ((PreprocessOptions(ortho=True, height=250.0), "RPC_HEIGHT=250"),
                        (PreprocessOptions(ortho=True, dem=dem, resampling="cubic"), f"RPC_DEM={dem}")):
        out = tmp_path / "ortho.tif"
        preprocess_raster(rpc_raster, out, options)
        reference = gdalwarp_like(out, rpc_raster, tmp_path / "ref.tif", "-rpc", "-to", to,
                                  "-r", options.resampling)
        with rasterio.open(out) as ds:
            pixels = ds.read()
        assert (pixels != 0).mean() > 0.5 and (pixels == reference).all()
