"""Reports: a self-contained HTML whose images exist next to it, thumbnails over georeferenced and
pixel-space imagery, pixel reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import geopandas as gpd
import matplotlib.image
import numpy as np
import pytest
import rasterio
import shapely
from aifactory.evaluation.objects import evaluate_objects
from aifactory.evaluation.pixels import PixelResult
from aifactory.evaluation.report import write_report


def jittered(truth: gpd.GeoDataFrame, seed: int = 0) -> gpd.GeoDataFrame:
    """Predictions: most truth objects shifted a little, a few dropped, a few false ones."""
    rng = np.random.default_rng(seed)
    keep = truth.iloc[3:]
    geoms = [shapely.affinity.translate(g, *rng.normal(0, 0.3, 2)) for g in keep.geometry]
    false = [shapely.affinity.translate(g, 15, 15) for g in truth.geometry.iloc[:4]]
    return gpd.GeoDataFrame({"class": [*keep["class"], *truth["class"].iloc[:4]],
                             "score": [*rng.uniform(0.5, 1, len(keep)), *rng.uniform(0.6, 0.9, 4)]},
                            geometry=geoms + false, crs=truth.crs)


def check_html(path: Path) -> list[str]:
    """The report's images, asserting each exists and decodes."""
    html = path.read_text(encoding="utf-8")
    images = re.findall(r"<img src='([^']+)'", html)
    for name in images:
        assert "/" not in name  # relative, next to the HTML
        pixels = matplotlib.image.imread(path.parent / name)
        assert pixels.shape[0] > 50 and pixels.std() > 0  # a real, non-blank picture
    return images


def test_object_report_with_imagery(small_scene: tuple[Path, Path], tmp_path: Path, monkeypatch) -> None:
    from aifactory.evaluation import plots

    raster, truth_path = small_scene
    truth = gpd.read_file(truth_path)
    result = evaluate_objects(jittered(truth), truth)
    assert result.overall["fp"] >= 4 and result.overall["fn"] >= 3
    legends = {}
    save = plots.save
    monkeypatch.setattr(plots, "save", lambda fig, path: (legends.update({Path(path).name: [
        t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]}), save(fig, path))[1])
    html = write_report(result, tmp_path / "report", raster=raster)
    overall = result.overall  # the overview's legend says what each colour is, with its count: it is shared alone
    assert legends["overview.png"] == [f"matched truth: {overall['tp']}", f"missed truth (FN): {overall['fn']}",
                                       f"true positive: {overall['tp']}", f"false positive: {overall['fp']}"]
    images = check_html(html)
    assert {"pr_curve.png", "f1_curve.png", "confusion.png", "worst_fp.png", "worst_fn.png"} <= set(images)
    saved = json.loads((html.parent / "metrics.json").read_text())
    assert saved["overall"] == pytest.approx(result.overall)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_pixel_space_report_without_and_with_imagery(tmp_path: Path) -> None:
    image = np.zeros((3, 120, 160), dtype="uint8")
    image[:, 20:50, 30:70] = 200  # a bright object
    png = tmp_path / "drone.png"
    with rasterio.open(png, "w", driver="PNG", width=160, height=120, count=3, dtype="uint8") as ds:
        ds.write(image)
    truth = gpd.GeoDataFrame({"class": ["roof", "roof"]}, geometry=[shapely.box(30, 20, 70, 50),
                                                                   shapely.box(100, 80, 120, 100)])
    pred = gpd.GeoDataFrame({"class": ["roof", "roof"], "score": [0.9, 0.8]},
                            geometry=[shapely.box(31, 20, 70, 50), shapely.box(5, 90, 25, 110)])
    result = evaluate_objects(pred, truth)
    assert (result.overall["tp"], result.overall["fp"], result.overall["fn"]) == (1, 1, 1)
    check_html(write_report(result, tmp_path / "bare"))
    images = check_html(write_report(result, tmp_path / "over", raster=png))
    assert "worst_fn.png" in images


def test_pixel_report(tmp_path: Path) -> None:
    result = PixelResult(["background", "a"], np.array([[90, 5], [3, 12]]))
    images = check_html(write_report(result, tmp_path / "pix"))
    assert set(images) == {"confusion.png", "iou.png"}
