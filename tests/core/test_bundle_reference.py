"""A bundle against its run directory as the reference: the same scores raster and detections on a scene that is
not a multiple of the tile, with nodata and a geofence; the packaged chain is exactly ``apply_chain`` by hand.
Plus what a bundle build refuses before its slow export, and the Dockerfile of a bundle predict cannot run."""

from __future__ import annotations

import time

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from aifactory.bundle.docker import dockerfile
from aifactory.bundle.format import BundleMeta, InputCheck, OnnxInfo, Verification, read_meta
from aifactory.cli import main
from aifactory.datasets.format import Normalization
from aifactory.postprocess import apply_chain
from aifactory.prediction import predict
from test_bundle_support import bundle_dir, predict_scene, trained_run  # noqa: F401  (session fixtures)


def fence_of(raster, path):
    """A slanted quadrilateral over part of the raster (tiles outside it, borders across tiles)."""
    with rasterio.open(raster) as ds:
        b, crs = ds.bounds, ds.crs
    w, h = b.right - b.left, b.top - b.bottom
    poly = shapely.Polygon([(b.left + 0.1 * w, b.bottom + 0.1 * h), (b.left + 0.8 * w, b.bottom + 0.05 * h),
                            (b.left + 0.9 * w, b.top - 0.2 * h), (b.left + 0.2 * w, b.top - 0.1 * h)])
    gpd.GeoDataFrame(geometry=[poly], crs=crs).to_file(path)
    return path


def same_objects(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> None:
    """One to one: every object of ``a`` has a same-class partner in ``b`` with IoU >= 0.99 and the same score."""
    assert len(a) == len(b)
    for geom, cls, score in zip(a.geometry, a["class"], a["score"], strict=True):
        cand = b[b["class"] == cls]
        iou = shapely.area(shapely.intersection(geom, cand.geometry.array)) / shapely.area(
            shapely.union(geom, cand.geometry.array))
        best = int(np.argmax(iou))
        assert iou[best] >= 0.99 and abs(cand["score"].iloc[best] - score) <= 2 / 255, (cls, score, iou[best])


def test_bundle_reproduces_the_run_inside_a_geofence(bundle_dir, trained_run, predict_scene, tmp_path):  # noqa: F811
    raster, _ = predict_scene
    fence = fence_of(raster, tmp_path / "fence.gpkg")
    zip_path = bundle_dir / "model.zip"
    ref = predict([trained_run], raster, tmp_path / "run", geofence=fence, precision="fp32")
    got = predict([zip_path], raster, tmp_path / "zip", geofence=fence)
    with rasterio.open(ref.scores) as a, rasterio.open(got.scores) as b:
        assert (a.width % 128, a.height % 128) != (0, 0) and a.profile == b.profile
        sa, sb = a.read(masked=True), b.read(masked=True)
    assert 0.2 < sa.mask.mean() < 0.8 and (sa.mask == sb.mask).all()  # the geofence and nodata, alike
    assert np.abs(sa.filled(0).astype(int) - sb.filled(0).astype(int)).max() <= 1
    raw_ref = gpd.read_file(ref.detections, layer="detections")
    raw = gpd.read_file(got.detections, layer="raw_detections")
    same_objects(raw_ref, raw)
    final = gpd.read_file(got.detections, layer="detections")
    by_hand = apply_chain(raw_ref, read_meta(zip_path).postprocess)
    assert 0 < len(final) < len(raw)
    same_objects(by_hand, final)


def test_a_folder_named_like_the_zip_is_refused_before_the_export(trained_run, predict_scene, tmp_path,  # noqa: F811
                                                                 capsys):
    raster, _ = predict_scene
    (tmp_path / "model.zip").mkdir()
    start = time.monotonic()
    code = main(["bundle", str(trained_run), "-o", str(tmp_path / "model.zip"), "--sample", str(raster),
                 "--events", "none"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is a folder" in err, err
    assert time.monotonic() - start < 3  # no ONNX export first (≈ 10 s)
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]


def meta_of(task: str) -> BundleMeta:
    check = InputCheck(source="random", tiles=1, outputs=[])
    return BundleMeta(created="now", aifactory="0", run="r", classes=["background", "car"], hierarchy={"": ["car"]},
                      model=OnnxInfo(sha256="0" * 64, opset=18, outputs=["heatmap"], architecture="centernet",
                                     task=task),
                      bands=[1], normalization=Normalization(mean=[0.0], std=[1.0]), tile_size=64, overlap=8,
                      verification=Verification(tolerance_rel=1e-4, random=check, real=check, torch="", onnxruntime=""))


def test_dockerfile_of_a_bundle_predict_cannot_run_says_so():
    assert "WARNING" not in dockerfile(meta_of("segmentation"))
    text = dockerfile(meta_of("heatmap"))
    assert text.startswith("# WARNING: this image cannot predict") and "heatmap model" in text
    assert "\nFROM python:" in text
