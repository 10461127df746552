"""Pre-processing values against references: numpy for the 8-bit stretch, the GDAL command line for warps.

The stretch's statistics and mapping are recomputed with numpy on the full array; warped and orthorectified
pixels are compared with ``gdalwarp`` (the same warper, another process) on the same output grid.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings

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


def per_band_nodata_vrt(path, tif, bands: list[int], nodatas: list[float | None]):
    """A VRT of ``tif``'s ``bands`` in which each band has its own nodata (a GeoTIFF holds one for all bands)."""
    with rasterio.open(tif) as ds:
        width, height, crs, transform, dtype = ds.width, ds.height, ds.crs, ds.transform, ds.dtypes[0]
    kind = {"uint8": "Byte", "uint16": "UInt16", "float32": "Float32"}[dtype]
    parts = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{crs.to_wkt()}</SRS>'
             f'<GeoTransform>{", ".join(repr(v) for v in transform.to_gdal())}</GeoTransform>']
    for index, (band, nodata) in enumerate(zip(bands, nodatas, strict=True), start=1):
        value = "" if nodata is None else f"<NoDataValue>{nodata!r}</NoDataValue>"
        parts.append(f'<VRTRasterBand dataType="{kind}" band="{index}">{value}<SimpleSource>'
                     f'<SourceFilename relativeToVRT="0">{tif}</SourceFilename><SourceBand>{band}</SourceBand>'
                     '</SimpleSource></VRTRasterBand>')
    path.write_text("".join(parts) + "</VRTDataset>")
    return path


def rank_error(data: np.ndarray, value: float, percentile: float) -> float:
    """How far (in %) the rank of ``value`` among ``data`` is from ``percentile``: 0 when ``value`` is a
    ``percentile`` % percentile of ``data`` (ties count on either side)."""
    below, upto = (data < value).mean() * 100, (data <= value).mean() * 100
    return max(0.0, below - percentile, percentile - upto)


@pytest.mark.parametrize("overviews", [True, False])
def test_stretch_statistics_are_full_resolution_percentiles(tmp_path, overviews):
    """A decimated read is served from a COG's AVERAGE overviews, whose averages shrink the tails: on uint16
    noise the 2 % percentile came out at rank ≈ 0 % and the 98 % at ≈ 100 % (the stretch clipped real pixels).

    The sample is ``max_pixels`` full-resolution pixels: on independent noise the rank of a p % percentile of
    n sampled pixels is off by about sqrt(p (100 - p) / n) % (one standard error, 0.055 % here); five of them
    leave one failure in millions, for a deterministic sample that never changes anyway."""
    from aifactory.io.cog import COGWriter
    from aifactory.preprocess.stretch import compute_stretch, sample_windows

    data = np.random.default_rng(7).integers(0, 65536, (1, 1100, 1300)).astype("uint16")
    path = tmp_path / "noise.tif"
    if overviews:
        with COGWriter(path, 1300, 1100, 1, "uint16", crs="EPSG:32631",
                       transform=from_origin(500000, 5000000, 1, 1)) as writer:
            writer.write(data, rasterio.windows.Window(0, 0, 1300, 1100))
    else:
        write(path, data)
    max_pixels = 1 << 16
    with rasterio.open(path) as ds:
        assert bool(ds.overviews(1)) == overviews
        stretch = compute_stretch(ds, [1], (2.0, 98.0), max_pixels=max_pixels)
        assert compute_stretch(ds, [1], (2.0, 98.0), max_pixels=max_pixels) == stretch  # deterministic
        windows = sample_windows(ds.width, ds.height, ds.block_shapes[0], max_pixels)
    sampled = sum(int(w.width * w.height) for w in windows)
    assert max_pixels * 0.9 <= sampled <= max_pixels
    tolerance = 5 * (2 * 98 / sampled) ** 0.5
    assert rank_error(data, stretch.low[0], 2) <= tolerance, (stretch.low, np.percentile(data, 2))
    assert rank_error(data, stretch.high[0], 98) <= tolerance, (stretch.high, np.percentile(data, 98))


