"""Pixel metrics: streamed windows give the confusion matrix of a whole-array computation; class rasters
against truth rasters by hand; nodata left out; unusable inputs refused with one line."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from aifactory.errors import InputError
from aifactory.evaluation.pixels import evaluate_pixels
from aifactory.io.cog import COGWriter
from aifactory.io.raster import raster_info
from rasterio.features import rasterize
from rasterio.windows import Window


def _write(path: Path, array: np.ndarray, like: Path | None = None, nodata: float | None = None,
           descriptions: list[str] | None = None) -> Path:
    info = raster_info(like) if like is not None else None
    array = array if array.ndim == 3 else array[np.newaxis]
    with COGWriter(path, array.shape[2], array.shape[1], array.shape[0], str(array.dtype),
                   crs=info.crs if info else None, transform=info.transform if info else None, nodata=nodata,
                   band_descriptions=descriptions, blocksize=128) as writer:
        writer.write(array, Window(0, 0, array.shape[2], array.shape[1]))
    return path


@pytest.fixture(scope="module")
def scores_case(small_scene: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    """Scores made from the truth, corrupted in known places: a block called 'tree' everywhere, a shifted
    building band, a low-confidence strip, and a not-predicted corner."""
    raster, truth_path = small_scene
    truth = gpd.read_file(truth_path)
    info = raster_info(raster)
    classes = sorted(truth["class"].unique())
    shape = (info.height, info.width)
    truth_index = np.zeros(shape, dtype="int64")
    bands = []
    for k, name in enumerate(classes, start=1):
        burned = rasterize(truth[truth["class"] == name].geometry, out_shape=shape, transform=info.transform) > 0
        truth_index[burned] = k
        bands.append(np.where(burned, 220, 10).astype("uint8"))
    scores = np.stack(bands)
    scores[classes.index("building")] = np.roll(scores[classes.index("building")], 3, axis=1)
    scores[classes.index("vegetation/tree"), 100:160, 200:300] = 240
    scores[:, 300:310, :] = 60  # low confidence: 60 < 255 − 3 × 60, background by the implied rule
    path = _write(tmp_path_factory.mktemp("pix") / "scores.tif", scores, like=raster, descriptions=classes)
    return path, truth_path, truth_index, scores, classes


def _reference(truth_index: np.ndarray, scores: np.ndarray, valid: np.ndarray, n: int) -> np.ndarray:
    best = scores.max(axis=0).astype("int64")
    foreground = best > 255 - scores.sum(axis=0, dtype="int64")
    predicted = np.where(foreground, scores.argmax(axis=0) + 1, 0)
    matrix = np.zeros((n, n), dtype="int64")
    np.add.at(matrix, (truth_index[valid], predicted[valid]), 1)
    return matrix


def test_streamed_scores_equal_the_whole_array_result(scores_case) -> None:
    path, truth_path, truth_index, scores, classes = scores_case
    result = evaluate_pixels(path, truth_path, tile=128)  # 640 × 480 in 20 windows
    assert result.labels == ["background", *classes]
    expected = _reference(truth_index, scores, np.ones(truth_index.shape, bool), len(classes) + 1)
    np.testing.assert_array_equal(result.matrix, expected)
    assert result.matrix.sum() == 640 * 480
    metrics = result.per_class()
    tree = metrics["vegetation/tree"]
    assert 0 < tree["precision"] < 1 and tree["recall"] > 0.9  # the fake block costs precision only
    assert metrics["building"]["iou"] < 0.95  # the shifted band
    one_window = evaluate_pixels(path, truth_path, tile=4096)
    np.testing.assert_array_equal(one_window.matrix, result.matrix)


def test_explicit_threshold_and_truth_given_as_frame(scores_case) -> None:
    path, truth_path, _, scores, _ = scores_case
    result = evaluate_pixels(path, gpd.read_file(truth_path), threshold=0.2, tile=256)
    predicted = np.where(scores.max(axis=0) >= 0.2 * 255, scores.argmax(axis=0) + 1, 0)
    assert result.matrix[:, 0].sum() == int((predicted == 0).sum())


def test_class_raster_against_truth_raster_by_hand(tmp_path: Path) -> None:
    truth = np.zeros((64, 80), dtype="uint8")
    truth[:32, :40] = 1
    truth[32:, 40:] = 2
    truth[:4, :] = 255  # ignored
    pred = np.zeros((64, 80), dtype="uint8")
    pred[:32, :20] = 1  # half of class 1 found
    pred[32:, 40:] = 2  # all of class 2
    pred[32:, :10] = 1  # 320 false class-1 pixels on background
    pred[60:, :] = 9  # not predicted (nodata)
    pred_path = _write(tmp_path / "pred.tif", pred, nodata=9)
    truth_path = _write(tmp_path / "truth.tif", truth)
    result = evaluate_pixels(pred_path, truth_path, classes=["a", "b"])
    metrics = result.per_class()
    assert result.labels == ["background", "a", "b"]
    # class a: truth rows 4..32 × cols 0..40 = 1120 px; found rows 4..32 × cols 0..20 = 560; 280 false (rows 32..60)
    assert metrics["a"]["support"] == 1120
    assert metrics["a"]["recall"] == pytest.approx(560 / 1120)
    assert metrics["a"]["precision"] == pytest.approx(560 / (560 + 280))
    assert metrics["b"]["iou"] == pytest.approx(1.0)
    assert result.matrix.sum() == 56 * 80  # rows 4..60
    assert result.overall()["accuracy"] == pytest.approx((56 * 80 - 560 - 280) / (56 * 80))


def test_class_raster_without_names_against_several_truth_classes_is_refused(tmp_path: Path,
                                                                           small_scene: tuple[Path, Path]) -> None:
    raster, truth = small_scene
    info = raster_info(raster)
    pred_path = _write(tmp_path / "classes.tif", np.zeros((info.height, info.width), "uint8"), like=raster)
    with pytest.raises(InputError, match="class raster without class names"):
        evaluate_pixels(pred_path, truth)


def test_truth_raster_on_another_grid_is_refused(tmp_path: Path) -> None:
    pred_path = _write(tmp_path / "pred.tif", np.zeros((32, 32), "uint8"))
    truth_path = _write(tmp_path / "truth.tif", np.zeros((32, 40), "uint8"))
    with pytest.raises(InputError, match="must share the grid"):
        evaluate_pixels(pred_path, truth_path)


def test_a_contact_band_gives_its_pixels_their_best_object_class(tmp_path: Path) -> None:
    """Contact models (and boundary labels) write a last ``contact`` band where objects touch: those are object
    pixels, scored as their best object class, not a class the truth never has."""
    truth = np.zeros((64, 64), dtype="uint8")
    truth[8:40, 8:28] = 1  # two touching buildings, rows 8..40, cols 8..48
    truth[8:40, 28:48] = 1
    building = np.where(truth == 1, 230, 5).astype("uint8")
    contact = np.zeros_like(building)
    contact[8:40, 27:29] = 250  # the 2-px band where they touch
    building[8:40, 27:29] = 3
    pred = _write(tmp_path / "scores.tif", np.stack([building, contact]), descriptions=["building", "contact"])
    result = evaluate_pixels(pred, _write(tmp_path / "truth.tif", truth), kind="scores")
    assert result.labels == ["background", "building"]
    assert result.per_class()["building"]["iou"] == pytest.approx(1.0)