def test_stretch_of_a_small_valid_island(tmp_path):
    """A scene mostly nodata whose valid pixels fall between the sample windows is sampled again, every k-th
    pixel of every k-th row at full resolution, rather than refused for want of a valid pixel."""
    from aifactory.preprocess.stretch import compute_stretch

    data = np.zeros((1, 1500, 1500), dtype="uint16")
    island = np.random.default_rng(11).integers(100, 60000, (120, 120)).astype("uint16")
    data[0, 690:810, 690:810] = island
    write(tmp_path / "island.tif", data, nodata=0)
    with rasterio.open(tmp_path / "island.tif") as ds:
        stretch = compute_stretch(ds, [1], (2.0, 98.0), max_pixels=1 << 16)
    sampled = (120 // 6) ** 2  # the step is 6 px
    tolerance = 5 * (2 * 98 / sampled) ** 0.5
    assert rank_error(island, stretch.low[0], 2) <= tolerance and rank_error(island, stretch.high[0], 98) <= tolerance


def test_stretch_sample_windows_rule():
    """The rule is fixed and documented: the whole raster up to ``max_pixels``, else windows on an even grid over
    the whole scene, inside the raster, each inside one block, at most ``max_pixels`` pixels in all."""
    from aifactory.preprocess.stretch import SAMPLE_SIDE, sample_windows

    assert sample_windows(100, 50, (50, 100), 5000) == [rasterio.windows.Window(0, 0, 100, 50)]
    for width, height, block in ((10000, 10000, (512, 512)), (30000, 700, (1, 30000)), (5, 400000, (8, 5))):
        windows = sample_windows(width, height, block, 1 << 20)
        assert sum(int(w.width * w.height) for w in windows) <= 1 << 20
        assert all(w.col_off >= 0 and w.col_off + w.width <= width and w.row_off >= 0
                   and w.row_off + w.height <= height for w in windows)
        if block[0] >= SAMPLE_SIDE:
            assert all(w.row_off // block[0] == (w.row_off + w.height - 1) // block[0] for w in windows)
        rows = sorted({w.row_off for w in windows})
        cols = sorted({w.col_off for w in windows})
        assert rows[0] < height / len(rows) and rows[-1] + windows[0].height > height * (1 - 1 / len(rows))
        assert cols[0] < width / len(cols) and cols[-1] + windows[0].width > width * (1 - 1 / len(cols))
    square = sample_windows(10000, 10000, (512, 512), 1 << 20)
    assert len(square) == 256 and {(w.width, w.height) for w in square} == {(SAMPLE_SIDE, SAMPLE_SIDE)}


def three_band_holes(tmp_path):
    """Three uint16 bands, each with its own hole; bands 1 and 2 use nodata 0, band 3 nodata 9999 (a VRT)."""
    y, x = np.mgrid[0:90, 0:80]
    data = np.stack([x * 7 + y * 3 + 10, (x * y) % 4000 + 1, x * 11 + 100]).astype("uint16")
    data[0, 10:30, 5:25] = 0
    data[1, 40:60, 30:50] = 0
    data[2, 60:85, 50:75] = 9999
    tif = write(tmp_path / "three.tif", data)
    return per_band_nodata_vrt(tmp_path / "three.vrt", tif, [1, 2, 3], [0, 0, 9999]), data


@needs_gdalwarp
@pytest.mark.parametrize("resampling", ["nearest", "bilinear", "cubic"])
def test_warp_keeps_each_bands_own_nodata(tmp_path, resampling):
    """rasterio gives the warper the first band's nodata for all bands: band 3's nodata (9999) came out as a
    valid 9999 under the output's nodata 0. Each band's nodata must stay nodata in that band only: band 3's hole
    is 0 where bands 1 and 2 are valid. Reference: gdalwarp of each nodata group on its own (UNIFIED_SRC_NODATA=NO
    in a group: each band its own nodata; warped together, gdalwarp fills band 3's hole edge from its neighbours
    because bands 1 and 2 are valid there, which a band warped alone does not)."""
    vrt, _ = three_band_holes(tmp_path)
    out = tmp_path / "out.tif"
    preprocess_raster(vrt, out, PreprocessOptions(dst_crs="EPSG:3857", resolution=17.0, resampling=resampling))
    with rasterio.open(out) as ds:
        pixels, valid = ds.read(), ds.dataset_mask() > 0
        assert ds.nodata == 0
    assert not (pixels[2] == 9999).any()
    hole3 = (pixels[2] == 0) & valid  # band 3 nodata where the others are valid
    assert hole3.sum() > 100 and (pixels[:2, hole3] > 0).all()
    first = per_band_nodata_vrt(tmp_path / "b12.vrt", tmp_path / "three.tif", [1, 2], [0, 0])
    third = per_band_nodata_vrt(tmp_path / "b3.vrt", tmp_path / "three.tif", [3], [9999])
    common = ("-r", resampling, "-dstnodata", "0", "-wo", "UNIFIED_SRC_NODATA=NO")
    assert (pixels[:2] == gdalwarp_like(out, first, tmp_path / "ref12.tif", *common)).all()
    assert (pixels[2:] == gdalwarp_like(out, third, tmp_path / "ref3.tif", *common)).all()


def test_a_bands_own_nodata_without_warp_and_in_the_stretch(tmp_path):
    """Without a warp band 3's nodata 9999 stayed 9999 under the output's nodata 0 (valid); in the stretch it
    pulled band 3's high percentile to 9999 and became 255."""
    vrt, data = three_band_holes(tmp_path)
    preprocess_raster(vrt, tmp_path / "same.tif", PreprocessOptions())
    with rasterio.open(tmp_path / "same.tif") as ds:
        pixels = ds.read()
    hole3 = data[2] == 9999
    assert (pixels[2, hole3] == 0).all() and (pixels[2, ~hole3] == data[2, ~hole3]).all()
    assert (pixels[:2] == data[:2]).all()
    summary = preprocess_raster(vrt, tmp_path / "eight.tif", PreprocessOptions(to_8bit=True))
    stretch = load_stretch(summary["stretch"])
    assert np.allclose([stretch.low[2], stretch.high[2]], np.percentile(data[2][~hole3], [2, 98]))
    with rasterio.open(tmp_path / "eight.tif") as ds:
        eight = ds.read(3)
    assert (eight[hole3] == 0).all() and eight[~hole3].min() >= 1


@needs_gdalwarp
@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("resampling", ["nearest", "cubic"])
def test_warp_without_nodata_keeps_valid_zeros(tmp_path, dtype, resampling):
    """A source without nodata: 0 is a valid value (dark water). The warp wrote nodata 0, so every valid 0 became
    nodata (half the image here). Validity must come from the warp alone, in a mask: compared with
    ``gdalwarp -dstalpha``, the values and the alpha."""
    from aifactory.io.raster import read_valid_mask

    data = np.zeros((2, 90, 80), dtype=dtype)
    data[:, :, 40:] = np.random.default_rng(8).integers(1, 200, (2, 90, 40))
    source = write(tmp_path / "dark.tif", data)
    out = tmp_path / "out.tif"
    preprocess_raster(source, out, PreprocessOptions(dst_crs="EPSG:3857", resolution=13.0, resampling=resampling))
    reference = gdalwarp_like(out, source, tmp_path / "ref.tif", "-r", resampling, "-dstalpha")
    with rasterio.open(out) as ds:
        assert ds.nodata is None
        pixels, valid = ds.read(), read_valid_mask(ds, rasterio.windows.Window(0, 0, ds.width, ds.height))
    assert (valid == (reference[2] > 0)).all() and valid.mean() > 0.8
    assert (pixels[:, valid] == reference[:2, valid]).all()
    assert ((pixels[:, valid] == 0).all(axis=0)).sum() > valid.sum() / 3  # the dark half, valid
    preprocess_raster(source, tmp_path / "eight.tif", PreprocessOptions(dst_crs="EPSG:3857", resolution=13.0,
                                                                         resampling=resampling, to_8bit=True))
    with rasterio.open(tmp_path / "eight.tif") as ds:  # 8 bits: nodata 0, the valid 0s at the low end (1)
        eight, eight_valid = ds.read(), ds.dataset_mask() > 0
    assert (eight_valid == valid).all() and (eight[:, (pixels == 0).all(axis=0) & valid] == 1).all()


@pytest.mark.parametrize("how", ["mask", "alpha"])
@pytest.mark.parametrize("warp", [False, True])
def test_a_source_mask_or_alpha_is_carried(tmp_path, how, warp):
    """A source without nodata whose validity is an internal mask or an alpha band: without a warp the output
    had neither (every pixel valid); a warp ignored the alpha band."""
    rgb = np.random.default_rng(9).integers(0, 200, (3, 60, 80)).astype("uint8")
    alpha = np.full((60, 80), 255, dtype="uint8")
    alpha[:, :30] = 0
    path = tmp_path / "src.tif"
    profile = {"driver": "GTiff", "width": 80, "height": 60, "dtype": "uint8", "crs": "EPSG:32631",
               "transform": from_origin(500000, 5000000, 10, 10)}
    if how == "alpha":
        with rasterio.open(path, "w", count=4, photometric="RGB", alpha="YES", **profile) as ds:
            ds.write(np.concatenate([rgb, alpha[None]]))
    else:
        with rasterio.open(path, "w", count=3, **profile) as ds:
            ds.write(rgb)
            ds.write_mask(alpha)
    options = {"resolution": 10.0, "resampling": "nearest"} if warp else {}
    preprocess_raster(path, tmp_path / "out.tif", PreprocessOptions(bands=[1, 2, 3], **options))
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert ds.nodata is None and ds.count == 3
        assert ((ds.dataset_mask() > 0) == (alpha > 0)).all()
        assert (ds.read()[:, alpha > 0] == rgb[:, alpha > 0]).all()


def test_a_fourth_byte_band_is_not_alpha(tmp_path):
    """GDAL makes the 4th band of a 4-band byte GeoTIFF an alpha band: a stretched NIR band was the output's
    alpha (QGIS drew it as transparency; every read of the mask warned that nodata shadows it), and without
    nodata its zeros were invalid pixels."""
    data = np.random.default_rng(10).integers(0, 256, (4, 60, 80)).astype("uint8")
    data[3, :20] = 0  # a valid 0 in NIR
    source = tmp_path / "rgbn.tif"
    with rasterio.open(source, "w", driver="GTiff", width=80, height=60, count=4, dtype="uint8", crs="EPSG:32631",
                       transform=from_origin(500000, 5000000, 10, 10), alpha="UNSPECIFIED") as ds:
        ds.write(data)
    preprocess_raster(source, tmp_path / "out.tif", PreprocessOptions())
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert rasterio.enums.ColorInterp.alpha not in ds.colorinterp
        assert (ds.dataset_mask() == 255).all() and (ds.read() == data).all()
    write(tmp_path / "rgbn16.tif", data.astype("uint16") + 1, nodata=0)
    preprocess_raster(tmp_path / "rgbn16.tif", tmp_path / "eight.tif", PreprocessOptions(to_8bit=True))
    with rasterio.open(tmp_path / "eight.tif") as ds, warnings.catch_warnings():
        warnings.simplefilter("error")  # NodataShadowWarning: nodata shadowing the alpha band
        assert rasterio.enums.ColorInterp.alpha not in ds.colorinterp and (ds.dataset_mask() == 255).all()
